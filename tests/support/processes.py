"""Real gunicorn processes in tests: the harness's server as a fixture, and clients that count
every failed request while the processes are signalled."""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from loadtest.harness.gunicorn import (
    READY_PATH,
    START_DEADLINE_SECONDS,
    STOP_DEADLINE_SECONDS,
    GunicornServer,
    HttpResponse,
    request,
)
from tests.support.worker_app import WORKER_PID_HEADER

# The real service plus test-only extras (worker pid header, slow route): support/worker_app.py.
WORKER_APP = "tests.support.worker_app:get_app()"
Server = TypeVar("Server", bound=GunicornServer)


def readable_now(sock: socket.socket) -> bool:
    """Whether the socket has something to read (or its peer closed it), without waiting; poll(),
    not select(): late in a full run this process holds descriptors above select()'s 1024."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def open_files(pid: int) -> list[str]:
    """What a process's descriptors point at; one it closes while we look is left out."""
    targets = []
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            targets.append(str(descriptor.readlink()))
    return targets


class ClientLoop:
    """Client threads sending requests until stopped, tallying outcomes. Each request goes on a
    fresh connection, or with `reuse_connections` on the thread's kept-alive one, which is checked
    before reuse (as urllib3 does) and never resent: any request sent and not answered fails."""

    def __init__(
        self,
        port: int,
        path: str = READY_PATH,
        clients: int = 4,
        reuse_connections: bool = False,
    ) -> None:
        self._port = port
        self._path = path
        self._reuse_connections = reuse_connections
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.served_by: set[str] = set()
        self.successes = 0
        self.reused = 0
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(STOP_DEADLINE_SECONDS)

    def wait_for_successes(self, count: int, deadline: float = START_DEADLINE_SECONDS) -> None:
        """Block until `count` more requests succeeded than now; fail past the deadline."""
        target = self.successes + count
        give_up = time.monotonic() + deadline
        while self.successes < target:
            if time.monotonic() > give_up:
                pytest.fail(f"only {self.successes}/{target} successes: {self.failures[:5]}")
            time.sleep(0.05)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
        while not self._stopping.is_set():
            reusing = self._reuse_connections and connection.sock is not None
            if reusing and readable_now(connection.sock):
                # Readable while idle: the server closed it. A new connection, nothing resent.
                connection.close()
                reusing = False
            try:
                if self._reuse_connections:
                    connection.request("GET", self._path)
                    answer = connection.getresponse()
                    response = HttpResponse(answer.status, answer.headers, answer.read())
                else:
                    response = request(self._port, "GET", self._path)
                outcome = None if response.status == 200 else f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                response = None
                outcome = f"{'reused' if reusing else 'new'} connection: {error!r}"
            with self._lock:
                if outcome is None and response is not None:
                    self.successes += 1
                    self.reused += reusing
                    self.served_by.add(response.headers.get(WORKER_PID_HEADER, "?"))
                else:
                    self.failures.append(outcome or "?")
        connection.close()


@contextlib.contextmanager
def killed_at_exit(server: Server) -> Iterator[Server]:
    """The server, killed when the block ends, whatever the test did."""
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[GunicornServer]:
    """An unstarted GunicornServer, killed at teardown."""
    with killed_at_exit(GunicornServer(tmp_path / "gunicorn.log")) as server:
        yield server
