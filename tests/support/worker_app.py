"""Test-only WSGI app: the real service, plus which worker served each request and a slow route.

Started only by tests (GunicornServer.start(app=WORKER_APP)); production never imports it.
"""

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from feedsvc.compose.wsgi import get_app as get_service_app

WORKER_PID_HEADER = "X-Test-Worker-Pid"
# GET /test/sleep?seconds=N answers after N seconds: a request in flight, or a hung one.
SLEEP_PATH = "/test/sleep"
# It leaves a file named so in FEED_DATA_DIR as it starts sleeping: the request is in the app.
SLEEPING_MARK = "sleeping-"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def get_app() -> WsgiApp:
    service = get_service_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        pid = str(os.getpid())

        def start_with_pid(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            return start_response(status, [*headers, (WORKER_PID_HEADER, pid)], exc_info)

        if environ.get("PATH_INFO") == SLEEP_PATH:
            Path(os.environ["FEED_DATA_DIR"], f"{SLEEPING_MARK}{pid}-{time.time_ns()}").touch()
            time.sleep(float(environ.get("QUERY_STRING", "").removeprefix("seconds=")))
            start_with_pid("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        return service(environ, start_with_pid)

    return app
