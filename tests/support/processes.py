"""Real gunicorn processes for tests: the run path on a free port, signalled as in production."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson
import pytest

from tests.support.worker_app import WORKER_PID_HEADER

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
GUNICORN_CONFIG = REPO_ROOT / "config" / "gunicorn.conf.py"
READY_PATH = "/ready"
# The real service plus test-only extras (worker pid header, slow route): support/worker_app.py.
WORKER_APP = "tests.support.worker_app:get_app()"
START_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 60.0
# The master's child that is not a worker: the perf publisher (feedsvc.kafka.perf_supervisor).
PERF_PUBLISHER_MODULE = b"feedsvc.kafka.perf_publisher"
Server = TypeVar("Server", bound="GunicornServer")


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def runs_perf_publisher(pid: int) -> bool:
    try:
        return PERF_PUBLISHER_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def child_pids(parent: int) -> list[int]:
    """Pids of the live processes whose parent is `parent`, read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            children.append(int(entry.name))
    return sorted(children)


class HttpResponse:
    """Status, headers and decoded JSON body of one request to a running server."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def open_files(pid: int) -> list[str]:
    """What a process's descriptors point at; one it closes while we look is left out."""
    targets = []
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            targets.append(str(descriptor.readlink()))
    return targets


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """One HTTP request to 127.0.0.1 on a fresh connection; a body is sent as JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return HttpResponse(response.status, response.headers, response.read())
    finally:
        connection.close()


class GunicornServer:
    """One gunicorn master running config/gunicorn.conf.py on a free port, with its workers."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """FEED_DATA_DIR unless the test gave another one."""
        return self.log_path.parent / "data"

    @property
    def pid(self) -> int:
        """The master's pid."""
        assert self._process is not None, "server not started"
        return self._process.pid

    def start(
        self,
        env: Mapping[str, str],
        workers: int = 2,
        app: str | None = None,
        fd_limit: int | None = None,
        gunicorn: Path = GUNICORN,
        cwd: Path = REPO_ROOT,
    ) -> None:
        """Launch gunicorn as production does; inherited FEED_* variables never leak in.

        `app` replaces the config's wsgi_app (a test-only app such as WORKER_APP); `fd_limit` is
        the processes' RLIMIT_NOFILE, as systemd's LimitNOFILE= would set it; `gunicorn` and
        `cwd` run another installation than this checkout's.
        """
        environ = {
            key: value
            for key, value in os.environ.items()
            # RUNTIME_DIRECTORY (systemd) would give every instance the same control socket.
            if not key.startswith("FEED_") and key != "RUNTIME_DIRECTORY"
        }
        environ.update(env)
        # Its own data (and metrics) directory unless the test gives one.
        environ.setdefault("FEED_DATA_DIR", str(self.data_dir))
        environ["FEED_WORKERS"] = str(workers)
        environ["FEED_BIND"] = f"127.0.0.1:{self.port}"
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [str(gunicorn), "--config", str(GUNICORN_CONFIG), *([app] if app else [])],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if fd_limit is None else lambda: _limit_fds(fd_limit),
        )

    def wait_ready(self, workers: int = 2, deadline: float = START_DEADLINE_SECONDS) -> None:
        """Block until the service answers and `workers` workers run; fail if gunicorn exits."""
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            assert self._process is not None, "server not started"
            if self._process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self._process.returncode}:\n{self.log()}")
            if self._answers() and len(self.worker_pids()) == workers:
                return
            time.sleep(0.1)
        pytest.fail(f"gunicorn not ready after {deadline} s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        return [pid for pid in child_pids(self.pid) if not runs_perf_publisher(pid)]

    def publisher_pids(self) -> list[int]:
        """The master's perf publisher (two for a moment while a HUP replaces it)."""
        return [pid for pid in child_pids(self.pid) if runs_perf_publisher(pid)]

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        return request(self.port, method, path, body, headers)

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def signal_worker(self, worker: int, signum: signal.Signals) -> None:
        assert worker in self.worker_pids(), f"{worker} is not one of this master's workers"
        os.kill(worker, signum)

    def stop(self, deadline: float = STOP_DEADLINE_SECONDS) -> int:
        """Graceful shutdown with SIGTERM; returns gunicorn's exit code (killed if it hangs)."""
        assert self._process is not None, "server not started"
        if self._process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"gunicorn ignored SIGTERM for {deadline} s:\n{self.log()}")
        self._close_log()
        return self._process.returncode

    def kill(self) -> None:
        """Last-resort cleanup: SIGKILL the master and any children (workers, publisher) it left."""
        if self._process is None or self._process.poll() is not None:
            self._close_log()
            return
        workers = child_pids(self.pid)
        self._process.kill()
        self._process.wait()
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        self._close_log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _answers(self) -> bool:
        try:
            return self.request("GET", READY_PATH).status == 200
        except OSError:
            return False

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _limit_fds(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


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
            if reusing and select.select([connection.sock], [], [], 0)[0]:
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
