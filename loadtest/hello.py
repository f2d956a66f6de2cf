"""The benchmark ceiling: the least a WSGI app can do per request under the same gunicorn config."""

from collections.abc import Callable

import orjson

BODY = orjson.dumps({"hello": "world"})
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ: dict, start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]
