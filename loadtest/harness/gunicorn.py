"""A real gunicorn running config/gunicorn.conf.py on a free port: the run path, signalled as in
production, for the process tests and every benchmark."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import orjson

from feedsvc.adapters.kafka.perf_supervisor import PUBLISHER_MODULE
from loadtest.harness.ports import free_port
from loadtest.machine import process_cpu_seconds

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
FEEDSVC = Path(sys.executable).parent / "feedsvc"
# Relative to the checkout it boots: this one, or another build's (loadtest.bench --baseline).
CONFIG_IN_CHECKOUT = Path("config", "gunicorn.conf.py")
GUNICORN_CONFIG = REPO_ROOT / CONFIG_IN_CHECKOUT
# The benchmark ceiling: the least a WSGI app can do per request under the same gunicorn config.
HELLO_APP = "loadtest.hello:app"
READY_PATH = "/ready"
START_DEADLINE_SECONDS = 90.0
STOP_DEADLINE_SECONDS = 60.0
_WORKER_CLASS = re.compile(r"Using worker: ([\w.]+)")


class ServerError(RuntimeError):
    """A server did not come up or go down as asked; the message carries the tail of its log."""


def backend_label(database_url: str | None) -> str:
    """Scheme and database name only: a URL's password never reaches the output."""
    if not database_url:
        return "sqlite (embedded)"
    parts = urlsplit(database_url)
    return f"{parts.scheme}:{parts.hostname or ''}{parts.path}"


