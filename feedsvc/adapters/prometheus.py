"""What a worker reports to Prometheus besides requests: its pool, its release, and the sums of
every worker's multiprocess files that /metrics serves."""

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Engine

from feedsvc.adapters.metrics_files import worker_exits
from feedsvc.core.metrics import BUILD_INFO, POOL_CHECKED_OUT
from feedsvc.core.version import release


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
