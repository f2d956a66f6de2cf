"""Reused keep-alive connections across reloads, recycling and stalls: no request may fail.

The client here is the careful kind that never resends: it reuses each connection, checks before
reuse that the server has not closed it (as urllib3 does), and counts every request that was sent
and got no complete 200 as a failure.
"""

from __future__ import annotations

import http.client
import select
import signal
import threading
import time

import pytest

from tests.support.processes import START_DEADLINE_SECONDS, WORKER_APP, GunicornServer
from tests.support.worker_app import SLEEP_PATH

WORKER_CLASSES = ["meinheld", "gthread"]
CLIENTS = 6


class KeepAliveClients:
    """Threads sending GET /ready back to back, each on one reused connection, never resending."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.successes = 0
        self.reused = 0
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> KeepAliveClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(START_DEADLINE_SECONDS)

    def wait_for_successes(self, count: int) -> None:
        target = self.successes + count
        give_up = time.monotonic() + START_DEADLINE_SECONDS
        while self.successes < target:
            assert time.monotonic() < give_up, f"{self.successes}/{target}: {self.failures[:5]}"
            time.sleep(0.05)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
        while not self._stopping.is_set():
            reusing = connection.sock is not None
            if reusing and select.select([connection.sock], [], [], 0)[0]:
                # Readable while idle: the server closed it. A new connection, nothing resent.
                connection.close()
                reusing = False
            try:
                connection.request("GET", "/ready")
                response = connection.getresponse()
                response.read()
                outcome = None if response.status == 200 else f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as error:
                outcome = f"{'reused' if reusing else 'new'} connection: {error!r}"
                connection.close()
            with self._lock:
                if outcome is None:
                    self.successes += 1
                    self.reused += reusing
                else:
                    self.failures.append(outcome)
        connection.close()


def start(server: GunicornServer, worker_class: str, workers: int, **env: str) -> None:
    server.start({"FEED_WORKER_CLASS": worker_class, **env}, workers=workers, app=WORKER_APP)
    server.wait_ready(workers=workers)


def wait_for(condition, what: str) -> None:
    give_up = time.monotonic() + START_DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < give_up, f"{what} did not happen"
        time.sleep(0.1)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_hup_fails_no_request_on_reused_connections(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=2)
    with KeepAliveClients(gunicorn_server.port) as clients:
        for _ in range(3):
            old_workers = set(gunicorn_server.worker_pids())
            clients.wait_for_successes(100)
            gunicorn_server.signal(signal.SIGHUP)
            wait_for(
                lambda old=old_workers: set(gunicorn_server.worker_pids()).isdisjoint(old)
                and len(gunicorn_server.worker_pids()) == 2,
                "replacing every worker",
            )
        clients.wait_for_successes(100)
    assert clients.failures == []
    assert clients.reused > clients.successes / 2
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_ttou_fails_no_request_on_reused_connections(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=3)
    with KeepAliveClients(gunicorn_server.port) as clients:
        for remaining in (2, 1):
            clients.wait_for_successes(100)
            gunicorn_server.signal(signal.SIGTTOU)
            wait_for(lambda n=remaining: len(gunicorn_server.worker_pids()) == n, "a worker less")
        clients.wait_for_successes(100)
    assert clients.failures == []
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_recycling_fails_no_request_on_reused_connections(gunicorn_server, worker_class):
    recycling = {"FEED_MAX_REQUESTS": "150", "FEED_MAX_REQUESTS_JITTER": "0"}
    start(gunicorn_server, worker_class, workers=1, **recycling)
    with KeepAliveClients(gunicorn_server.port) as clients:
        for _ in range(3):
            (worker,) = gunicorn_server.worker_pids()
            wait_for(lambda w=worker: gunicorn_server.worker_pids() not in ([], [w]), "recycling")
        clients.wait_for_successes(100)
    assert clients.failures == []
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_request_stalled_past_keepalive_resets_no_other_connection(
    gunicorn_server, worker_class
):
    start(gunicorn_server, worker_class, workers=1, FEED_KEEPALIVE="1")
    with KeepAliveClients(gunicorn_server.port) as clients:
        clients.wait_for_successes(100)
        for _ in range(2):
            stalled = gunicorn_server.request("GET", f"{SLEEP_PATH}?seconds=3")
            assert stalled.status == 200
            clients.wait_for_successes(100)
    assert clients.failures == []
    assert gunicorn_server.stop() == 0
