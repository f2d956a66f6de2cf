"""/health, /ready and /metrics: what load balancers, systemd and Prometheus ask of each worker."""

import falcon

from feedsvc.adapters import prometheus
from feedsvc.service.feed import Feed


class Health:
    """Liveness: the worker answers HTTP; no I/O, so a slow database never gets it restarted."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Readiness:
    """Readiness: send traffic here only while the database answers (else 503, via errors.py)."""

    def __init__(self, feed: Feed) -> None:
        self._feed = feed

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._feed.check_database()
        resp.media = {"status": "ready"}


class Metrics:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = prometheus.exposition()
