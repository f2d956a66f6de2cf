"""Shared pytest wiring: each backing service's fixtures live in tests/support/<service>.py, and
each test directory is a marker, so groups run alone (`-m "not process and not deploy"`)."""

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the directories it lives in (pyproject.toml registers them), and any
    test that starts gunicorn through the gunicorn_server fixture as `process` wherever it is."""
    for item in items:
        for directory in item.path.relative_to(TESTS_DIR).parts[:-1]:
            item.add_marker(directory)
        if "gunicorn_server" in getattr(item, "fixturenames", ()):
            item.add_marker("process")
