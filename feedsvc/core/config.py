"""Settings: FEED_* environment variables, parsed and validated once at start-up."""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATA_DIR = "data"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
DEFAULT_BIND = "127.0.0.1:8080"
DEFAULT_LOG_LEVEL = "info"
# The process model (config/gunicorn.conf.py). meinheld when importable, else the fallback.
WORKER_CLASSES = ("meinheld", "gthread", "sync")
FALLBACK_WORKER_CLASS = "gthread"
# Requests a gthread worker serves at once; meinheld and sync serve one at a time.
DEFAULT_THREADS = 4
# gunicorn's default listen queue: bursts wait in the kernel instead of being refused.
DEFAULT_BACKLOG = 2048
# Idle keep-alive connections are closed after this; above a proxy's usual 2-4 s reuse window.
DEFAULT_KEEPALIVE_S = 5
# A request (and a silent worker) older than this gets its worker killed and replaced.
DEFAULT_TIMEOUT_S = 30
MIN_TIMEOUT_S = 2
# In-flight requests get this long to finish on TERM, HUP and worker recycling.
DEFAULT_GRACEFUL_TIMEOUT_S = 30
# Each worker is replaced after about this many requests, which bounds slow leaks; the jitter
# spreads the restarts so workers never recycle all at once. A worker at full load serves
# thousands of requests a second, so a much smaller bound would cost a fork and a new app often.
DEFAULT_MAX_REQUESTS = 1_000_000
DEFAULT_MAX_REQUESTS_JITTER = 50_000
CONTROL_SOCKET_OFF = "off"
# tmpfs on Linux: where the metrics files go outside systemd when the user has no runtime dir.
SHARED_MEMORY_DIR = "/dev/shm"
# MySQL/MariaDB connection pool, per worker process (SQLite ignores these). The pool size
# defaults to what one worker can use at once (see Config.default_db_pool_size).
DEFAULT_DB_MAX_OVERFLOW = 5
DEFAULT_DB_POOL_TIMEOUT_S = 2.0
DEFAULT_DB_POOL_RECYCLE_S = 1800
# A stopped server is refused at once; a frozen or unreachable one costs at most these seconds
# before the request becomes a 503 (whole seconds: the MySQL client counts no finer).
DEFAULT_DB_CONNECT_TIMEOUT_S = 1
DEFAULT_DB_READ_TIMEOUT_S = 2
# Above InnoDB's row-lock wait (1 s, see db/engines.py) so a lock wait ends as a retryable error.
MIN_DB_READ_TIMEOUT_S = 2
# A read replica further behind the primary than this is out of rotation until it catches up.
DEFAULT_REPLICA_MAX_LAG_MS = 1000
# A read presenting a Feed-Position token waits at most this long for a replica to apply it,
# then is served by the primary.
DEFAULT_REPLICA_TOKEN_WAIT_MS = 50
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Access lines: every request, only failed (4xx, 5xx) and slow ones, or none. At thousands of
# requests a second `all` meets journald's rate limit, which then drops error lines too.
ACCESS_LOG_MODES = ("all", "errors", "off")
DEFAULT_ACCESS_LOG = "all"
# A request taking this long is logged under FEED_ACCESS_LOG=errors even when it succeeded.
DEFAULT_SLOW_REQUEST_MS = 1000
# SQLite's PRAGMA synchronous. full: a commit reaches the disk before the client is answered, so
# an acknowledged write survives a power loss; normal: more posts per second (README:
# Configuration), but the last commits before a power loss or kernel crash may be lost (a
# process crash loses none).
SQLITE_SYNCHRONOUS_MODES = ("full", "normal")
DEFAULT_SQLITE_SYNCHRONOUS = "full"
DEFAULT_KAFKA_PERF_TOPIC = "feed"
DEFAULT_KAFKA_EVENTS_TOPIC = "feed.outbound"
# Kafka's own rule for topic names ("." and ".." are not allowed either).
KAFKA_TOPIC_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9._-]{1,249}")
_HOST_PORT = re.compile(r"[^\s:,]+:[0-9]{1,5}")
DEFAULT_SEARCH_INDEX = "feed"
# How often recent posts are compared with the Elasticsearch index (0: never).
DEFAULT_SEARCH_RECONCILE_INTERVAL_S = 60
# Elasticsearch's own rule for index names, minus the rarely wanted characters it also allows.
SEARCH_INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,254}")


