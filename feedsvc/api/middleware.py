"""Falcon middleware: request ids and request metrics, by route: the URI template the request
matched (`matched_route`, also what the perf records of request_timing are keyed by)."""

import re
import secrets
import time
from functools import lru_cache
from typing import Any

import falcon

from feedsvc.core.logs import REQUEST_ID, REQUEST_ID_ENVIRON
from feedsvc.core.metrics import OTHER_METHOD, REQUESTS, UNMATCHED_ROUTE

KNOWN_METHODS = frozenset(falcon.constants.COMBINED_METHODS)
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_MAX_CHARS = 128
_FIELD_CONVERTER = re.compile(r"\{(\w+):[^}]*\}")
_REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")


def request_id(offered: str | None) -> str:
    """The client's id when it is a safe token (it reaches logs), else a fresh one."""
    if offered and len(offered) <= REQUEST_ID_MAX_CHARS and _REQUEST_ID_CHARS.issuperset(offered):
        return offered
    return secrets.token_hex(16)


def matched_route(req: falcon.Request, resource: Any) -> str | None:
    """The URI template the request was routed by; None when it matched no resource."""
    return req.uri_template if resource is not None else None


@lru_cache(maxsize=64)
def route_label(uri_template: str) -> str:
    """The route as clients see it: `/participant/{participant_id}`, without converter details."""
    return _FIELD_CONVERTER.sub(r"{\1}", uri_template)


class RequestMetrics:
    """Falcon middleware: tags each request with an id and counts and times it by route."""

    def __init__(self) -> None:
        # One histogram child per (route, method, status), looked up without labels()' checks.
        self._series: dict[tuple[str | None, str, int], Any] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()
        tag = req.env[REQUEST_ID_ENVIRON] = request_id(req.get_header(REQUEST_ID_HEADER))
        resp.set_header(REQUEST_ID_HEADER, tag)
        # Records logged while this request runs carry its id (feedsvc.core.logs).
        req.context.request_id_token = REQUEST_ID.set(tag)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        elapsed = time.perf_counter() - req.context.metrics_started
        method = req.method if req.method in KNOWN_METHODS else OTHER_METHOD
        key = (matched_route(req, resource), method, resp.status_code)
        series = self._series.get(key)
        if series is None:
            route = route_label(key[0]) if key[0] is not None else UNMATCHED_ROUTE
            series = self._series[key] = REQUESTS.labels(route, method, key[2])
        series.observe(elapsed)
        REQUEST_ID.reset(req.context.request_id_token)
