"""Compiled statements run straight on DB-API cursors: the fast path of every request."""

import logging
import threading
import time
from collections.abc import Callable, Mapping
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
    """Runs compiled reads straight on a DB-API cursor that each thread keeps for itself.

    SQLAlchemy's per-execution machinery costs several times the query itself on the hot read
    paths, and a pooled checkout costs a ping and a rollback, two round trips per read. So each
    thread owns one read connection, outside the pool (in autocommit on MySQL, each SELECT its
    own transaction): a read is one statement. A server that closed it since its last use (KILL,
    wait_timeout, restart, failover) costs one retry on a fresh connection, not an error. With
    read replicas configured, the engine's read connections are feedsvc.db.replicas' router,
    which sends each read to a replica or the primary.
    """

    rows: Callable[[CompiledQuery, Mapping[str, Any]], list[tuple[Any, ...]]]
    # The same on the primary whatever the router would choose: for operator and background work.
    primary_rows: Callable[[CompiledQuery, Mapping[str, Any]], list[tuple[Any, ...]]]

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

    def rows(self, query: CompiledQuery, params: Mapping[str, Any]) -> list[tuple[Any, ...]]: ...

    def primary_rows(
        self, query: CompiledQuery, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]: ...


class ThreadConnections:
    """The read connection of each thread of one engine, made on its first use (after the fork)
    from a pool of its own, so that it never waits for the writers' connections."""

    def __init__(self, engine: Engine, recycle_s: float | None) -> None:
        self._pool = engine.pool.recreate()
        self._dialect = engine.dialect
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        self._autocommit = engine.dialect.name != "sqlite"
        self._recycle_s = recycle_s
        self._local = threading.local()

    def rows(self, query: CompiledQuery, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a read on this thread's connection, once more on a fresh one if it was closed."""
        cursor, reused = self.cursor(query, params)
        try:
            return query.run(cursor, params).fetchall()
        except DBAPIError as error:
            if not (reused and self.is_disconnect(error)):
                raise
            self.discard()
        cursor, _ = self.cursor(query, params)
        return query.run(cursor, params).fetchall()

    primary_rows = rows
    # Every read is on the primary already: writes need nothing from this class.
    routes = False

    def reads_on_primary(self) -> AbstractContextManager[None]:
        return nullcontext()

    def note_commit(self, conn: Connection) -> None:
        """Nothing to note: there are no replicas to catch up."""

    def cursor(self, query: CompiledQuery, params: Mapping[str, Any]) -> tuple[Any, bool]:
        """This thread's cursor, and whether it served before (False: just connected)."""
        local = self._local
        try:
            cursor = local.cursor
        except AttributeError:
            return self._connect(query, params), False
        if self._recycle_s is not None and time.monotonic() > local.recycle_at:
            self.discard()
            return self._connect(query, params), False
        return cursor, True

    def is_disconnect(self, error: DBAPIError) -> bool:
        return self._dialect.is_disconnect(error.orig, self._local.connection, None)

    def discard(self) -> None:
        """Close this thread's connection; its next read connects afresh."""
        local = self._local
        connection = local.connection
        del local.cursor, local.connection
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
        local = self._local
        local.connection = connection
        # One cursor for all of the thread's reads: each execute() starts it afresh.
        local.cursor = connection.cursor()
        if self._recycle_s is not None:
            # Replaced before the server's wait_timeout would close it.
            local.recycle_at = time.monotonic() + self._recycle_s
        return local.cursor


def share_read_connections(engine: Engine, recycle_s: float | None) -> None:
    """One read connection per thread for every Reader of the engine (store and search alike),
    kept with the engine so that it goes when the engine goes."""
    engine.update_execution_options(**{READ_CONNECTIONS: ThreadConnections(engine, recycle_s)})