class ConfigError(ValueError):
    """A FEED_* variable holds a value the service cannot run with; the message names it."""


def default_workers(is_sqlite: bool) -> int:
    """One worker per core on SQLite, where requests are CPU work and writes take turns (tuned:
    throughput peaked at 1-2 workers on 2 cores and fell beyond); on MySQL, whose server is
    usually another host, twice the cores plus one, gunicorn's rule for workers that wait on I/O."""
    cores = os.cpu_count() or 1
    return cores if is_sqlite else 2 * cores + 1


@functools.cache
def meinheld_available() -> bool:
    """Whether the meinheld C server loads here (it is an optional, separately built extra)."""
    try:
        importlib.import_module("meinheld.server")
    except ImportError:
        return False
    return True


def default_worker_class() -> str:
    return "meinheld" if meinheld_available() else FALLBACK_WORKER_CLASS


def runtime_directory(environ: Mapping[str, str]) -> Path | None:
    """systemd's RuntimeDirectory= (a per-instance tmpfs directory), when running under it."""
    runtime_dir = environ.get("RUNTIME_DIRECTORY", "").strip()
    return Path(runtime_dir.split(":")[0]) if runtime_dir else None


def default_metrics_dir(environ: Mapping[str, str], data_dir: Path) -> Path:
    """On tmpfs, never on the data disk: systemd's runtime directory, else the user's, else
    /dev/shm; one directory per data directory, as instances on one data directory share."""
    runtime_dir = runtime_directory(environ)
    if runtime_dir:
        return runtime_dir / "metrics"
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    instance = f"feedsvc-{os.getuid()}-{digest}"
    user_runtime_dir = environ.get("XDG_RUNTIME_DIR", "").strip()
    if user_runtime_dir:
        return Path(user_runtime_dir) / instance / "metrics"
    if Path(SHARED_MEMORY_DIR).is_dir():
        return Path(SHARED_MEMORY_DIR) / instance / "metrics"
    return data_dir / "metrics"


def control_socket_path(value: str, environ: Mapping[str, str]) -> Path | None:
    """A path, `off`, or unset: the runtime directory, else none, so instances never collide."""
    if value.lower() == CONTROL_SOCKET_OFF:
        return None
    if value:
        return Path(value)
    runtime_dir = runtime_directory(environ)
    return runtime_dir / "gunicorn.ctl" if runtime_dir else None


