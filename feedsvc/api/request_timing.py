"""A Falcon middleware that times every API request and hands the record to the perf channel;
loaded only with Kafka on (feedsvc.compose.kafka)."""

import time
from typing import Any

import falcon

from feedsvc.adapters.kafka.perf_channel import ROUTES as CHANNEL_ROUTES
from feedsvc.api import routes
from feedsvc.api.middleware import matched_route
from feedsvc.core.protocols import PerfSink

# (route, HTTP method) -> number of the record's (entity, operation) on the perf channel; other
# requests (the OpenAPI document, /metrics, unknown routes, unsupported methods) make none.
PERF_ROUTES: dict[tuple[str, str], int] = {
    route: CHANNEL_ROUTES.index(kind)
    for route, kind in {
        (routes.PARTICIPANTS, "POST"): ("participant", "post"),
        (routes.PARTICIPANT, "GET"): ("participant", "get"),
        (routes.FRIENDS, "GET"): ("friends", "get"),
        (routes.FRIENDS, "POST"): ("friends", "post"),
        (routes.OUTBOUND, "GET"): ("outbound", "get"),
        (routes.OUTBOUND, "POST"): ("outbound", "post"),
        (routes.INBOUND, "GET"): ("inbound", "get"),
        (routes.SEARCH, "GET"): ("outbound", "search"),
    }.items()
}


class RequestTiming:
    """Times each request from arrival to response; submitting never blocks the request."""

    def __init__(self, sink: PerfSink) -> None:
        self._submit = sink.submit

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.perf_started = (time.time(), time.perf_counter())

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        perf_route = PERF_ROUTES.get((matched_route(req, resource), req.method))
        started = req.context.get("perf_started")
        if perf_route is None or started is None:
            return
        wall_clock, counter = started
        self._submit(wall_clock, perf_route, time.perf_counter() - counter)
