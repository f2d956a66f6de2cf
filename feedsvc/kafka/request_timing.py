"""A Falcon middleware that times every API request and hands the record to the perf publisher."""

import time
from typing import Any, Protocol

import falcon

from feedsvc.resources import friends, participants, search, timelines

# (resource class, HTTP method) -> (entity, operation) of the perf record; other requests
# (the OpenAPI document, /metrics, unknown routes, unsupported methods) produce none.
ROUTES: dict[tuple[type, str], tuple[str, str]] = {
    (participants.Collection, "POST"): ("participant", "post"),
    (participants.Item, "GET"): ("participant", "get"),
    (friends.Collection, "GET"): ("friends", "get"),
    (friends.Collection, "POST"): ("friends", "post"),
    (timelines.Outbound, "GET"): ("outbound", "get"),
    (timelines.Outbound, "POST"): ("outbound", "post"),
    (timelines.Inbound, "GET"): ("inbound", "get"),
    (search.Senders, "GET"): ("outbound", "search"),
}


class PerfSink(Protocol):
    def submit(self, started: float, entity: str, operation: str, duration: float) -> None: ...


class RequestTiming:
    """Times each request from arrival to response; submitting never blocks the request."""

    def __init__(self, sink: PerfSink) -> None:
        self._sink = sink

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.perf_started = (time.time(), time.perf_counter())

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        route = ROUTES.get((type(resource), req.method))
        started = req.context.get("perf_started")
        if route is None or started is None:
            return
        wall_clock, counter = started
        self._sink.submit(wall_clock, *route, time.perf_counter() - counter)