@dataclass(frozen=True)
class Config:
    """Everything the service reads from its environment, already validated."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    database_url: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    bind: str = DEFAULT_BIND
    # None: default_workers() for the configured database.
    workers: int | None = None
    worker_class: str = field(default_factory=default_worker_class)
    # True when FEED_WORKER_CLASS was unset and meinheld did not load: the master says so once.
    worker_class_fell_back: bool = False
    threads: int = DEFAULT_THREADS
    backlog: int = DEFAULT_BACKLOG
    keepalive_s: int = DEFAULT_KEEPALIVE_S
    timeout_s: int = DEFAULT_TIMEOUT_S
    graceful_timeout_s: int = DEFAULT_GRACEFUL_TIMEOUT_S
    max_requests: int = DEFAULT_MAX_REQUESTS
    max_requests_jitter: int = DEFAULT_MAX_REQUESTS_JITTER
    # Prometheus multiprocess files; None: default_metrics_dir() outside systemd.
    metrics_dir: Path | None = None
    # gunicorn's control socket (gunicornc); None: no control socket.
    control_socket: Path | None = None
    log_level: str = DEFAULT_LOG_LEVEL
    access_log: str = DEFAULT_ACCESS_LOG
    slow_request_ms: int = DEFAULT_SLOW_REQUEST_MS
    # Kept out of the URL and of repr() so it never reaches a unit file, a command line or a log.
    database_password: str | None = field(default=None, repr=False)
    # None: Config.default_db_pool_size, what one worker can use at once.
    db_pool_size: int | None = None
    db_max_overflow: int = DEFAULT_DB_MAX_OVERFLOW
    db_pool_timeout_s: float = DEFAULT_DB_POOL_TIMEOUT_S
    db_pool_recycle_s: int = DEFAULT_DB_POOL_RECYCLE_S
    db_connect_timeout_s: int = DEFAULT_DB_CONNECT_TIMEOUT_S
    db_read_timeout_s: int = DEFAULT_DB_READ_TIMEOUT_S
    sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS
    # MySQL read replicas of the primary (same credentials); empty: every read on the primary.
    database_replica_urls: tuple[str, ...] = ()
    replica_max_lag_ms: int = DEFAULT_REPLICA_MAX_LAG_MS
    replica_token_wait_ms: int = DEFAULT_REPLICA_TOKEN_WAIT_MS
    # host:port of Kafka brokers; empty: Kafka is off and none of its code is even imported.
    kafka_bootstrap: tuple[str, ...] = ()
    kafka_perf_topic: str = DEFAULT_KAFKA_PERF_TOPIC
    # Per-request perf records (and their publisher process) with Kafka on; off keeps events only.
    kafka_perf_records: bool = True
    kafka_events_topic: str = DEFAULT_KAFKA_EVENTS_TOPIC
    # Elasticsearch nodes; empty means the embedded search of the database.
    search_urls: tuple[str, ...] = ()
    search_index: str = DEFAULT_SEARCH_INDEX
    search_reconcile_interval_s: int = DEFAULT_SEARCH_RECONCILE_INTERVAL_S

    def __post_init__(self) -> None:
        if not self.database_url:
            sqlite_url = f"sqlite:///{self.data_dir.resolve() / 'feed.db'}"
            object.__setattr__(self, "database_url", sqlite_url)
        if self.metrics_dir is None:
            object.__setattr__(self, "metrics_dir", default_metrics_dir({}, self.data_dir))
        if self.workers is None:
            object.__setattr__(self, "workers", default_workers(self.is_sqlite))
        if self.db_pool_size is None:
            object.__setattr__(self, "db_pool_size", self.default_db_pool_size)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def publishes_perf_records(self) -> bool:
        return bool(self.kafka_bootstrap) and self.kafka_perf_records

    @property
    def concurrency(self) -> int:
        """Requests one worker serves at once: its threads under gthread, else one."""
        return self.threads if self.worker_class == "gthread" else 1

    @property
    def relay_threads(self) -> int:
        """The worker's outbox relay threads, one per sink (search index, Kafka events)."""
        return int(bool(self.search_urls)) + int(bool(self.kafka_bootstrap))

    @property
    def default_db_pool_size(self) -> int:
        """A connection per concurrent request plus one per relay thread, which each hold one."""
        return self.concurrency + self.relay_threads

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Config:
        env = _Env(environ)
        password = env.secret("FEED_DATABASE_PASSWORD", "FEED_DATABASE_PASSWORD_FILE")
        data_dir = Path(env.text("FEED_DATA_DIR", DEFAULT_DATA_DIR))
        worker_class_set = bool(env.text("FEED_WORKER_CLASS", ""))
        worker_class = env.choice("FEED_WORKER_CLASS", default_worker_class(), WORKER_CLASSES)
        if worker_class == "meinheld" and not meinheld_available():
            raise ConfigError(
                "FEED_WORKER_CLASS is meinheld, but meinheld is not installed (see scripts/setup)"
            )
        database_url = env.database_url("FEED_DATABASE_URL", has_password=password is not None)
        read_timeout_s = env.integer(
            "FEED_DB_READ_TIMEOUT", DEFAULT_DB_READ_TIMEOUT_S, minimum=MIN_DB_READ_TIMEOUT_S
        )
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            database_password=password,
            # 0 only when unset: the pool then follows the worker's concurrency.
            db_pool_size=env.integer("FEED_DB_POOL_SIZE", 0, minimum=1) or None,
            db_max_overflow=env.integer("FEED_DB_MAX_OVERFLOW", DEFAULT_DB_MAX_OVERFLOW),
            db_pool_timeout_s=env.number(
                "FEED_DB_POOL_TIMEOUT", DEFAULT_DB_POOL_TIMEOUT_S, minimum=0.001
            ),
            db_pool_recycle_s=env.integer(
                "FEED_DB_POOL_RECYCLE", DEFAULT_DB_POOL_RECYCLE_S, minimum=1
            ),
            db_connect_timeout_s=env.integer(
                "FEED_DB_CONNECT_TIMEOUT", DEFAULT_DB_CONNECT_TIMEOUT_S, minimum=1
            ),
            db_read_timeout_s=read_timeout_s,
            database_replica_urls=env.replica_urls(
                "FEED_DATABASE_REPLICA_URLS", database_url, has_password=password is not None
            ),
            # Measured by a wait on each replica that must end before the read timeout does.
            replica_max_lag_ms=env.integer(
                "FEED_REPLICA_MAX_LAG_MS",
                DEFAULT_REPLICA_MAX_LAG_MS,
                minimum=1,
                maximum=read_timeout_s * 1000 - 1,
            ),
            replica_token_wait_ms=env.integer(
                "FEED_REPLICA_TOKEN_WAIT_MS",
                DEFAULT_REPLICA_TOKEN_WAIT_MS,
                maximum=read_timeout_s * 1000 - 1,
            ),
            sqlite_synchronous=env.choice(
                "FEED_SQLITE_SYNCHRONOUS", DEFAULT_SQLITE_SYNCHRONOUS, SQLITE_SYNCHRONOUS_MODES
            ),
            max_body_bytes=env.integer("FEED_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1),
            bind=env.text("FEED_BIND", DEFAULT_BIND),
            workers=env.integer("FEED_WORKERS", 0, minimum=1) or None,
            worker_class=worker_class,
            worker_class_fell_back=not worker_class_set and not meinheld_available(),
            threads=env.integer("FEED_THREADS", DEFAULT_THREADS, minimum=1),
            backlog=env.integer("FEED_BACKLOG", DEFAULT_BACKLOG, minimum=1),
            keepalive_s=env.integer("FEED_KEEPALIVE", DEFAULT_KEEPALIVE_S, minimum=1),
            # meinheld's loop beats the heartbeat about once a second: 1 s would kill idle workers.
            timeout_s=env.integer("FEED_TIMEOUT", DEFAULT_TIMEOUT_S, minimum=MIN_TIMEOUT_S),
            graceful_timeout_s=env.integer(
                "FEED_GRACEFUL_TIMEOUT", DEFAULT_GRACEFUL_TIMEOUT_S, minimum=1
            ),
            max_requests=env.integer("FEED_MAX_REQUESTS", DEFAULT_MAX_REQUESTS),
            max_requests_jitter=env.integer(
                "FEED_MAX_REQUESTS_JITTER", DEFAULT_MAX_REQUESTS_JITTER
            ),
            metrics_dir=Path(
                env.text("FEED_METRICS_DIR", str(default_metrics_dir(environ, data_dir)))
            ),
            control_socket=control_socket_path(env.text("FEED_CONTROL_SOCKET", ""), environ),
            log_level=env.choice("FEED_LOG_LEVEL", DEFAULT_LOG_LEVEL, LOG_LEVELS),
            access_log=env.choice("FEED_ACCESS_LOG", DEFAULT_ACCESS_LOG, ACCESS_LOG_MODES),
            slow_request_ms=env.integer("FEED_SLOW_REQUEST_MS", DEFAULT_SLOW_REQUEST_MS, minimum=1),
            kafka_bootstrap=env.host_ports("FEED_KAFKA_BOOTSTRAP"),
            kafka_perf_topic=env.pattern(
                "FEED_KAFKA_PERF_TOPIC", DEFAULT_KAFKA_PERF_TOPIC, KAFKA_TOPIC_NAME
            ),
            kafka_perf_records=env.flag("FEED_KAFKA_PERF_RECORDS", True),
            kafka_events_topic=env.pattern(
                "FEED_KAFKA_EVENTS_TOPIC", DEFAULT_KAFKA_EVENTS_TOPIC, KAFKA_TOPIC_NAME
            ),
            search_urls=env.urls("FEED_SEARCH_URL"),
            search_index=env.pattern("FEED_SEARCH_INDEX", DEFAULT_SEARCH_INDEX, SEARCH_INDEX_NAME),
            search_reconcile_interval_s=env.integer(
                "FEED_SEARCH_RECONCILE_INTERVAL", DEFAULT_SEARCH_RECONCILE_INTERVAL_S
            ),
        )


