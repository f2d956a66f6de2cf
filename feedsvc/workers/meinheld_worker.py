"""gunicorn's worker on meinheld's C server, with what meinheld's own worker gets wrong fixed.

meinheld's `MeinheldWorker` (last release 2020), run under gunicorn 27, has these defects:
- Its C watchdog only `fchmod`s the heartbeat file, but gunicorn >= 22 judges a worker by that
  file's mtime against its monotonic clock, so a hung worker was never killed. Here the loop
  calls `notify()` (gunicorn's own mtime update) about once a second; a request stuck in the app
  stops the loop, the heartbeat with it, and gunicorn kills and replaces the worker at `timeout`.
  (gunicorn's abort handler raises SystemExit inside the stuck request, which meinheld catches
  as an app error and serves on; here the aborted worker leaves at once.)
- Built without greenlet, its writer gives up on a response the socket buffer cannot take at
  once and closes the connection: bodies over a few MB arrived truncated. Here each response is
  written with the client socket blocking (bounded by SO_SNDTIMEO), and made non-blocking again
  when meinheld closes the body, i.e. once every byte is out.
- Its access log replaces gunicorn's for every worker class and logs a junk line for each
  connection closed without a request. Here meinheld's log is off and the gunicorn logger's
  `access()` is called once per request, so access lines are the same on every worker class.
It also ignored `max_requests`; this worker counts requests and recycles itself like gunicorn's.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.base import Worker
from meinheld import server

from feedsvc.config import Config

StartResponse = Callable[..., Any]


class MeinheldWorker(Worker):
    """One meinheld event loop serving one request at a time, supervised as gunicorn expects."""

    def run(self) -> None:
        server.set_keepalive(self.cfg.keepalive)
        server.set_picoev_max_fd(self.cfg.worker_connections)
        # Bodies up to FEED_MAX_BODY_BYTES reach the app, which answers larger ones in JSON.
        max_body_bytes = Config.from_env().max_body_bytes
        server.set_max_content_length(max(server.get_max_content_length(), max_body_bytes))
        server.set_access_logger(None)
        server.set_error_logger(_ErrorLog(self.log))
        server.set_watchdog(self.heartbeat)
        server.set_listen_socket([listener.fileno() for listener in self.sockets])
        # A client that stops reading gives up its response after this, before `timeout`
        # (the heartbeat is not beaten while a response is written) would kill the worker.
        self._send_timeout = struct.pack("ll", max(1, self.cfg.timeout // 2), 0)
        server.run(self.serve)

    def heartbeat(self) -> None:
        """Called by meinheld's loop about once a second, never while a request is in the app."""
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            server.stop(self.cfg.graceful_timeout)

    def serve(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI app, its body written blocking, logged and counted once it is all out."""
        exchange = _Exchange(environ, time.monotonic())

        def recorded_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            exchange.status = status
            exchange.headers = headers
            return start_response(status, headers, exc_info)

        body = self.wsgi(environ, recorded_start_response)
        client = _blocking_client(environ, self._send_timeout)
        return _Body(body, exchange, lambda: self._finished(exchange, client))

    def handle_quit(self, sig: int, frame: Any) -> None:
        server.stop()

    def handle_exit(self, sig: int, frame: Any) -> None:
        server.stop(self.cfg.graceful_timeout)

    def handle_abort(self, sig: int, frame: Any) -> None:
        """The arbiter found this worker hung: leave at once. gunicorn's own handler raises
        SystemExit in the stuck request, which meinheld catches as an app error and serves on."""
        self.alive = False
        self.cfg.worker_abort(self)
        os._exit(1)

    def _finished(self, exchange: _Exchange, client: socket.socket) -> None:
        client.setblocking(False)
        client.detach()
        # No request object: feedsvc.access_log, the config's logger, reads only the environ.
        self.log.access(exchange, None, exchange.environ, exchange.elapsed())
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
            server.stop(self.cfg.graceful_timeout)


def _blocking_client(environ: dict[str, Any], send_timeout: bytes) -> socket.socket:
    """The request's connection, switched to blocking writes; detach() it, never close it."""
    # Family and type given, not probed (three getsockopt calls a request): the object is only
    # used to set blocking mode and a socket option, which mean the same for every family.
    client = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, 0, environ["meinheld.client"].get_fd()
    )
    client.setblocking(True)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, send_timeout)
    return client


@dataclass
class _Exchange:
    """What gunicorn's access log reads of a response: status, headers and bytes sent."""

    environ: dict[str, Any]
    started: float
    status: str = "500 Internal Server Error"
    headers: list[tuple[str, str]] = field(default_factory=list)
    sent: int = 0

    def elapsed(self) -> timedelta:
        return timedelta(seconds=time.monotonic() - self.started)


class _Body:
    """The app's body, counted as meinheld writes it; meinheld calls close() when it is out."""

    def __init__(
        self, body: Iterable[bytes], exchange: _Exchange, on_close: Callable[[], None]
    ) -> None:
        self._body = body
        self._exchange = exchange
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._exchange.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class _ErrorLog:
    """meinheld reports errors as error(type, value, traceback); gunicorn's log takes text."""

    def __init__(self, log: Logger) -> None:
        self._log = log

    def error(
        self, kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        self._log.error("".join(traceback.format_exception(kind, error, trace)).rstrip())
