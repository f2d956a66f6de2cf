"""Shared pytest wiring: each backing service's fixtures live in tests/support/<service>.py, and
each test directory is a marker, so groups run alone (`-m "not process and not deploy"`)."""

import os
import resource
from pathlib import Path

import pytest

pytest_plugins: list[str] = [
    "tests.support.api",
    "tests.support.processes",
    "tests.support.mysql",
    "tests.support.elastic",
    "tests.support.kafka",
    "tests.support.systemd",
    "tests.support.tmpfs",
    "tests.support.wheelhouse",
]

TESTS_DIR = Path(__file__).parent
# Descriptors held open for the whole run, so that every socket and file a test opens is numbered
# above 1024, which select() cannot watch (ValueError). Late in a full run this process held that
# many anyway, but only when the garbage collector had not yet freed dropped services: code that
# select()ed failed in some runs. Now it fails in every run.
HELD_DESCRIPTORS = 1100
_held: list[int] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = HELD_DESCRIPTORS + 4096
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            return  # a low hard limit: the run goes on with the descriptors it has
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    _held.extend(os.open(os.devnull, os.O_RDONLY) for _ in range(HELD_DESCRIPTORS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the directories it lives in (pyproject.toml registers them), and any
    test that starts gunicorn through the gunicorn_server fixture as `process` wherever it is."""
    for item in items:
        for directory in item.path.relative_to(TESTS_DIR).parts[:-1]:
            item.add_marker(directory)
        if "gunicorn_server" in getattr(item, "fixturenames", ()):
            item.add_marker("process")
