"""nginx running config/nginx/feedsvc.conf in a private prefix, in front of a gunicorn address.

As scripts/install renders it, but every path (pid, logs, temp files) in a throwaway directory and
the listener on a free loopback port, so benchmarks and tests need no root and touch no /etc.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from feedsvc.compose import nginx
from feedsvc.core.config import Config
from loadtest.harness.gunicorn import (
    REPO_ROOT,
    START_DEADLINE_SECONDS,
    STOP_DEADLINE_SECONDS,
    ServerError,
)
from loadtest.harness.ports import free_port
from loadtest.harness.process import stop_process

NGINX_TEMPLATE = REPO_ROOT / "config" / "nginx" / "feedsvc.conf"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx() -> str | None:
    """nginx's path (Debian keeps it in /usr/sbin, often outside a user's PATH), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def main_config(prefix: Path, site: Path) -> str:
    """A whole nginx.conf around the http-level site file, every path inside `prefix`."""
    # As root, workers would switch to `nobody`, which cannot enter a private temp directory.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(f"    {name}_temp_path {prefix}/{name};\n" for name in TEMP_PATHS)
    return (
        f"daemon off;\n{user}worker_processes 2;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n{temp_paths}    include {site};\n}}\n"
    )


def check_config(binary: str, prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a config: exit status and nginx's own verdict."""
    return subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )


class NginxServer:
    """nginx on a free loopback port in front of `upstream` (host:port or unix:/path)."""

    def __init__(self, prefix: Path, upstream: str, connections_per_client: int = 64) -> None:
        self.prefix = prefix
        self.host = "127.0.0.1"
        self.port = free_port()
        self.upstream = upstream
        self.connections_per_client = connections_per_client
        self.conf = prefix / "nginx.conf"
        self.access_log = prefix / "access.log"
        self.extra_dir = prefix / "extra"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The master's pid (its workers are its children)."""
        assert self._process is not None, "not started"
        return self._process.pid

    def write_config(self, env: Mapping[str, str]) -> None:
        """Render the site from these FEED_* settings, as scripts/install does."""
        self.extra_dir.mkdir(parents=True, exist_ok=True)
        config = Config.from_env({**env, "FEED_BIND": f"{self.host}:{self.port}"})
        site = self.prefix / "feedsvc.conf"
        site.write_text(
            nginx.render(
                NGINX_TEMPLATE.read_text(),
                config,
                upstream=self.upstream,
                access_log=str(self.access_log),
                extra_dir=str(self.extra_dir),
                connections_per_client=self.connections_per_client,
            )
        )
        self.conf.write_text(main_config(self.prefix, site))

    def start(self, env: Mapping[str, str]) -> None:
        """Render, check (nginx -t), start and wait until /health answers through it."""
        binary = find_nginx()
        if binary is None:
            raise ServerError("nginx is not installed (scripts/setup installs it as root)")
        self.write_config(env)
        checked = check_config(binary, self.prefix, self.conf)
        if checked.returncode != 0:
            raise ServerError(f"nginx -t refused the config:\n{checked.stderr}")
        with (self.prefix / "nginx.out").open("ab") as out:
            self._process = subprocess.Popen(
                [binary, "-p", str(self.prefix), "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        give_up = time.monotonic() + START_DEADLINE_SECONDS
        while time.monotonic() < give_up:
            if self._process.poll() is not None:
                raise ServerError(f"nginx exited with {self._process.returncode}:\n{self.log()}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise ServerError(
            f"nginx not answering after {START_DEADLINE_SECONDS:.0f} s:\n{self.log()}"
        )

    def stop(self) -> None:
        """Graceful stop (QUIT), then a kill when nginx lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        stop_process(process, signal.SIGQUIT, STOP_DEADLINE_SECONDS)

    def log(self) -> str:
        error_log = self.prefix / "error.log"
        return error_log.read_text(errors="replace") if error_log.exists() else ""

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
        with contextlib.suppress(OSError):
            try:
                connection.request("GET", "/health")
                connection.getresponse().read()
                return True
            finally:
                connection.close()
        return False
