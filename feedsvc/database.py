"""Engines: one per worker process, tuned for the backend behind FEED_DATABASE_URL."""

import functools
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ParamSpec, Protocol, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql import Executable

from feedsvc import migrations
from feedsvc.config import Config
from feedsvc.search import create_search

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
# Longest pause between two tries for SQLite's write lock; a write transaction takes about 0.5 ms.
SQLITE_LOCK_RETRY_MAX_S = 0.0005
WRITE_OPTION = "feed_write"
READ_CONNECTIONS = "feed_read_connections"
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


def connect_url(config: Config, database_url: str | None = None) -> URL:
    """The URL (the primary's unless another is given, such as a replica's) with the password from
    FEED_DATABASE_PASSWORD(_FILE); its repr masks it."""
    url = make_url(database_url or config.database_url)
    if config.database_password is None:
        return url
    return url.set(password=config.database_password)


def retry_transaction(write: Callable[P, T]) -> Callable[P, T]:
    """Run a write transaction again when InnoDB rolled it back to break a deadlock or lock wait,
    and once more when its connection turned out to be closed before the commit was sent."""

    @functools.wraps(write)
    def attempts(*args: P.args, **kwargs: P.kwargs) -> T:
        conflicts = 0
        reconnected = False
        while True:
            try:
                return write(*args, **kwargs)
            except OperationalError as error:
                if lost_before_commit(error) and not reconnected:
                    log.info("%s: connection lost (%s), retrying", write.__name__, error.orig)
                    reconnected = True
                    continue
                conflicts += 1
                if not is_lock_conflict(error) or conflicts == CONFLICT_ATTEMPTS:
                    raise
                log.info(
                    "%s: lock conflict (%s), attempt %d", write.__name__, error.orig, conflicts
                )
            time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2**conflicts))

    return attempts


