"""A real nginx running the repo's config/nginx/feedsvc.conf, unprivileged-style, in a temp dir."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from feedsvc import nginx
from feedsvc.config import Config
from tests.support.processes import (
    START_DEADLINE_SECONDS,
    STOP_DEADLINE_SECONDS,
    HttpResponse,
    free_port,
    request,
)

NGINX_TEMPLATE = Path(__file__).resolve().parents[2] / "config" / "nginx" / "feedsvc.conf"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str:
    """nginx's path; CI must have it (scripts/setup installs it), elsewhere the test skips."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("nginx required in CI (scripts/setup installs it)", pytrace=False)
        pytest.skip("nginx is not installed (scripts/setup installs it as root)")
    return found


def main_config(prefix: Path, site: Path) -> str:
    """A whole nginx.conf around the http-level site file, every path inside `prefix`."""
    # As root, workers would switch to `nobody`, which cannot enter pytest's private temp dirs.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(f"    {name}_temp_path {prefix}/{name};\n" for name in TEMP_PATHS)
    return (
        f"daemon off;\n{user}worker_processes 2;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n{temp_paths}    include {site};\n}}\n"
    )


def check_config(binary: str, prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a config: exit status and nginx's own verdict."""
    return subprocess.run(
        [binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True
    )


class NginxProxy:
    """nginx on a free port in front of an upstream address, its config rendered as installed."""

    def __init__(self, base: Path, upstream: str, connections_per_client: int = 8) -> None:
        self.prefix = base / "nginx"
        self.port = free_port()
        self.upstream = upstream
        self.connections_per_client = connections_per_client
        self.conf = self.prefix / "nginx.conf"
        self.access_log = self.prefix / "access.log"
        self.extra_dir = self.prefix / "extra"
        self._process: subprocess.Popen[bytes] | None = None

    def write_config(self, env: Mapping[str, str]) -> None:
        """Render the site file from these FEED_* settings, as scripts/install does."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        config = Config.from_env({**env, "FEED_BIND": f"127.0.0.1:{self.port}"})
        site = self.prefix / "feedsvc.conf"
        self.extra_dir.mkdir(exist_ok=True)
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
        binary = nginx_binary()
        self.write_config(env)
        checked = check_config(binary, self.prefix, self.conf)
        assert checked.returncode == 0, checked.stderr
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
                pytest.fail(f"nginx exited with {self._process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                request(self.port, "GET", "/health")
                return
            time.sleep(0.1)
        pytest.fail(f"nginx not answering after {START_DEADLINE_SECONDS} s:\n{self.log()}")

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        return request(self.port, method, path, body, headers)

    def stop(self) -> None:
        """Graceful stop (QUIT), then a kill when nginx lingers."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGQUIT)
        try:
            self._process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def log(self) -> str:
        error_log = self.prefix / "error.log"
        return error_log.read_text(errors="replace") if error_log.exists() else ""
