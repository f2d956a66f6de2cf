"""The search freshness and write-lock measurements run end to end on tiny settings."""

import subprocess
import sys

import pytest

from loadtest.harness.gunicorn import REPO_ROOT

# They boot gunicorn through the benchmark harness: process tests.
pytestmark = pytest.mark.process


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_freshness_finds_every_probe_and_reports_its_percentiles():
    completed = run(
        "loadtest.freshness", "--rate", "20", "--seconds", "2", "--workers", "1",
        "--posters", "2", "--probes", "5",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "search freshness" in completed.stdout
    assert "0 failed; probes lost (not found within 30 s): 0" in completed.stdout


def test_write_lock_times_the_posts_and_the_relay_per_file():
    completed = run("loadtest.write_lock", "--posts", "50")
    assert completed.returncode == 0, completed.stderr
    rows = {tuple(line.split()[:3]) for line in completed.stdout.splitlines()}
    assert ("feed.db", "request", "cpu") in rows
    assert ("feed-search.db", "relay", "wall") in rows
    assert "process CPU per post" in completed.stdout
