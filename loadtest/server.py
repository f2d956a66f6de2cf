"""Boots a real gunicorn with config/gunicorn.conf.py on a free port, for benchmarks and tuning."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from loadtest.machine import child_pids, process_cpu_seconds

REPO_ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONFIG = Path("config", "gunicorn.conf.py")  # relative to the checkout it boots
HELLO_APP = "loadtest.hello:app"
BOOT_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0

_LISTENING = re.compile(r"Listening at: http://([\d.]+):(\d+)")
_BOOTED = re.compile(r"Booting worker with pid")
_WORKER_CLASS = re.compile(r"Using worker: ([\w.]+)")


def backend_label(database_url: str | None) -> str:
    """Scheme and database name only: a URL's password never reaches the output."""
    if not database_url:
        return "sqlite (embedded)"
    parts = urlsplit(database_url)
    return f"{parts.scheme}:{parts.hostname or ''}{parts.path}"


class ServerError(RuntimeError):
    """gunicorn did not come up; the message carries the tail of its log."""


class GunicornServer:
    """One gunicorn master (app: the feed service unless given) with its own data dir and log.

    `checkout` boots another build of feedsvc (a checkout with its own .venv) instead of this one.
    """

    def __init__(
        self,
        workers: int,
        app: str | None = None,
        env: Mapping[str, str] | None = None,
        checkout: Path | None = None,
    ) -> None:
        self.workers = workers
        self.app = app
        self.extra_env = dict(env or {})
        self.root = checkout or REPO_ROOT
        self.python = str(self.root / ".venv" / "bin" / "python") if checkout else sys.executable
        self.host = "127.0.0.1"
        self.port = 0
        self.worker_class = "?"
        self._directory = Path(tempfile.mkdtemp(prefix="feedsvc-loadtest-"))
        self.log_path = self._directory / "gunicorn.log"
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        """The master's pid (its workers are its children)."""
        assert self._process is not None, "not started"
        return self._process.pid

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FEED_DATA_DIR": str(self._directory / "data"),
                "FEED_WORKERS": str(self.workers),
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(self.root), env.get("PYTHONPATH")])
                ),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> GunicornServer:
        env = self.environment()
        if "FEED_DATABASE_URL" in env and self.app is None:
            # Only the embedded default creates its schema at start-up; other backends need init-db.
            with self.log_path.open("ab") as log:
                subprocess.run(
                    [self.python, "-m", "feedsvc", "init-db"],
                    env=env, cwd=self.root, check=True, stdout=log,
                )  # fmt: skip
        command = [
            self.python, "-m", "gunicorn", "-c", str(self.root / GUNICORN_CONFIG),
            "--bind", f"{self.host}:0", "--no-control-socket",
        ]  # fmt: skip
        if self.app:
            command.append(self.app)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_serving()
        requested = self.extra_env.get("FEED_WORKER_CLASS", "")
        if requested.lower() not in self.worker_class.lower():
            self.stop_with_error(
                f"FEED_WORKER_CLASS={requested} asked for, but gunicorn runs {self.worker_class}"
            )
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def worker_cpu_seconds(self) -> float:
        """User + system CPU of the workers alive now (a recycled worker's time is lost)."""
        assert self._process is not None
        total = 0.0
        for pid in child_pids(self._process.pid):
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(pid)
        return total

    def worker_pids(self) -> list[int]:
        assert self._process is not None
        return child_pids(self._process.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_until_serving(self) -> None:
        """Port from the log, every worker booted, then one HTTP answer: ready for load."""
        assert self._process is not None
        give_up = time.monotonic() + BOOT_TIMEOUT_SECONDS
        while time.monotonic() < give_up:
            if self._process.poll() is not None:
                self.stop_with_error(f"gunicorn exited with {self._process.returncode}")
            log = self.log_path.read_text(errors="replace")
            listening = _LISTENING.search(log)
            if (
                listening
                and len(_BOOTED.findall(log)) >= self.workers
                and self._answers(int(listening.group(2)))
            ):
                self.port = int(listening.group(2))
                worker_class = _WORKER_CLASS.search(log)
                self.worker_class = worker_class.group(1) if worker_class else "?"
                return
            time.sleep(0.1)
        self.stop_with_error(f"gunicorn not serving after {BOOT_TIMEOUT_SECONDS:.0f}s")

    def stop_with_error(self, reason: str) -> NoReturn:
        tail = self.log_tail()
        self.stop()
        raise ServerError(f"{reason}; log tail:\n{tail}")

    def _answers(self, port: int) -> bool:
        connection = http.client.HTTPConnection(self.host, port, timeout=5)
        try:
            connection.request("GET", "/health")
            connection.getresponse().read()
        except OSError:
            return False
        finally:
            connection.close()
        return True
