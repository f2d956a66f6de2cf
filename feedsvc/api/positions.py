"""The Feed-Position header: read-your-writes across replicas and hosts without sticky sessions."""

from typing import TYPE_CHECKING

import falcon

from feedsvc.api.errors import REPLAYED_HEADER

if TYPE_CHECKING:  # the OpenAPI document names the header without loading the replica router
    from feedsvc.db.replicas import ReplicaRouter

POSITION_HEADER = "Feed-Position"
# Only reads are routed by a position: a write and the reads inside it are on the primary anyway.
READ_METHODS = frozenset(("GET", "HEAD"))


class ReadYourWrites:
    """Falcon middleware, installed only with read replicas: a write's response carries its
    replication position, and a read presenting one is served where that write has arrived."""

    def __init__(self, router: "ReplicaRouter") -> None:
        self._router = router

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.method in READ_METHODS:
            self._router.begin_request(req.get_header(POSITION_HEADER))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        written = self._router.end_request()
        if written is None and resp.get_header(REPLAYED_HEADER) == "true":
            # A replayed write committed in an earlier request: the primary's position now is
            # at or past it (one statement, on replays only).
            written = self._router.primary_position()
        if written is not None:
            resp.set_header(POSITION_HEADER, written)
