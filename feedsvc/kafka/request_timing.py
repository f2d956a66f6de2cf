"""A Falcon middleware that times every API request and hands the record to the perf channel."""

import time
from typing import Any, Protocol

import falcon

from feedsvc.kafka.perf_channel import ROUTES as CHANNEL_ROUTES
from feedsvc.resources import friends, participants, search, timelines

# (resource class, HTTP method) -> number of the record's (entity, operation) on the channel;
# other requests (the OpenAPI document, /metrics, unknown routes, unsupported methods) make none.
ROUTES: dict[tuple[type, str], int] = {
    route: CHANNEL_ROUTES.index(kind)
    for route, kind in {
        (participants.Collection, "POST"): ("participant", "post"),
        (participants.Item, "GET"): ("participant", "get"),
        (friends.Collection, "GET"): ("friends", "get"),
        (friends.Collection, "POST"): ("friends", "post"),
        (timelines.Outbound, "GET"): ("outbound", "get"),
        (timelines.Outbound, "POST"): ("outbound", "post"),
        (timelines.Inbound, "GET"): ("inbound", "get"),
        (search.Senders, "GET"): ("outbound", "search"),
    }.items()
}


class PerfSink(Protocol):
    def submit(self, started: float, route: int, duration: float) -> None: ...


class RequestTiming:
    """Times each request from arrival to response; submitting never blocks the request."""

    def __init__(self, sink: PerfSink) -> None:
        self._submit = sink.submit

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
        self._submit(wall_clock, route, time.perf_counter() - counter)
