"""The systemd units as data, their ExecStart run from the test venv, and a booted container."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from loadtest.harness.gunicorn import REPO_ROOT, GunicornServer, child_pids
from tests.support.processes import killed_at_exit

SYSTEMD_DIR = REPO_ROOT / "systemd"
SERVICE_UNIT = SYSTEMD_DIR / "feedsvc.service"
SOCKET_UNIT = SYSTEMD_DIR / "feedsvc.socket"
ENV_EXAMPLE = SYSTEMD_DIR / "feedsvc.env.example"
INSTALL_PREFIX = "/opt/feedsvc"
TEST_VENV = Path(sys.executable).parent.parent
CONTAINER_BOOT_DEADLINE_SECONDS = 120.0
CONTAINER_COMMAND_DEADLINE_SECONDS = 900.0


def unit_settings(path: Path, section: str) -> dict[str, list[str]]:
    """Each key of one section with its values in order (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def env_file_assignments(path: Path) -> dict[str, str]:
    """The KEY=value lines of an environment file; commented defaults are not assignments."""
    assignments = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            assignments[key.strip()] = value.strip().strip("\"'")
    return assignments


def mapped_exec_start(runtime_root: Path) -> list[str]:
    """The unit's ExecStart with the install prefix mapped to this checkout and its venv."""
    (command,) = unit_settings(SERVICE_UNIT, "Service")["ExecStart"]
    mapped = (
        command.replace(f"{INSTALL_PREFIX}/venv/", f"{TEST_VENV}/")
        .replace(f"{INSTALL_PREFIX}/config/", f"{REPO_ROOT}/config/")
        .replace("%t", str(runtime_root))
    )
    assert INSTALL_PREFIX not in mapped and "%" not in mapped, mapped
    return shlex.split(mapped)


def exec_reload_signal() -> str:
    """The signal name ExecReload sends to $MAINPID (`/bin/kill -s HUP $MAINPID`)."""
    (command,) = unit_settings(SERVICE_UNIT, "Service")["ExecReload"]
    program, option, name, target = shlex.split(command)
    assert (program, option, target) == ("/bin/kill", "-s", "$MAINPID"), command
    return f"SIG{name}"


class UnitServer(GunicornServer):
    """gunicorn launched with the unit's own ExecStart line and environment."""

    def start_command(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        environ = {key: value for key, value in os.environ.items() if not key.startswith("FEED_")}
        environ.update(env)
        environ["FEED_BIND"] = f"127.0.0.1:{self.port}"
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            argv,
            cwd=env.get("FEED_DATA_DIR", REPO_ROOT),
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def unit_server(tmp_path: Path) -> Iterator[UnitServer]:
    """An unstarted UnitServer, killed at teardown."""
    with killed_at_exit(UnitServer(tmp_path / "gunicorn.log")) as server:
        yield server


class BootedContainer:
    """This host's own OS booted by systemd-nspawn on a throwaway overlay: a real systemd as PID 1.

    Writes land in a tmpfs upper layer that is discarded at teardown; the network is the host's,
    so services in it are reachable on 127.0.0.1 and pip reaches its index.
    """

    def __init__(self, base: Path, name: str) -> None:
        self.base = base
        self.name = name
        self.root = base / "root"
        self._layers = base / "layers"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._log = base / "nspawn.log"

    def boot(self) -> None:
        self.root.mkdir(parents=True)
        self._layers.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(self._layers)], check=True)
        (self._layers / "upper").mkdir()
        (self._layers / "work").mkdir()
        options = f"lowerdir=/,upperdir={self._layers}/upper,workdir={self._layers}/work"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)], check=True
        )
        with self._log.open("wb") as log:
            # basic.target: a booted manager without the host's own daemons (databases, brokers).
            self._nspawn = subprocess.Popen(
                [
                    *("systemd-nspawn", "--quiet", "--directory", str(self.root)),
                    *("--machine", self.name, "--register=no", "--keep-unit"),
                    # The checkout, wherever it is (nspawn hides /tmp under a tmpfs), writable
                    # through a throwaway layer: the installer's pip build writes into it.
                    f"--overlay={REPO_ROOT}::{REPO_ROOT}",
                    *("--boot", "--"),
                    *("systemd.unit=basic.target", "systemd.mask=apt-daily.timer"),
                    "systemd.mask=apt-daily-upgrade.timer",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        give_up = time.monotonic() + CONTAINER_BOOT_DEADLINE_SECONDS
        while time.monotonic() < give_up:
            if self._nspawn.poll() is not None:
                pytest.fail(f"systemd-nspawn exited:\n{self._log.read_text(errors='replace')}")
            if self._init_pid() and self._system_state() in ("running", "degraded"):
                return
            time.sleep(0.5)
        pytest.fail(f"the container did not boot:\n{self._log.read_text(errors='replace')}")

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A shell command inside the container, as root, in all its namespaces."""
        result = subprocess.run(
            ["nsenter", "--target", str(self._init_pid()), "--all", "bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=CONTAINER_COMMAND_DEADLINE_SECONDS,
        )
        if check and result.returncode != 0:
            pytest.fail(f"{command!r} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def copy_in(self, source: Path, target: str) -> None:
        """A host directory into the container at `target` (the host's /tmp is hidden there)."""
        packed = subprocess.run(
            ["tar", "-c", "-C", str(source), "."], capture_output=True, check=True
        ).stdout
        subprocess.run(
            [
                "nsenter",
                "--target",
                str(self._init_pid()),
                "--all",
                "bash",
                "-c",
                f"mkdir -p {shlex.quote(target)} && tar -x -C {shlex.quote(target)}",
            ],
            input=packed,
            capture_output=True,
            check=True,
            timeout=CONTAINER_COMMAND_DEADLINE_SECONDS,
        )

    def shutdown(self) -> None:
        if self._nspawn is not None and self._nspawn.poll() is None:
            self._nspawn.terminate()
            try:
                self._nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._nspawn.kill()
                self._nspawn.wait()
        for mount in (self.root, self._layers):
            with contextlib.suppress(subprocess.CalledProcessError):
                subprocess.run(["umount", "--lazy", str(mount)], check=True, capture_output=True)

    def _init_pid(self) -> int | None:
        """The container's systemd: the child of systemd-nspawn."""
        assert self._nspawn is not None
        children = child_pids(self._nspawn.pid)
        return children[0] if children else None

    def _system_state(self) -> str:
        return self.run("systemctl is-system-running || true").stdout.strip()


def container_unavailable() -> str | None:
    """Why a container cannot boot here, or None when it can."""
    if os.geteuid() != 0:
        return "booting a container needs root"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup installs systemd-container)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem"
    return None


@pytest.fixture(scope="module")
def booted_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedContainer]:
    """A freshly booted copy of this host, discarded after the module's tests."""
    reason = container_unavailable()
    if reason:
        pytest.skip(reason)
    container = BootedContainer(tmp_path_factory.mktemp("container"), f"feedsvc-test-{os.getpid()}")
    try:
        container.boot()
        yield container
    finally:
        container.shutdown()
