"""The Prometheus metrics every worker writes and /metrics sums (multiprocess under gunicorn).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set by config/gunicorn.conf.py before any worker
imports this module, so each worker keeps its values in its own files there and a scrape of any
worker reports the totals of all of them (dead workers' counters included).
"""

from prometheus_client import Gauge, Histogram

# Its _count series is the request count by route, method and status: one metric, half the writes.
REQUESTS = Histogram(
    "feed_http_request_duration_seconds",
    "Time from a request's arrival to its response, by route, method and status",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
# Any route that matched no resource is counted under one label, so junk URLs cannot add series.
UNMATCHED_ROUTE = "unmatched"
# Likewise any method outside HTTP's registered ones (gthread passes any token to the app).
OTHER_METHOD = "other"
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
