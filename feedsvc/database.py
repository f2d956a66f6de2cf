"""Engines: one per worker process, tuned for the backend behind FEED_DATABASE_URL."""

import functools
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql import Executable

from feedsvc import migrations
from feedsvc.config import Config
from feedsvc.search import create_search

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
# Longest pause between two tries for SQLite's write lock; a write transaction takes about 0.5 ms.
SQLITE_LOCK_RETRY_MAX_S = 0.0005
WRITE_OPTION = "feed_write"
# A write that waits this long for a row lock gives up and is retried (InnoDB's default is 50 s);
# every transaction here takes milliseconds, so a longer wait means something is stuck.
MYSQL_LOCK_WAIT_TIMEOUT_S = 1
# Lock conflicts InnoDB resolves by rolling back: deadlock (whole transaction), lock wait timeout.
MYSQL_LOCK_CONFLICTS = frozenset({1213, 1205})
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.01

P = ParamSpec("P")
T = TypeVar("T")


def create_engine(config: Config) -> Engine:
    """Build the engine; call it in the worker, after fork, so no pooled socket is shared."""
    if config.is_sqlite:
        return _sqlite_engine(config)
    return _mysql_engine(config)


def connect_url(config: Config) -> URL:
    """The URL with the password from FEED_DATABASE_PASSWORD(_FILE); its repr masks it."""
    url = make_url(config.database_url)
    if config.database_password is None:
        return url
    return url.set(password=config.database_password)


def retry_lock_conflicts(write: Callable[P, T]) -> Callable[P, T]:
    """Run a write transaction again when InnoDB rolled it back to break a deadlock or lock wait."""

    @functools.wraps(write)
    def attempts(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, CONFLICT_ATTEMPTS):
            try:
                return write(*args, **kwargs)
            except OperationalError as error:
                if not is_lock_conflict(error):
                    raise
                log.info("%s: lock conflict (%s), attempt %d", write.__name__, error.orig, attempt)
            time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2**attempt))
        return write(*args, **kwargs)

    return attempts


def is_lock_conflict(error: OperationalError) -> bool:
    args = getattr(error.orig, "args", ())
    return bool(args) and args[0] in MYSQL_LOCK_CONFLICTS


def writer(engine: Engine) -> Engine:
    """The same pool, marked so that its transactions take the write lock up front."""
    return engine.execution_options(**{WRITE_OPTION: True})


class CompiledQuery:
    """A Core statement compiled once for one dialect: its SQL text and parameter order."""

    def __init__(self, engine: Engine, statement: Executable) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.names = tuple(compiled.positiontup or ())
        # Values the dialect adds itself, such as SQLite's OFFSET 0 after a LIMIT.
        self.defaults = compiled.params
        # What SQLAlchemy would do to a value on the way in (SQLite stores datetimes as text).
        self._processors = {
            name: processor
            for name, bind in compiled.binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect))
        }
        self._dbapi_error = dialect.loaded_dbapi.Error

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        values = [params[name] if name in params else self.defaults[name] for name in self.names]
        if self._processors:
            for position, name in enumerate(self.names):
                if name in self._processors:
                    values[position] = self._processors[name](values[position])
        return values

    def run(self, cursor: Any, params: Mapping[str, Any]) -> Any:
        """Execute on a DB-API cursor; a driver error is raised as SQLAlchemy's exception type."""
        values = self.values(params)
        try:
            cursor.execute(self.sql, values)
        except self._dbapi_error as error:
            raise DBAPIError.instance(self.sql, values, error, self._dbapi_error) from error
        return cursor


def run_in(conn: Connection, query: CompiledQuery, params: Mapping[str, Any]) -> Any:
    """Run a compiled statement in the caller's transaction, straight on its DB-API cursor.

    A post runs four statements while it holds SQLite's write lock; SQLAlchemy's per-execution
    work was 40% of that time. Returns the cursor, for rowcount, lastrowid or fetchone().
    """
    return query.run(conn.connection.driver_connection.cursor(), params)


