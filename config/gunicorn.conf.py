"""gunicorn settings for feedsvc: the process model, every tuned value from a FEED_* variable.

Laid out like gunicorn's examples/example_config.py. Nothing here may import prometheus_client
(directly or through feedsvc modules) before PROMETHEUS_MULTIPROC_DIR is set below: its metric
values choose single- or multi-process storage when it is first imported.
"""

import os
import sys
from pathlib import Path

from feedsvc.core.config import Config, ConfigError
from feedsvc.core.version import release
from feedsvc.server.access_log import JsonLogger

try:
    _config = Config.from_env()
except ConfigError as error:
    sys.exit(f"feedsvc: {error}")

# --- The app -------------------------------------------------------------------------------
# A factory call, so the app and its pools are built in each worker, after fork (no preload).
wsgi_app = "feedsvc.compose.wsgi:get_app()"

# --- Server socket -------------------------------------------------------------------------
# Address to listen on (FEED_BIND).
bind = [_config.bind]
# Connections the kernel queues while every worker is busy (FEED_BACKLOG).
backlog = _config.backlog

# --- Worker processes ----------------------------------------------------------------------
# How many processes serve requests: the capacity knob (FEED_WORKERS).
workers = _config.workers
# meinheld or gthread (fixed subclasses in feedsvc/server/workers/), or sync (FEED_WORKER_CLASS).
worker_class = {
    "meinheld": "feedsvc.server.workers.meinheld_worker.MeinheldWorker",
    "gthread": "feedsvc.server.workers.gthread_worker.ThreadWorker",
    "sync": "sync",
}[_config.worker_class]
# Requests a gthread worker serves at once; 1 for the others (FEED_THREADS).
threads = _config.concurrency
# Seconds an idle keep-alive connection stays open (FEED_KEEPALIVE). A meinheld worker serves as
# many connections as its RLIMIT_NOFILE allows (gunicorn's worker_connections is gthread's).
keepalive = _config.keepalive_s
# A worker silent this long (a request stuck in the app) is killed and replaced (FEED_TIMEOUT);
# under meinheld also the most a response may take to be written once the client stops reading.
timeout = _config.timeout_s
# Seconds in-flight requests get to finish on TERM, HUP and recycling (FEED_GRACEFUL_TIMEOUT).
graceful_timeout = _config.graceful_timeout_s
# Recycle a worker after this many requests, bounding slow leaks; 0 never (FEED_MAX_REQUESTS).
max_requests = _config.max_requests
# Random extra requests per worker so they do not recycle together (FEED_MAX_REQUESTS_JITTER).
max_requests_jitter = _config.max_requests_jitter
# Heartbeat files on tmpfs: a slow or full disk must not make gunicorn kill healthy workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# --- Security: request limits --------------------------------------------------------------
# The longest request line: the longest URL (a 200-character search, percent-encoded) fits.
limit_request_line = 4094
# Header count and size; bodies are bounded by the app (FEED_MAX_BODY_BYTES, a JSON 413).
limit_request_fields = 100
limit_request_field_size = 8190

# --- Control socket ------------------------------------------------------------------------
# gunicornc's socket: per instance under systemd, else off so instances never collide.
control_socket_disable = _config.control_socket is None
if _config.control_socket is not None:
    control_socket = str(_config.control_socket)

# --- Logging -------------------------------------------------------------------------------
# Error log verbosity (FEED_LOG_LEVEL).
loglevel = _config.log_level
# Access log on stdout, one JSON object per request (the journal keeps stdout under systemd);
# none with FEED_ACCESS_LOG=off.
accesslog = None if _config.access_log == "off" else "-"
# Every line JSON. Access lines: time, worker pid, method, path, status, duration_ms, bytes,
# request_id; with FEED_ACCESS_LOG=errors only 4xx/5xx and those over FEED_SLOW_REQUEST_MS.
# Error and app records on stderr: time, level, logger, message, request_id, pid, traceback.
logger_class = JsonLogger
JsonLogger.filter_access(_config.access_log == "errors", _config.slow_request_ms)

# --- Metrics -------------------------------------------------------------------------------
# Prometheus multiprocess files of all workers, read by /metrics (FEED_METRICS_DIR); on tmpfs by
# default, so a full data disk leaves them alone. Ours alone: /dev/shm is shared by every user.
_config.metrics_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
if _config.metrics_dir.stat().st_uid != os.getuid():
    sys.exit(f"feedsvc: FEED_METRICS_DIR {_config.metrics_dir} belongs to another user")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_config.metrics_dir)
# Imported only now: it imports prometheus_client, whose storage follows the variable above.
from feedsvc.adapters.metrics_files import (  # noqa: E402
    WORKER_EXITS_FILE,
    WorkerExits,
    make_metric_writes_safe,
)

_worker_exits = WorkerExits(_config.metrics_dir)


# --- Server hooks --------------------------------------------------------------------------
def on_starting(server):
    """Once, in the master: the release said, stale metrics out, the schema, the perf publisher."""
    server.log.info(
        "feedsvc %s starting: %d %s workers, %s database",
        release(),
        _config.workers,
        _config.worker_class,
        "SQLite" if _config.is_sqlite else "MySQL",
    )
    metrics_dir = Path(_config.metrics_dir)
    for stale in [
        *metrics_dir.glob("*.db"),
        *metrics_dir.glob("*.partial"),
        metrics_dir / WORKER_EXITS_FILE,
    ]:
        stale.unlink(missing_ok=True)  # another instance on this data dir may be wiping too
    if _config.worker_class_fell_back:
        server.log.warning(
            "meinheld is not installed: serving with gunicorn's gthread worker instead"
        )
    if _config.is_sqlite:
        # Imported here, after PROMETHEUS_MULTIPROC_DIR is set. init_db disposes its engine,
        # so the master holds no database connection when it forks.
        from feedsvc.compose.schema import init_db

        init_db(_config)
    if _config.publishes_perf_records:
        # Before any worker is forked: each inherits the channel to the publisher.
        from feedsvc.adapters.kafka import perf_supervisor

        perf_supervisor.start(server.log)


def on_reload(server):
    """HUP: the perf publisher is replaced too, so it runs the new code (no record waits)."""
    if _config.publishes_perf_records:
        from feedsvc.adapters.kafka import perf_supervisor

        perf_supervisor.replace()


def on_exit(server):
    """After the workers stopped: the publisher sends what they left, within a bounded time."""
    if _config.publishes_perf_records:
        from feedsvc.adapters.kafka import perf_supervisor

        perf_supervisor.stop()


def post_fork(server, worker):
    """In the new worker, before its app exists: a full disk must not crash it (SIGBUS)."""
    make_metric_writes_safe()


def child_exit(server, worker):
    """A worker is gone: count it, and its live gauges must stop counting in /metrics."""
    _worker_exits.record(worker.pid)
