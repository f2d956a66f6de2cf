"""On a booted systemd: scripts/install --wheelhouse with no index, and journald's rate limit
under a burst, which drops error lines with FEED_ACCESS_LOG=all but not with =errors."""

from __future__ import annotations

import http.client
from pathlib import Path

from loadtest.harness.gunicorn import REPO_ROOT
from loadtest.harness.ports import free_port
from tests.support.systemd import BootedContainer

CONTAINER_WHEELHOUSE = "/var/tmp/feedsvc-wheelhouse"
# The test lowers the unit's limit so a burst a test can afford exceeds it (journald scales the
# burst up with free disk space, about 4x here).
TEST_RATE_LIMIT = "[Service]\nLogRateLimitIntervalSec=120s\nLogRateLimitBurst=100\n"
BURST = 3000
FAILED_EVERY = 150


def burst(port: int, tag: str) -> list[str]:
    """BURST requests on one keep-alive connection; every FAILED_EVERY-th is a 404. Returns the
    request ids of the failed ones."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    failed = []
    try:
        for number in range(BURST):
            request_id = f"{tag}-{number}"
            path = "/health"
            if number % FAILED_EVERY == FAILED_EVERY - 1:
                path = f"/participant/{900000 + number}"
                failed.append(request_id)
            connection.request("GET", path, headers={"X-Request-ID": request_id})
            response = connection.getresponse()
            response.read()
            assert response.status == (404 if path != "/health" else 200)
    finally:
        connection.close()
    return failed


def journal(container: BootedContainer) -> str:
    container.run("journalctl --sync", check=False)
    return container.run("journalctl -u feedsvc.service -o cat --no-pager").stdout


def restart_with(container: BootedContainer, access_log: str, port: int) -> None:
    container.run(
        f"printf 'FEED_BIND=127.0.0.1:{port}\\nFEED_WORKERS=2\\nFEED_ACCESS_LOG={access_log}\\n'"
        " > /etc/feedsvc/feedsvc.env && systemctl restart feedsvc.service"
    )
    container.run(
        f"for i in $(seq 120); do curl -fs http://127.0.0.1:{port}/ready && exit 0; sleep 0.5;"
        " done; exit 1"
    )


def test_wheelhouse_install_offline_and_error_lines_survive_a_burst(
    booted_container: BootedContainer, wheelhouse: Path
) -> None:
    container = booted_container
    container.copy_in(wheelhouse, CONTAINER_WHEELHOUSE)
    port = free_port()
    container.run(
        f"install -d /etc/feedsvc && printf 'FEED_BIND=127.0.0.1:{port}\\nFEED_WORKERS=2\\n'"
        " > /etc/feedsvc/feedsvc.env"
    )
    # No pip configuration, no find-links, and an index that refuses every connection.
    index = f"http://127.0.0.1:{free_port()}/simple"
    offline = f"env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null PIP_INDEX_URL={index}"
    container.run(f"{offline} {REPO_ROOT}/scripts/install --wheelhouse {CONTAINER_WHEELHOUSE}")
    assert container.run("/opt/feedsvc/venv/bin/feedsvc --version").stdout.startswith("feedsvc ")
    unit_limit = container.run("systemctl show -P LogRateLimitBurst feedsvc.service").stdout
    assert unit_limit.strip() == "25000"

    container.run(
        "mkdir -p /etc/systemd/system/feedsvc.service.d && printf "
        f"'{TEST_RATE_LIMIT}' > /etc/systemd/system/feedsvc.service.d/test-rate-limit.conf"
        " && systemctl daemon-reload"
    )
    # Only failed requests logged: every one of them reaches the journal.
    restart_with(container, "errors", port)
    kept = burst(port, "errors")
    logged = journal(container)
    assert [request_id for request_id in kept if f'"{request_id}"' not in logged] == []

    # The same burst with every request logged: journald drops lines, failed ones included.
    restart_with(container, "all", port)
    dropped = burst(port, "all")
    logged = journal(container)
    assert [request_id for request_id in dropped if f'"{request_id}"' not in logged] != []

    container.run(f"{REPO_ROOT}/scripts/uninstall --purge")
