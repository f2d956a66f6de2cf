"""gunicorn's logger, writing JSON lines: access lines by orjson (valid whatever the path holds,
and several times cheaper than gunicorn's format-string atoms on every request), error and
application records through feedsvc.core.logs, each carrying its request's id."""

import logging
import os
import time
from datetime import timedelta
from typing import Any

import orjson
from gunicorn.glogging import Logger

from feedsvc.core.logs import REQUEST_ID_ENVIRON, JsonFormatter

FIRST_ERROR_STATUS = 400
# What libraries (SQLAlchemy, kafka-python, elasticsearch) may log; feedsvc's own follow loglevel.
LIBRARY_LOG_LEVEL = logging.WARNING


class JsonLogger(Logger):
    """The stock gunicorn logger (files, syslog, reopen on USR1), with JSON lines throughout."""

    # FEED_ACCESS_LOG=errors: only requests that failed (4xx, 5xx) or took this long are logged.
    errors_only = False
    slow_request_s = 0.0

    @classmethod
    def filter_access(cls, errors_only: bool, slow_request_ms: int) -> None:
        """Set by the config file each time it runs: gunicorn keeps its logger across a HUP, so
        only class settings reach the workers a reload forks."""
        cls.errors_only = errors_only
        cls.slow_request_s = slow_request_ms / 1000

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # feedsvc's and the libraries' records go where gunicorn's own go, formatted alike.
        root = logging.getLogger()
        root.handlers = list(self.error_log.handlers)
        root.setLevel(LIBRARY_LOG_LEVEL)
        logging.getLogger("feedsvc").setLevel(self.loglevel)

    def _set_handler(self, log: logging.Logger, output: Any, fmt: Any, stream: Any = None) -> None:
        if log is self.error_log:
            fmt = JsonFormatter()
        super()._set_handler(log, output, fmt, stream)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        status = resp.status
        self.exchange(
            environ,
            int(status.split(None, 1)[0]) if isinstance(status, str) else status,
            getattr(resp, "sent", None),
            request_time.total_seconds() * 1000,
        )

    def exchange(
        self, environ: dict[str, Any], status: int, sent: int | None, duration_ms: float
    ) -> None:
        """One access line: what gunicorn's workers and meinheld's access callback both report."""
        if not self.access_log_enabled:
            return
        if (
            self.errors_only
            and status < FIRST_ERROR_STATUS
            and duration_ms < self.slow_request_s * 1000
        ):
            return
        line = {
            "ts": round(time.time(), 3),
            "pid": os.getpid(),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": status,
            "duration_ms": round(float(duration_ms), 3),
            "bytes": sent,
            "request_id": environ.get(REQUEST_ID_ENVIRON),
        }
        self.access_log.info(orjson.dumps(line).decode())
