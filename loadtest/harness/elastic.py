"""An Elasticsearch-API stand-in (noida-db) on a free port with its data in a directory of its
own: stop() and start() again keep the data, as a restarted cluster does."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

from loadtest.harness.ports import free_port
from loadtest.harness.process import stop_process

START_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0


def noida_binary() -> Path:
    import noida_db  # the wheel ships the server binary next to its Python launcher

    return Path(noida_db.__file__).parent / "noida-db"


class ElasticServer:
    """One noida-db process serving only the Elasticsearch API; stop() and start() keep the data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 -- closed in stop()
        command = [
            str(noida_binary()),
            "start",
            "--data-dir",
            str(self.data_dir / "data"),
            "--only",
            "elasticsearch",
            "--elasticsearch-port",
            str(self.port),
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"noida-db exited with {self._process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"noida-db did not answer on {self.url}: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            stop_process(self._process, signal.SIGINT, STOP_DEADLINE_SECONDS)
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False
