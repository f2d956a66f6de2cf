"""Installs from a wheelhouse: no index, no compiler, the service serves from what was installed."""

import configparser
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from loadtest.harness.gunicorn import REPO_ROOT, GunicornServer
from loadtest.harness.ports import free_port
from tests.support.processes import killed_at_exit

INSTALL_DEADLINE_S = 600
LOCK = REPO_ROOT / "requirements" / "runtime.txt"
LOCKED_EXTRAS = ("mysql", "elasticsearch", "kafka")


def pinned(requirements: Path) -> dict[str, str]:
    """{package: version} of a requirements file of NAME==VERSION pins."""
    pins = [line.split()[0] for line in requirements.read_text().splitlines() if "==" in line]
    return {canonicalize_name(pin.split("==")[0]): pin.split("==")[1] for pin in pins}


def test_the_lock_satisfies_every_runtime_requirement_of_setup_cfg() -> None:
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    lines = setup["options"]["install_requires"].split("\n")
    lines += [
        line
        for extra in LOCKED_EXTRAS
        for line in setup["options.extras_require"][extra].split("\n")
    ]
    locked = pinned(LOCK)
    for requirement in (Requirement(line) for line in lines if line.strip()):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in {LOCK.name}: run scripts/lock"
        assert requirement.specifier.contains(locked[name]), f"{name}=={locked[name]}: scripts/lock"
    assert all(
        line.strip().startswith(("--hash=", "#")) or "==" in line or not line.strip()
        for line in LOCK.read_text().splitlines()
    )


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
    built = pinned(wheelhouse / "requirements.txt")
    assert built == {**pinned(LOCK), "meinheld": "1.0.2", "feedsvc": version("feedsvc")}
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
