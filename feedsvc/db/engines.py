"""Engines: one per worker process, tuned for the backend behind FEED_DATABASE_URL."""

import logging
import random
import sqlite3
import time
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool

from feedsvc.core.config import Config
from feedsvc.db.statements import share_read_connections

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
# Longest pause between two tries for SQLite's write lock: about as long as a write transaction
# holds it (README: Load test and benchmarks).
SQLITE_LOCK_RETRY_MAX_S = 0.0005
WRITE_OPTION = "feed_write"
# A write that waits this long for a row lock gives up and is retried (InnoDB's default is 50 s);
# every transaction here takes milliseconds, so a longer wait means something is stuck.
MYSQL_LOCK_WAIT_TIMEOUT_S = 1


def create_engine(config: Config) -> Engine:
    """Build the engine; call it in the worker, after fork, so no pooled socket is shared."""
    if config.is_sqlite:
        return _sqlite_engine(config)
    return _mysql_engine(config)


def connect_url(config: Config, database_url: str | None = None) -> URL:
    """The URL (the primary's unless another is given, such as a replica's) with the password from
    FEED_DATABASE_PASSWORD(_FILE); its repr masks it."""
    url = make_url(database_url or config.database_url)
    if config.database_password is None:
        return url
    return url.set(password=config.database_password)


def writer(engine: Engine) -> Engine:
    """The same pool, marked so that its transactions take the write lock up front."""
    return engine.execution_options(**{WRITE_OPTION: True})


class FailFastQueuePool(QueuePool):
    """A pool that, once a checkout timed out, stops making callers wait until a connection returns.

    A gthread worker's requests queue for its threads before they ask the pool: with every
    request waiting the whole pool timeout in turn, the last 503 came after several timeouts
    (8 s for 16 requests on 4 threads). Now only the first wait is paid.
    """

    _exhausted = False

    @property
    def _timeout(self) -> float:
        return 0.0 if self._exhausted else self._configured_timeout

    @_timeout.setter
    def _timeout(self, seconds: float) -> None:
        self._configured_timeout = seconds

    def _do_get(self) -> Any:
        try:
            return super()._do_get()
        except PoolTimeoutError:
            self._exhausted = True
            raise

    def _do_return_conn(self, record: Any) -> None:
        self._exhausted = False
        super()._do_return_conn(record)

    def recreate(self) -> QueuePool:
        self._exhausted = False  # the new pool gets the configured timeout
        return super().recreate()


def create_replica_engine(config: Config, replica_url: str) -> Engine:
    """An engine on one read replica, with the primary's settings; after fork, as create_engine."""
    return _mysql_engine(config, replica_url)


def _mysql_engine(config: Config, database_url: str | None = None) -> Engine:
    url = connect_url(config, database_url)
    log.info("database %r", url)
    engine = sqlalchemy.create_engine(
        url,
        # Bounded per worker; a checkout that waits longer than pool_timeout becomes a 503.
        poolclass=FailFastQueuePool,
        pool_size=config.db_pool_size,
        max_overflow=config.db_max_overflow,
        pool_timeout=config.db_pool_timeout_s,
        # No ping per checkout (a round trip per write): a statement that finds the connection
        # closed fails the transaction before its COMMIT, and retry_transaction runs it again.
        pool_recycle=config.db_pool_recycle_s,
        # No ROLLBACK per checkin either: the pool is used through Connections only, and a
        # Connection ends its own transaction (COMMIT, or ROLLBACK when closed inside one).
        pool_reset_on_return=None,
        # Each statement sees what was committed before it: a post reaches every friendship
        # committed before it, and reads take no gap locks that would block befriending.
        isolation_level="READ COMMITTED",
        connect_args={
            "charset": "utf8mb4",
            "connect_timeout": config.db_connect_timeout_s,
            "read_timeout": config.db_read_timeout_s,
            "write_timeout": config.db_read_timeout_s,
            "init_command": (
                f"SET SESSION innodb_lock_wait_timeout = {MYSQL_LOCK_WAIT_TIMEOUT_S},"
                " time_zone = '+00:00'"
            ),
        },
    )

    @event.listens_for(engine, "first_connect")
    def _check_recycle(dbapi_connection: Any, _record: Any) -> None:
        # A connection the server closed while idle costs a retry on a new one; recycle before.
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT @@wait_timeout")
        (wait_timeout,) = cursor.fetchone()
        cursor.close()
        if wait_timeout <= config.db_pool_recycle_s:
            log.warning(
                "FEED_DB_POOL_RECYCLE=%d s is not below the server's wait_timeout=%d s; lower it",
                config.db_pool_recycle_s,
                wait_timeout,
            )

    share_read_connections(engine, config.db_pool_recycle_s)
    return engine


def _sqlite_engine(config: Config) -> Engine:
    return sqlite_engine(config.database_url, config.sqlite_synchronous)


def sqlite_engine(url: str, synchronous: str) -> Engine:
    """An engine on one SQLite file (the database, or the search index beside it)."""
    engine = sqlalchemy.create_engine(url)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are ours to begin (below), not the sqlite3 module's.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        # A new file turns to WAL once; a second process doing it at that moment is refused at
        # once (SQLite's deadlock guard skips the busy handler), so it tries again.
        if not _when_unlocked(dbapi_connection, "PRAGMA journal_mode=WAL"):
            dbapi_connection.execute("PRAGMA journal_mode=WAL")  # a last try, raising
        dbapi_connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
        dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: sqlalchemy.Connection) -> None:
        # A writer locks at BEGIN so concurrent writers wait for the lock instead of failing
        # on a read-to-write upgrade; readers run each statement on its own.
        writes = conn.get_execution_options().get(WRITE_OPTION)
        if writes and not _begin_immediate_soon(conn.connection.driver_connection):
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # a last try, raising SQLAlchemy's error

    # SQLite is a local file, with nothing to recycle.
    share_read_connections(engine, None)
    return engine


def _begin_immediate_soon(connection: sqlite3.Connection) -> bool:
    """Take the write lock by our own quick retries: SQLite's busy handler sleeps 1, 2, 5, 10 ...
    100 ms between tries and keeps losing to newcomers, which made the p99 of posts at half load
    many times their median. False when the lock stayed taken for the whole busy timeout."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        return _when_unlocked(connection, "BEGIN IMMEDIATE")
    finally:
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def _when_unlocked(connection: sqlite3.Connection, sql: str) -> bool:
    """Run `sql`, trying again every fraction of a millisecond while the database is locked;
    False on another error or when it stayed locked for the whole busy timeout."""
    give_up = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute(sql)
            return True
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > give_up:
                return False
        time.sleep(random.uniform(0, SQLITE_LOCK_RETRY_MAX_S))
