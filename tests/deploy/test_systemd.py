"""The systemd deployment: units that lint, an ExecStart that serves, HUP reloads, real installs."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from feedsvc.core.config import Config
from loadtest.harness.gunicorn import (
    READY_PATH,
    REPO_ROOT,
    START_DEADLINE_SECONDS,
    child_pids,
    request,
)
from loadtest.harness.ports import free_port
from tests.support.processes import ClientLoop, open_files
from tests.support.systemd import (
    ENV_EXAMPLE,
    INSTALL_PREFIX,
    SERVICE_UNIT,
    SOCKET_UNIT,
    TEST_VENV,
    BootedContainer,
    UnitServer,
    env_file_assignments,
    exec_reload_signal,
    mapped_exec_start,
)

MAX_EXPOSURE = 2.0
SCRIPTS = (
    "install",
    "uninstall",
    "build-venv",
    "build-meinheld",
    "setup",
    "ensure-mariadb",
    "lock",
    "build-wheelhouse",
    "install-wheelhouse",
)
FEED_NAMES = re.compile(r"\bFEED_[A-Z_]+\b")


def needs(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/setup installs it as root)")
    return path


def installed_copy(tmp_path: Path, unit: Path) -> Path:
    """The unit with the install prefix pointing at this venv, so verify finds ExecStart."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(f"{INSTALL_PREFIX}/venv/", f"{TEST_VENV}/"))
    return copy


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    return float(match.group(1))


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    units = [installed_copy(tmp_path, SERVICE_UNIT), installed_copy(tmp_path, SOCKET_UNIT)]
    result = subprocess.run(
        [needs("systemd-analyze"), "verify", *map(str, units)], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    # verify returns 0 on unknown keys and unparsable values; its messages tell.
    assert result.returncode == 0, output
    assert "feedsvc" not in output, output


def test_service_exposure_is_at_most_two(tmp_path: Path) -> None:
    unit = installed_copy(tmp_path, SERVICE_UNIT)
    result = subprocess.run(
        [needs("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    assert exposure(result.stdout + result.stderr) <= MAX_EXPOSURE


def test_env_example_documents_every_setting_once() -> None:
    code = "".join(
        path.read_text()
        for path in [*(REPO_ROOT / "feedsvc").rglob("*.py"), *REPO_ROOT.glob("config/*.py")]
    )
    documented = re.findall(r"^#(FEED_[A-Z_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert set(FEED_NAMES.findall(code)) <= set(documented)


def test_env_example_shows_the_real_defaults() -> None:
    """Uncommenting a documented default must change nothing (the data dir is the unit's own)."""
    shown = dict(re.findall(r"^#(FEED_[A-Z_]+)=(.+)$", ENV_EXAMPLE.read_text(), re.MULTILINE))
    shown.pop("FEED_DATA_DIR")
    assert len(shown) > 10, "the check would prove little"
    assert Config.from_env(shown) == Config.from_env({})


def start_as_the_unit(tmp_path: Path, server: UnitServer) -> Path:
    """Run the unit's ExecStart with the example env and what systemd adds; returns /run/feedsvc."""
    runtime_dir = tmp_path / "run" / "feedsvc"
    data_dir = tmp_path / "lib" / "feedsvc"
    runtime_dir.mkdir(parents=True)
    data_dir.mkdir(parents=True)
    env = {
        **env_file_assignments(ENV_EXAMPLE),
        # What the unit and systemd set: Environment=, RuntimeDirectory=, StateDirectory=.
        "FEED_DATA_DIR": str(data_dir),
        "RUNTIME_DIRECTORY": str(runtime_dir),
        "STATE_DIRECTORY": str(data_dir),
        "FEED_WORKERS": "2",
    }
    server.start_command(mapped_exec_start(runtime_dir.parent), env)
    server.wait_ready(workers=2)
    return runtime_dir


def test_exec_start_serves_with_the_example_env(tmp_path: Path, unit_server: UnitServer) -> None:
    runtime_dir = start_as_the_unit(tmp_path, unit_server)

    assert unit_server.request("GET", READY_PATH).status == 200
    # --worker-tmp-dir: each worker's (unlinked) heartbeat file lives in the runtime directory.
    for worker in unit_server.worker_pids():
        targets = open_files(worker)
        assert any(target.startswith(f"{runtime_dir}/wgunicorn-") for target in targets)
    assert unit_server.stop() == 0


def test_exec_reload_replaces_workers_without_a_failed_request(
    tmp_path: Path, unit_server: UnitServer
) -> None:
    start_as_the_unit(tmp_path, unit_server)
    old_workers = set(unit_server.worker_pids())

    with ClientLoop(unit_server.port) as clients:
        clients.wait_for_successes(50)
        unit_server.signal(signal.Signals[exec_reload_signal()])
        give_up = time.monotonic() + START_DEADLINE_SECONDS
        while set(unit_server.worker_pids()) & old_workers and time.monotonic() < give_up:
            clients.wait_for_successes(1)
        unit_server.wait_ready(workers=2)
        clients.wait_for_successes(50)

    assert clients.failures == []
    assert not set(unit_server.worker_pids()) & old_workers
    assert unit_server.stop() == 0


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script: str) -> None:
    result = subprocess.run(
        [needs("shellcheck"), str(REPO_ROOT / "scripts" / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def installed_pids(container: BootedContainer) -> set[int]:
    main = int(container.run("systemctl show -P MainPID feedsvc.service").stdout)
    return set(child_pids(main))


def test_install_reload_restart_uninstall_on_a_booted_systemd(
    booted_container: BootedContainer,
) -> None:
    """scripts/install for real: packages, user, venv, units, init-db, start; rerun; restart."""
    container = booted_container
    port = free_port()
    # An existing env file is kept: the service listens where it says.
    container.run(
        f"install -d /etc/feedsvc && printf 'FEED_BIND=127.0.0.1:{port}\\nFEED_WORKERS=2\\n'"
        " > /etc/feedsvc/feedsvc.env"
    )
    install = f"FEEDSVC_READY_PATH={READY_PATH} {REPO_ROOT}/scripts/install"
    container.run(install)

    assert container.run("systemctl is-enabled feedsvc.service feedsvc.socket").stdout.split() == [
        "enabled",
        "enabled",
    ]
    assert container.run("systemctl is-active feedsvc.service").stdout.strip() == "active"
    assert container.run("id -u feedsvc").returncode == 0
    assert container.run("stat -c '%U:%G %a' /etc/feedsvc/feedsvc.env").stdout.split() == [
        "root:feedsvc",
        "640",
    ]
    assert f"127.0.0.1:{port}" in container.run("cat /etc/feedsvc/feedsvc.env").stdout
    # nginx answers at FEED_BIND; gunicorn listens on a unix socket only nginx's group may use.
    assert container.run("systemctl is-active nginx.service").stdout.strip() == "active"
    assert container.run("stat -c '%U:%G %a' /run/feedsvc.sock").stdout.split() == [
        "root:www-data",
        "660",
    ]
    through_nginx = request(port, "GET", READY_PATH)
    assert (through_nginx.status, through_nginx.headers["Server"]) == (200, "nginx")
    refused = request(port, "GET", READY_PATH, headers={"Upgrade": "h2c"})
    assert (refused.status, refused.headers["Content-Type"]) == (400, "application/json")
    assert container.run("stat -c %U /var/lib/feedsvc/feed.db").stdout.strip() == "feedsvc"
    live = container.run("systemd-analyze security --no-pager feedsvc.service")
    assert exposure(live.stdout) <= MAX_EXPOSURE

    # A second run upgrades in place and reloads (HUP): new workers, no failed request.
    workers = installed_pids(container)
    with ClientLoop(port) as clients:
        clients.wait_for_successes(50)
        container.run(install)
        clients.wait_for_successes(50)
    assert clients.failures == []
    assert not installed_pids(container) & workers

    # systemd holds the socket, so even a full restart refuses no connection.
    with ClientLoop(port) as clients:
        clients.wait_for_successes(50)
        container.run("systemctl restart feedsvc.service")
        clients.wait_for_successes(50)
    assert clients.failures == []

    container.run(f"{REPO_ROOT}/scripts/uninstall")
    container.run("test -e /var/lib/feedsvc/feed.db && test -e /etc/feedsvc/feedsvc.env")
    assert container.run("test -e /etc/nginx/conf.d/feedsvc.conf", check=False).returncode != 0
    assert container.run(f"test -e {INSTALL_PREFIX}", check=False).returncode != 0
    assert container.run("systemctl is-active feedsvc.socket", check=False).returncode != 0
    container.run(f"{REPO_ROOT}/scripts/uninstall --purge")
    assert container.run("test -e /var/lib/feedsvc || id feedsvc", check=False).returncode != 0