def lost_before_commit(error: DBAPIError) -> bool:
    """A statement found the connection closed: the server had already rolled the transaction back,
    so running it again cannot apply it twice (a COMMIT that failed carries no statement, and its
    outcome is unknown)."""
    return error.connection_invalidated and error.statement is not None


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
        # mysqlclient's cursor renders each statement in Python (encode, escape, %) and keeps
        # state a read never looks at: a read sends this, with the values escaped by the
        # connection's own literal(), exactly as the cursor would, and takes the rows as they come.
        self._mysql_template = self.sql.encode() if reads_on_connection(dialect) else b""

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

    def fetch(self, handle: Any, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        """Every row, read on a thread's read handle (`ThreadConnections.handle`): the
        mysqlclient connection itself, or another driver's cursor."""
        if not self._mysql_template:
            return self.run(handle, params).fetchall()
        values = self.values(params)
        try:
            handle.query(self._mysql_template % tuple(map(handle.literal, values)))
            return handle.store_result().fetch_row(0)
        except self._dbapi_error as error:
            raise DBAPIError.instance(self.sql, values, error, self._dbapi_error) from error


def reads_on_connection(dialect: Any) -> bool:
    """Whether reads skip the DB-API cursor and run on mysqlclient's connection itself."""
    return dialect.driver == "mysqldb"


def run_in(conn: Connection, query: CompiledQuery, params: Mapping[str, Any]) -> Any:
    """Run a compiled statement in the caller's transaction, straight on its DB-API cursor.

    A post runs four statements while it holds SQLite's write lock; SQLAlchemy's per-execution
    work was 40% of that time. Returns the cursor, for rowcount, lastrowid or fetchone().
    """
    pooled = conn.connection
    try:
        return query.run(pooled.driver_connection.cursor(), params)
    except DBAPIError as error:
        if conn.dialect.is_disconnect(error.orig, pooled.dbapi_connection, None):
            # What SQLAlchemy does on a disconnect it sees itself: this connection is discarded
            # and the pool's other ones, as old, are replaced at their next checkout.
            conn.engine.pool._invalidate(pooled, error.orig)
            error.connection_invalidated = True
        raise


class Reader:
    """Runs compiled reads straight on a connection (or its cursor) that each thread keeps.

    SQLAlchemy's per-execution machinery costs several times the query itself on the hot read
    paths, and a pooled checkout costs a ping and a rollback, two round trips per read. So each
    thread owns one read connection, outside the pool (in autocommit on MySQL, each SELECT its
    own transaction): a read is one statement. A server that closed it since its last use (KILL,
    wait_timeout, restart, failover) costs one retry on a fresh connection, not an error. With
    read replicas configured, the engine's read connections are feedsvc.replicas' router, which
    sends each read to a replica or the primary.
    """

    rows: Callable[[CompiledQuery, Mapping[str, Any]], Sequence[tuple[Any, ...]]]
    # The same on the primary whatever the router would choose: for operator and background work.
    primary_rows: Callable[[CompiledQuery, Mapping[str, Any]], Sequence[tuple[Any, ...]]]

    def __init__(self, engine: Engine) -> None:
        connections: ReadConnections = engine.get_execution_options()[READ_CONNECTIONS]
        # Bound once: a read costs no lookup of where it goes when there is only the primary.
        self.rows = connections.rows
        self.primary_rows = connections.primary_rows


class ReadConnections(Protocol):
    """Where an engine's reads run: each thread's own connection to the primary (ThreadConnections)
    or, with read replicas, a router over several servers' ones."""

    # True for a router: write transactions then pin reads to the primary and note positions.
    routes: bool

    def reads_on_primary(self) -> AbstractContextManager[None]: ...

    def note_commit(self, conn: Connection) -> None: ...

    def rows(
        self, query: CompiledQuery, params: Mapping[str, Any]
    ) -> Sequence[tuple[Any, ...]]: ...

    def primary_rows(
        self, query: CompiledQuery, params: Mapping[str, Any]
    ) -> Sequence[tuple[Any, ...]]: ...


class ThreadConnections:
    """The read connection of each thread of one engine, made on its first use (after the fork)
    from a pool of its own, so that it never waits for the writers' connections."""

    def __init__(self, engine: Engine, recycle_s: float | None) -> None:
        self._pool = engine.pool.recreate()
        self._dialect = engine.dialect
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        self._autocommit = engine.dialect.name != "sqlite"
        self._reads_on_connection = reads_on_connection(engine.dialect)
        self._recycle_s = recycle_s
        self._local = threading.local()

    def rows(self, query: CompiledQuery, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        """Run a read on this thread's connection, once more on a fresh one if it was closed."""
        handle, reused = self.handle(query, params)
        try:
            return query.fetch(handle, params)
        except DBAPIError as error:
            if not (reused and self.is_disconnect(error)):
                raise
            self.discard()
        handle, _ = self.handle(query, params)
        return query.fetch(handle, params)

    primary_rows = rows
    # Every read is on the primary already: writes need nothing from this class.
    routes = False

    def reads_on_primary(self) -> AbstractContextManager[None]:
        return nullcontext()

    def note_commit(self, conn: Connection) -> None:
        """Nothing to note: there are no replicas to catch up."""

    def handle(self, query: CompiledQuery, params: Mapping[str, Any]) -> tuple[Any, bool]:
        """What this thread reads on (its cursor, or its mysqlclient connection), and whether it
        served before (False: just connected)."""
        local = self._local
        try:
            handle = local.handle
        except AttributeError:
            return self._connect(query, params), False
        if self._recycle_s is not None and time.monotonic() > local.recycle_at:
            self.discard()
            return self._connect(query, params), False
        return handle, True

    def is_disconnect(self, error: DBAPIError) -> bool:
        return self._dialect.is_disconnect(error.orig, self._local.connection, None)

    def discard(self) -> None:
        """Close this thread's connection; its next read connects afresh."""
        local = self._local
        connection = local.connection
        del local.handle, local.connection
        try:
            connection.close()
        except self._dbapi_error:
            log.debug("closing a broken read connection failed", exc_info=True)

    def _connect(self, query: CompiledQuery, params: Mapping[str, Any]) -> Any:
        try:
            pooled = self._pool.connect()
            pooled.detach()
            connection = pooled.dbapi_connection
            if self._autocommit:
                connection.autocommit(True)
        except self._dbapi_error as error:
            raise DBAPIError.instance(
                query.sql, query.values(params), error, self._dbapi_error
            ) from error
        if self._reads_on_connection:
            # DATETIME columns as their text, which the store parses in C (as it does SQLite's):
            # mysqlclient's own conversion is Python, 1.3 µs a row, 40% of reading a page.
            datetime_type = self._dialect.loaded_dbapi.FIELD_TYPE.DATETIME
            connection.converter = {**connection.converter, datetime_type: str}
        local = self._local
        local.connection = connection
        # Else one cursor for all of the thread's reads: each execute() starts it afresh.
        local.handle = connection if self._reads_on_connection else connection.cursor()
        if self._recycle_s is not None:
            # Replaced before the server's wait_timeout would close it.
            local.recycle_at = time.monotonic() + self._recycle_s
        return local.handle


def _share_read_connections(engine: Engine, recycle_s: float | None) -> None:
    """One read connection per thread for every Reader of the engine (store and search alike),
    kept with the engine so that it goes when the engine goes."""
    engine.update_execution_options(**{READ_CONNECTIONS: ThreadConnections(engine, recycle_s)})


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

    _share_read_connections(engine, config.db_pool_recycle_s)
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
    _share_read_connections(engine, None)
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
