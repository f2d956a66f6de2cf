"""Application log records as one JSON object per line, each with the request it was logged in."""

import logging
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

# Where the request middleware leaves a request's X-Request-ID for the access line, in the WSGI
# environ: the same place on every worker class, whatever the worker knows of the headers.
REQUEST_ID_ENVIRON = "feedsvc.request_id"
# The X-Request-ID of the request this thread serves right now; set by the request middleware.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One line per record whatever the message holds: a traceback is one field, not 30 lines."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": REQUEST_ID.get(),
            "pid": record.process,
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()
