"""gunicorn's gthread worker, fixed so that a request stuck in the app gets its worker replaced.

gthread beats its heartbeat from the main thread whatever its request threads do, so gunicorn's
`timeout` never caught a hung request. This worker stops beating while any request has been in
the app longer than `timeout`; the arbiter then kills it and forks a replacement. A client that
stops reading would hold a thread that long and then cost every connection of the worker, so its
socket gets half of `timeout` for each send (Python's `sendall` counts it for the whole call, so it
bounds the whole response body), after which the connection alone is closed.
"""

import threading
import time
from typing import Any

from gunicorn.workers import gthread


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, except that a hung request gets its worker killed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When each thread's current request entered the app, by thread id.
        self._in_app_since: dict[int, float] = {}

    def handle_request(self, req: Any, conn: Any) -> Any:
        thread = threading.get_ident()
        self._in_app_since[thread] = time.monotonic()
        conn.sock.settimeout(max(1, self.timeout // 2))
        try:
            return super().handle_request(req, conn)
        finally:
            del self._in_app_since[thread]

    def notify(self) -> None:
        """Beat only while no request is stuck, so the arbiter's `timeout` applies to requests."""
        oldest = min(self._in_app_since.values(), default=None)
        if oldest is None or time.monotonic() - oldest <= self.timeout:
            super().notify()
