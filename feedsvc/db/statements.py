"""Compiled statements run straight on DB-API cursors: the fast path of every request."""

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

log = logging.getLogger(__name__)

READ_CONNECTIONS = "feed_read_connections"


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
    work was a large share of that time. Returns the cursor, for rowcount, lastrowid or fetchone().
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
    read replicas configured, the engine's read connections are feedsvc.db.replicas' router,
    which sends each read to a replica or the primary.
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
            # mysqlclient's own conversion is Python, a large share of reading a page (README:
            # MySQL / MariaDB).
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


def share_read_connections(engine: Engine, recycle_s: float | None) -> None:
    """One read connection per thread for every Reader of the engine (store and search alike),
    kept with the engine so that it goes when the engine goes."""
    engine.update_execution_options(**{READ_CONNECTIONS: ThreadConnections(engine, recycle_s)})
