"""Prometheus metrics every worker writes and /metrics sums: multiprocess mode under gunicorn.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set by config/gunicorn.conf.py before any worker imports
this module, so each worker keeps its values in its own files there and a scrape of any worker
reports the totals of all of them (dead workers' counters included).
"""

import os
import re
import secrets
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Engine

from feedsvc.access_log import REQUEST_ID_ENVIRON
from feedsvc.logs import REQUEST_ID
from feedsvc.metrics_files import worker_exits
from feedsvc.version import release

# Its _count series is the request count by route, method and status: one metric, half the writes.
REQUESTS = Histogram(
    "feed_http_request_duration_seconds",
    "Time from a request's arrival to its response, by route, method and status",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
POOL_CHECKED_OUT = Gauge(
    "feed_db_pool_checked_out",
    # Each serving thread's read connection is its own, outside the pool, and not counted here.
    "Write and outbox-relay database connections checked out of the workers' pools right now",
    multiprocess_mode="livesum",
)
# livemax: a worker's series leaves with it, so after an upgrade's HUP only the new version shows.
BUILD_INFO = Gauge(
    "feed_build_info",
    "Always 1; its version label is the release the workers run",
    ["version"],
    multiprocess_mode="livemax",
)

# Any route that matched no resource is counted under one label, so junk URLs cannot add series.
UNMATCHED_ROUTE = "unmatched"
# Likewise any method outside HTTP's registered ones (gthread passes any token to the app).
OTHER_METHOD = "other"
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
        # Records logged while this request runs carry its id (feedsvc.logs).
        req.context.request_id_token = REQUEST_ID.set(tag)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        elapsed = time.perf_counter() - req.context.metrics_started
        method = req.method if req.method in KNOWN_METHODS else OTHER_METHOD
        key = (req.uri_template if resource is not None else None, method, resp.status_code)
        series = self._series.get(key)
        if series is None:
            route = route_label(key[0]) if key[0] is not None else UNMATCHED_ROUTE
            series = self._series[key] = REQUESTS.labels(route, method, key[2])
        series.observe(elapsed)
        REQUEST_ID.reset(req.context.request_id_token)


def watch_pool(engine: Engine) -> None:
    """Track connections in use, to show a pool that is too small for the worker's concurrency."""
    event.listen(engine, "checkout", lambda *_: POOL_CHECKED_OUT.inc())
    event.listen(engine, "checkin", lambda *_: POOL_CHECKED_OUT.dec())


class WorkerExitsCollector(Collector):
    """The gunicorn master's count of worker exits (see metrics_files.WorkerExits)."""

    def __init__(self, metrics_dir: Path) -> None:
        self._metrics_dir = metrics_dir

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "feed_worker_exits",
            "Worker processes that exited (restarts follow)",
            value=worker_exits(self._metrics_dir),
        )


def record_build_info() -> None:
    """Set in each worker, never in the master, which keeps its old code across a HUP."""
    BUILD_INFO.labels(release()).set(1)


def exposition() -> tuple[bytes, str]:
    """Every worker's metrics summed under gunicorn; this process's own otherwise."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(WorkerExitsCollector(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
    return generate_latest(registry), CONTENT_TYPE_LATEST