def runs_perf_publisher(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return PUBLISHER_MODULE.encode() in cmdline


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
    """One gunicorn master running config/gunicorn.conf.py on a free port, with its workers.

    With a `log_path` its data directory is beside the log and both stay for the caller to read;
    without one it works in a temporary directory of its own, removed when it stops.
    """

    def __init__(self, log_path: Path | None = None) -> None:
        self._scratch = None if log_path else Path(tempfile.mkdtemp(prefix="feedsvc-gunicorn-"))
        self.log_path = log_path or self._scratch / "gunicorn.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        """FEED_DATA_DIR unless the caller gave another one."""
        return self.log_path.parent / "data"

    @property
    def pid(self) -> int:
        """The master's pid."""
        assert self._process is not None, "server not started"
        return self._process.pid

    @property
    def worker_class(self) -> str:
        """The worker class gunicorn says it runs ("?" before it said)."""
        found = _WORKER_CLASS.search(self.log())
        return found.group(1) if found else "?"

    def start(
        self,
        env: Mapping[str, str],
        workers: int = 2,
        app: str | None = None,
        fd_limit: int | None = None,
        gunicorn: Path = GUNICORN,
        cwd: Path = REPO_ROOT,
        inherit_settings: bool = False,
        config: Path = GUNICORN_CONFIG,
    ) -> None:
        """Launch gunicorn as production does, with `env` over this process's environment.

        FEED_* variables of this process are left out unless `inherit_settings` (a benchmark
        honours its operator's); `app` replaces the config's wsgi_app (the hello ceiling, a
        test-only app); `fd_limit` is the processes' RLIMIT_NOFILE, as systemd's LimitNOFILE=
        would set it; `gunicorn`, `cwd` and `config` run another installation than this
        checkout's.
        """
        environ = {
            key: value
            for key, value in os.environ.items()
            # RUNTIME_DIRECTORY (systemd) would give every instance the same control socket.
            if (inherit_settings or not key.startswith("FEED_")) and key != "RUNTIME_DIRECTORY"
        }
        environ.update(env)
        # Its own data (and metrics) directory unless the caller gives one.
        environ.setdefault("FEED_DATA_DIR", str(self.data_dir))
        environ["FEED_WORKERS"] = str(workers)
        environ["FEED_BIND"] = f"{self.host}:{self.port}"
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [str(gunicorn), "--config", str(config), *([app] if app else [])],
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if fd_limit is None else lambda: _limit_fds(fd_limit),
        )

    def wait_ready(self, workers: int = 2, deadline: float = START_DEADLINE_SECONDS) -> None:
        """Block until the service answers and `workers` workers run; raise if gunicorn exits."""
        give_up = time.monotonic() + deadline
        while time.monotonic() < give_up:
            assert self._process is not None, "server not started"
            if self._process.poll() is not None:
                raise ServerError(f"gunicorn exited with {self._process.returncode}:\n{self.log()}")
            if self._answers() and len(self.worker_pids()) == workers:
                return
            time.sleep(0.1)
        raise ServerError(f"gunicorn not ready after {deadline} s:\n{self.log()}")

    def serve(
        self,
        env: Mapping[str, str],
        workers: int,
        app: str | None = None,
        checkout: Path | None = None,
    ) -> GunicornServer:
        """A benchmark's server: the schema made (the embedded default makes its own), started,
        ready, on the worker class asked for; stopped again if any of that fails. `checkout`
        boots another build of feedsvc (a checkout with its own .venv) instead of this one."""
        root = checkout or REPO_ROOT
        bin_dir = root / ".venv" / "bin" if checkout else GUNICORN.parent
        try:
            environ = {**os.environ, **env}
            if environ.get("FEED_DATABASE_URL") and app is None:
                with self.log_path.open("ab") as log:
                    subprocess.run(
                        [str(bin_dir / "python"), "-m", "feedsvc", "init-db"],
                        env=environ, cwd=root, check=True, stdout=log,
                    )  # fmt: skip
            self.start(
                env,
                workers,
                app,
                gunicorn=bin_dir / "gunicorn",
                cwd=root,
                inherit_settings=True,
                config=root / CONFIG_IN_CHECKOUT,
            )
            self.wait_ready(workers)
            requested = environ.get("FEED_WORKER_CLASS", "")
            if requested.lower() not in self.worker_class.lower():
                raise ServerError(
                    f"FEED_WORKER_CLASS={requested} asked for, but gunicorn runs "
                    f"{self.worker_class}"
                )
        except BaseException as error:
            tail = self.log_tail()
            self.stop()
            if isinstance(error, subprocess.CalledProcessError):
                raise ServerError(f"feedsvc init-db failed; log tail:\n{tail}") from error
            raise
        return self

    def __enter__(self) -> GunicornServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def worker_pids(self) -> list[int]:
        return [pid for pid in child_pids(self.pid) if not runs_perf_publisher(pid)]

    def publisher_pids(self) -> list[int]:
        """The master's perf publisher (two for a moment while a HUP replaces it)."""
        return [pid for pid in child_pids(self.pid) if runs_perf_publisher(pid)]

    def worker_cpu_seconds(self) -> float:
        """User + system CPU of the workers alive now (a recycled worker's time is lost)."""
        total = 0.0
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(pid)
        return total

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        return request(self.port, method, path, body, headers)

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def signal_worker(self, worker: int, signum: signal.Signals) -> None:
        assert worker in self.worker_pids(), f"{worker} is not one of this master's workers"
        os.kill(worker, signum)

    def stop(self, deadline: float = STOP_DEADLINE_SECONDS) -> int | None:
        """Graceful shutdown with SIGTERM; returns gunicorn's exit code (None: never started).
        One that ignores SIGTERM past the deadline is killed, and that is a ServerError."""
        try:
            if self._process is None:
                return None
            if self._process.poll() is None:
                self.signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout=deadline)
                except subprocess.TimeoutExpired:
                    self.kill()
                    raise ServerError(
                        f"gunicorn ignored SIGTERM for {deadline} s:\n{self.log()}"
                    ) from None
            return self._process.returncode
        finally:
            self._close_log()
            exited = self._process is None or self._process.poll() is not None
            if self._scratch is not None and exited:
                shutil.rmtree(self._scratch, ignore_errors=True)

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

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

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
