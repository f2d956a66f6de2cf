"""gunicorn's worker on meinheld's C server, with what meinheld gets wrong fixed.

meinheld 1.0.2 is built from its source with scripts/meinheld.patch (scripts/build-meinheld), which
fixes its C server: a response the socket cannot take at once is written as the client reads it
(built without greenlet, a missing `break` truncated it), within a total deadline after which the
connection is closed; a refused CONNECT or upgrade leaves no Python error pending to fail the next
request; a connection over the worker's fd limit is closed at once instead of never being watched;
a stopping server answers with `Connection: close` and closes idle keep-alive connections (once,
however often gunicorn repeats SIGTERM, which had ended its loop early and reset them); a slow
request no longer makes the other connections' keep-alive timeouts fire at once; its access log
skips connections that sent no request; a connection whose first response had to wait for the
socket is watched for its next request again (picoev's EPOLLEXCLUSIVE registration could never be
changed, so the loop spun on it and the request hung). What remains here is supervision, as
gunicorn expects:
- Its C watchdog only `fchmod`s the heartbeat file, but gunicorn >= 22 judges a worker by that
  file's mtime against its monotonic clock, so a hung worker was never killed. Here the loop
  calls `notify()` (gunicorn's own mtime update) about once a second; a request stuck in the app
  stops the loop, the heartbeat with it, and gunicorn kills and replaces the worker at `timeout`.
  (gunicorn's abort handler raises SystemExit inside the stuck request, which meinheld catches
  as an app error and serves on; here the aborted worker leaves at once.)
- meinheld's access log calls back once per request after its last byte left; the line is the
  gunicorn logger's, so access lines are the same on every worker class.
- It ignored `max_requests`; this worker counts requests and recycles itself like gunicorn's.
"""

from __future__ import annotations

import os
import resource
import traceback
from types import TracebackType
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.base import Worker
from meinheld import server

from feedsvc.core.config import Config

# Descriptors a worker keeps for itself beyond client connections: listeners, database, log and
# metrics files, Kafka and search sockets.
RESERVED_FDS = 64


def connection_limit() -> int:
    """The highest descriptor meinheld may serve: this process's fd limit less the worker's own."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(RESERVED_FDS, soft - RESERVED_FDS)


class MeinheldWorker(Worker):
    """One meinheld event loop serving one request at a time, supervised as gunicorn expects."""

    def run(self) -> None:
        server.set_keepalive(self.cfg.keepalive)
        server.set_picoev_max_fd(connection_limit())
        # A response not out this long after its first blocked write is cut: a client that
        # stops reading holds its connection and memory no longer than a stuck request would.
        server.set_write_timeout(self.cfg.timeout)
        # Bodies up to FEED_MAX_BODY_BYTES reach the app, which answers larger ones in JSON.
        max_body_bytes = Config.from_env().max_body_bytes
        server.set_max_content_length(max(server.get_max_content_length(), max_body_bytes))
        server.set_access_logger(self)
        server.set_error_logger(_ErrorLog(self.log))
        server.set_watchdog(self.heartbeat)
        server.set_listen_socket([listener.fileno() for listener in self.sockets])
        server.run(self.wsgi)

    def heartbeat(self) -> None:
        """Called by meinheld's loop about once a second, never while a request is in the app."""
        self.notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            server.stop(self.cfg.graceful_timeout)

    def access(self, environ: dict[str, Any]) -> None:
        """meinheld's access log: called once per request, when its response is all out."""
        self.log.exchange(
            environ, environ["STATUS_CODE"], environ["SEND_BYTES"], environ["REQUEST_TIME"]
        )
        self.nr += 1
        if self.nr + 1 == self.max_requests:
            # The next request is the last: its response says `Connection: close`.
            server.set_keepalive(0)
        elif self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False
            server.stop(self.cfg.graceful_timeout)

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


class _ErrorLog:
    """meinheld reports errors as error(type, value, traceback); gunicorn's log takes text."""

    def __init__(self, log: Logger) -> None:
        self._log = log

    def error(
        self, kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        self._log.error("".join(traceback.format_exception(kind, error, trace)).rstrip())
