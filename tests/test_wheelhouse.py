"""Installs from a wheelhouse: no index, no compiler, the service serves from what was installed."""

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tests.support.processes import REPO_ROOT, GunicornServer, free_port, killed_at_exit

INSTALL_DEADLINE_S = 600
LOCK = REPO_ROOT / "requirements" / "runtime.txt"


def offline_environ() -> dict[str, str]:
    """pip with no configuration, no find-links and an index that refuses every connection."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "FEED_")) and key != "PYTHONPATH"
    }
    environ["PIP_CONFIG_FILE"] = os.devnull
    environ["PIP_INDEX_URL"] = f"http://127.0.0.1:{free_port()}/simple"
    return environ


def test_the_wheelhouse_pins_every_locked_package_and_feedsvc(wheelhouse: Path) -> None:
    def pins(path: Path) -> set[str]:
        lines = [line.split()[0].lower() for line in path.read_text().splitlines()]
        return {line.replace("_", "-") for line in lines if "==" in line}

    installed = pins(wheelhouse / "requirements.txt")
    assert pins(LOCK) | {"meinheld==1.0.2", f"feedsvc=={version('feedsvc')}"} == installed
    wheels = (wheelhouse / "requirements.txt").read_text().splitlines()[1:]
    assert all(" --hash=sha256:" in line for line in wheels)


def test_an_install_from_the_wheelhouse_with_no_index_serves_ready(
    wheelhouse: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    result = subprocess.run(
        [
            str(REPO_ROOT / "scripts" / "install-wheelhouse"),
            str(venv),
            sys.executable,
            str(wheelhouse),
        ],
        env=offline_environ(),
        capture_output=True,
        text=True,
        timeout=INSTALL_DEADLINE_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The installed package, not this checkout, when run from elsewhere.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import feedsvc, meinheld; print(feedsvc.__file__)"],
        cwd=tmp_path,
        env=offline_environ(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv))

    with killed_at_exit(GunicornServer(tmp_path / "gunicorn.log")) as server:
        server.start(
            {"FEED_WORKER_CLASS": "meinheld"},
            workers=2,
            gunicorn=venv / "bin" / "gunicorn",
            cwd=tmp_path,
        )
        server.wait_ready(workers=2)
        assert server.request("GET", "/ready").json == {"status": "ready"}
        assert server.stop() == 0
