"""One wheelhouse per test session, built by scripts/build-wheelhouse (minutes: it compiles)."""

import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.harness.gunicorn import REPO_ROOT

# Downloads plus two C builds (mysqlclient, meinheld) on a contended machine: bounded, generously.
BUILD_DEADLINE_S = 900


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-wheelhouse"), str(directory), sys.executable],
        capture_output=True,
        text=True,
        timeout=BUILD_DEADLINE_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return directory