class Reader:
    """Runs compiled reads straight on a pooled DB-API cursor.

    SQLAlchemy's per-execution machinery costs several times the query itself on the hot
    read paths; the pool (pre-ping, invalidation) and the exception types stay SQLAlchemy's.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        # SQLite is a local file, with nothing to ping, recycle or reconnect: each thread keeps
        # a connection of its own for reads and skips the pool's checkout and checkin.
        self._thread_local = threading.local() if engine.dialect.name == "sqlite" else None

    def rows(self, query: CompiledQuery, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if self._thread_local is not None:
            return self._rows_on_thread_connection(query, params)
        try:
            conn = self._engine.raw_connection()
        except self._dbapi_error as error:
            raise DBAPIError.instance(
                query.sql, query.values(params), error, self._dbapi_error
            ) from error
        try:
            cursor = conn.cursor()
            try:
                return query.run(cursor, params).fetchall()
            finally:
                cursor.close()
        except DBAPIError as error:
            if self._engine.dialect.is_disconnect(error.orig, conn.dbapi_connection, None):
                conn.invalidate(error.orig)
            raise
        finally:
            conn.close()

    def _rows_on_thread_connection(
        self, query: CompiledQuery, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        try:
            cursor = self._thread_local.cursor
        except AttributeError:
            pooled = self._engine.raw_connection()
            pooled.detach()
            # One cursor for all of the thread's reads: each execute() starts it afresh.
            cursor = self._thread_local.cursor = pooled.dbapi_connection.cursor()
        return query.run(cursor, params).fetchall()


def init_db(config: Config) -> None:
    """Upgrade the schema to the newest revision, create the search structures if missing;
    safe to run again, and on a database full of data."""
    if config.is_sqlite:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(config)
    try:
        # Under SQLite's write lock: two instances starting on one data directory take turns.
        with writer(engine).begin() as conn:
            migrations.upgrade(conn)
        search = create_search(config, engine)
        try:
            search.create_schema()
        finally:
            search.close()
    finally:
        engine.dispose()


def _mysql_engine(config: Config) -> Engine:
    url = connect_url(config)
    log.info("database %r", url)
    engine = sqlalchemy.create_engine(
        url,
        # Bounded per worker; a checkout that waits longer than pool_timeout becomes a 503.
        pool_size=config.db_pool_size,
        max_overflow=config.db_max_overflow,
        pool_timeout=config.db_pool_timeout_s,
        # Checked before use and replaced before the server's wait_timeout closes it.
        pool_pre_ping=True,
        pool_recycle=config.db_pool_recycle_s,
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
        # A connection the server closed while idle costs a failed pre-ping; recycle before.
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

    return engine


def _sqlite_engine(config: Config) -> Engine:
    engine = sqlalchemy.create_engine(config.database_url)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are ours to begin (below), not the sqlite3 module's.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        # A new file turns to WAL once; a second process doing it at that moment is refused at
        # once (SQLite's deadlock guard skips the busy handler), so it tries again.
        if not _when_unlocked(dbapi_connection, "PRAGMA journal_mode=WAL"):
            dbapi_connection.execute("PRAGMA journal_mode=WAL")  # a last try, raising
        dbapi_connection.execute(f"PRAGMA synchronous={config.sqlite_synchronous.upper()}")
        dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: sqlalchemy.Connection) -> None:
        # A writer locks at BEGIN so concurrent writers wait for the lock instead of failing
        # on a read-to-write upgrade; readers run each statement on its own.
        writes = conn.get_execution_options().get(WRITE_OPTION)
        if writes and not _begin_immediate_soon(conn.connection.driver_connection):
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # a last try, raising SQLAlchemy's error

    return engine


def _begin_immediate_soon(connection: sqlite3.Connection) -> bool:
    """Take the write lock by our own quick retries: SQLite's busy handler sleeps 1, 2, 5, 10 ...
    100 ms between tries and keeps losing to newcomers, which made the p99 of posts 40 ms at half
    load. False when the lock stayed taken for the whole busy timeout."""
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