class _Env:
    """Typed reads of FEED_* variables that fail with the variable's name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str) -> str:
        value = self._environ.get(name, "").strip()
        return value or default

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        return value

    def secret(self, name: str, file_name: str) -> str | None:
        """A secret given directly or, better, in a file that only the service's user can read."""
        value = self._environ.get(name, "")
        path = self._environ.get(file_name, "").strip()
        if value and path:
            raise ConfigError(f"{name} and {file_name} are both set; give the secret once")
        if not path:
            return value or None
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{file_name} cannot be read: {error}") from None

    def database_url(self, name: str, *, has_password: bool) -> str:
        raw = self.text(name, "")
        if not raw:
            return raw
        try:
            url = make_url(raw)
        except ArgumentError:
            # Not echoed: a malformed URL may still hold a password.
            raise ConfigError(f"{name} is not a database URL (dialect+driver://...)") from None
        if url.get_backend_name() != "sqlite" and not _is_mysqldb(url):
            raise ConfigError(f"{name} must be sqlite:///PATH or mysql+mysqldb://USER@HOST/DB")
        if has_password and url.password is not None:
            raise ConfigError(
                f"{name} holds a password and FEED_DATABASE_PASSWORD(_FILE) gives one too; keep one"
            )
        return raw

    def replica_urls(self, name: str, primary_url: str, *, has_password: bool) -> tuple[str, ...]:
        """Comma-separated MySQL URLs of the primary's read replicas; errors never echo one."""
        urls = tuple(url.strip() for url in self._environ.get(name, "").split(",") if url.strip())
        if urls and not primary_url.startswith("mysql"):
            raise ConfigError(f"{name} needs FEED_DATABASE_URL to be a MySQL/MariaDB primary")
        for position, url in enumerate(urls, 1):
            try:
                parsed = make_url(url)
            except ArgumentError:
                raise ConfigError(f"{name}: URL {position} is not a database URL") from None
            if not _is_mysqldb(parsed):
                raise ConfigError(f"{name}: URL {position} must be mysql+mysqldb://USER@HOST/DB")
            if has_password and parsed.password is not None:
                raise ConfigError(
                    f"{name}: URL {position} holds a password; replicas take"
                    " FEED_DATABASE_PASSWORD(_FILE), as the primary does"
                )
        return urls

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def host_ports(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of host:port addresses; empty when unset."""
        raw = self._environ.get(name, "").strip()
        addresses = tuple(part.strip() for part in raw.split(",") if part.strip())
        for address in addresses:
            if not _HOST_PORT.fullmatch(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
                raise ConfigError(f"{name} must be host:port[,host:port...], got {raw!r}")
        return addresses

    def urls(self, name: str) -> tuple[str, ...]:
        """Comma-separated http(s) URLs; errors never echo one, as it may carry a password."""
        urls = tuple(url.strip() for url in self._environ.get(name, "").split(",") if url.strip())
        for position, url in enumerate(urls, 1):
            try:
                parts = urlsplit(url)
                valid = parts.scheme in ("http", "https") and bool(parts.hostname)
                valid = valid and parts.port != 0
            except ValueError:
                valid = False
            if not valid:
                raise ConfigError(f"{name}: URL {position} is not http(s)://host[:port]")
        return urls

    def pattern(self, name: str, default: str, pattern: re.Pattern[str]) -> str:
        value = self.text(name, default)
        if not pattern.fullmatch(value):
            raise ConfigError(f"{name} must match {pattern.pattern}, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _is_mysqldb(url: URL) -> bool:
    """MySQL or MariaDB through mysqlclient, the one MySQL driver the service is built on."""
    return url.get_backend_name() in ("mysql", "mariadb") and url.get_driver_name() == "mysqldb"
