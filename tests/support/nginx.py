"""A real nginx running the repo's config/nginx/feedsvc.conf (loadtest.harness.nginx), for tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from loadtest.harness.gunicorn import HttpResponse, ServerError, request
from loadtest.harness.nginx import NginxServer, find_nginx
from tests.support.unavailable import unavailable


def nginx_binary() -> str:
    """nginx's path; CI must have it (scripts/setup installs it), elsewhere the test skips."""
    found = find_nginx()
    if found is None:
        unavailable("nginx", "not installed (scripts/setup installs it as root)")
    return found


class NginxProxy(NginxServer):
    """NginxServer in a test's directory: skips without nginx, fails the test when it breaks."""

    def __init__(self, base: Path, upstream: str, connections_per_client: int = 8) -> None:
        super().__init__(base / "nginx", upstream, connections_per_client)

    def start(self, env: Mapping[str, str]) -> None:
        nginx_binary()
        try:
            super().start(env)
        except ServerError as error:
            pytest.fail(str(error))

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        return request(self.port, method, path, body, headers)
