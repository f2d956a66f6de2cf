"""Read replicas: which server each read goes to, how far behind each replica is, and the
replication positions that give a client its own writes back from any replica or host.

A position is a MariaDB GTID list (`domain-server-sequence`, comma-separated per domain). After each
write's COMMIT the router reads the primary's `@@gtid_binlog_pos` on the same connection: at or
past the write, and past whatever the write read (a friendship another client had just made),
which the session's own `@@last_gtid` is not when the write changed no row. The HTTP layer
returns it in a header, and a read presenting it is served by a replica that has applied it (known
from the health check, or after a bounded MASTER_GTID_WAIT there), else by the primary.

Each worker checks every replica about once a second in a background thread: it reads the
primary's `@@gtid_binlog_pos`, then waits on the replica, at most FEED_REPLICA_MAX_LAG_MS, for that
position. The time the wait took is the replica's lag (no clocks compared, no table written); a
replica that does not get there in time, or does not answer, is out of rotation until a check
finds it caught up again.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from feedsvc.core.config import Config
from feedsvc.db.engines import create_replica_engine
from feedsvc.db.statements import READ_CONNECTIONS, CompiledQuery, ThreadConnections

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
# A GTID list as MariaDB writes it; each part's ranges are checked in parse_position.
POSITION_PATTERN = r"^[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20}(,[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20})*$"
POSITION_MAX_CHARS = 1000
_POSITION = re.compile(POSITION_PATTERN)
_MAX_ID = 2**32 - 1
_MAX_SEQUENCE = 2**64 - 1

REPLICA_LAG = Gauge(
    "feed_replica_lag_seconds",
    "How long the replica took to apply what the primary had committed at its last check"
    " (NaN: not answering)",
    ["replica"],
    multiprocess_mode="livemostrecent",
)
REPLICA_IN_ROTATION = Gauge(
    "feed_replica_in_rotation",
    "1 while the replica serves reads; 0 when it lags more than FEED_REPLICA_MAX_LAG_MS or fails",
    ["replica"],
    multiprocess_mode="livemostrecent",
)

# Evaluated left to right: the replica's applied position is read after the wait ended.
_WAIT = text("SELECT MASTER_GTID_WAIT(:position, :timeout), @@gtid_slave_pos")
_PRIMARY_POSITION = text("SELECT @@gtid_binlog_pos")

Position = dict[int, int]


def parse_position(token: str) -> Position | None:
    """Sequence number per replication domain; None for anything MariaDB could not have issued."""
    if len(token) > POSITION_MAX_CHARS or not _POSITION.fullmatch(token):
        return None
    position: Position = {}
    for gtid in token.split(","):
        domain, server, sequence = (int(part) for part in gtid.split("-"))
        if domain > _MAX_ID or server > _MAX_ID or sequence > _MAX_SEQUENCE:
            return None
        position[domain] = max(sequence, position.get(domain, 0))
    return position


def reached(applied: Mapping[int, int], wanted: Mapping[int, int]) -> bool:
    """Whether a server that applied `applied` has everything up to `wanted` (per domain)."""
    return all(applied.get(domain, 0) >= sequence for domain, sequence in wanted.items())


def replica_label(url: str) -> str:
    """host:port/database: names a replica in metrics and logs, never with credentials."""
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 3306}/{parsed.database or ''}"


class Replica:
    """One read replica: each thread's connection to it, and what the last check found."""

    def __init__(self, name: str, engine: Engine, recycle_s: float) -> None:
        self.name = name
        self.engine = engine
        self.connections = ThreadConnections(engine, recycle_s)
        self.in_rotation = False
        # What the replica is known to have applied: a read asking for no more needs no wait.
        self.applied: Position = {}


class ReplicaRouter:
    """An engine's read connections across the primary and its replicas (see ReadConnections).

    A read outside any request with a position goes to the next replica in rotation (none: the
    primary); a request with a position reads where it was found applied; a write transaction
    and the operator and background reads (primary_rows) read on the primary.
    """

    routes = True

    def __init__(
        self,
        primary: ThreadConnections,
        replicas: Sequence[Replica],
        primary_engine: Engine,
        max_lag_s: float,
        token_wait_s: float,
    ) -> None:
        self._primary = primary
        self.replicas = tuple(replicas)
        self._max_lag_s = max_lag_s
        self._token_wait_s = token_wait_s
        # Replaced whole by the health check: a reader sees one consistent tuple.
        self._serving: tuple[Replica, ...] = ()
        self._turns = itertools.count()
        self._local = threading.local()
        self._wait = CompiledQuery(primary_engine, _WAIT)
        self._primary_position = CompiledQuery(primary_engine, _PRIMARY_POSITION)
        self._stopping = threading.Event()
        self._checker: threading.Thread | None = None

    def rows(self, query: CompiledQuery, params: Mapping[str, Any]) -> Sequence[tuple[Any, ...]]:
        route = getattr(self._local, "route", None)
        if route is None:
            serving = self._serving
            if not serving:
                return self._primary.rows(query, params)
            route = serving[next(self._turns) % len(serving)]
        elif not isinstance(route, Replica):
            return self._primary.rows(query, params)
        try:
            return route.connections.rows(query, params)
        except OperationalError as error:
            # Stopped, unreachable or timing out: the primary answers now, the check decides later.
            self._take_out(route, error)
            return self._primary.rows(query, params)

    def primary_rows(
        self, query: CompiledQuery, params: Mapping[str, Any]
    ) -> Sequence[tuple[Any, ...]]:
        return self._primary.rows(query, params)

    def reads_on_primary(self) -> AbstractContextManager[None]:
        return self._pinned(self._primary)

    @contextmanager
    def _pinned(self, route: Replica | ThreadConnections) -> Iterator[None]:
        local = self._local
        before = getattr(local, "route", None)
        local.route = route
        try:
            yield
        finally:
            local.route = before

    def note_commit(self, conn: Connection) -> None:
        """Remember where the primary's log is after this COMMIT, for this request's response."""
        try:
            cursor = conn.connection.driver_connection.cursor()
            cursor.execute(self._primary_position.sql)
            (position,) = cursor.fetchone()
            cursor.close()
        except conn.dialect.loaded_dbapi.Error as error:
            # Committed all the same: the client gets no position, so bounded staleness.
            log.warning("cannot read the commit's replication position: %s", error)
            return
        self._local.written = position or None

    def primary_position(self) -> str | None:
        """Where the primary's replication stream is now (at or past every committed write);
        None when the primary does not answer."""
        try:
            ((position,),) = self._primary.rows(self._primary_position, {})
        except DBAPIError as error:
            log.warning("cannot read the primary's replication position: %s", error.orig)
            return None
        return position or None

    def begin_request(self, position: str | None) -> None:
        """Route this thread's reads until end_request: after `position` when one is given."""
        if position is not None:
            self._local.route = self._route_after(position)

    def end_request(self) -> str | None:
        """Forget this request's route; the position of the write it committed, if any."""
        local = self._local
        local.route = None
        written = getattr(local, "written", None)
        local.written = None
        return written

    def _route_after(self, token: str) -> Replica | ThreadConnections:
        """A replica that has applied `token` (waiting a little for one), else the primary."""
        wanted = parse_position(token)
        serving = self._serving
        # A domain named twice is no position MariaDB issues (nor one MASTER_GTID_WAIT takes).
        if wanted is None or len(wanted) != token.count(",") + 1 or not serving:
            return self._primary
        for replica in serving:
            if reached(replica.applied, wanted):
                return replica
        replica = serving[next(self._turns) % len(serving)]
        try:
            ((result, applied),) = replica.connections.rows(
                self._wait, {"position": token, "timeout": self._token_wait_s}
            )
        except OperationalError as error:
            self._take_out(replica, error)
            return self._primary
        if result != 0:
            return self._primary
        replica.applied = parse_position(applied) or replica.applied
        return replica

    def _take_out(self, replica: Replica, error: DBAPIError) -> None:
        if replica.in_rotation:
            log.warning("replica %s failed a read (%s): out of rotation", replica.name, error.orig)
        self._set_state(replica, in_rotation=False, lag_s=math.nan)

    def _set_state(self, replica: Replica, *, in_rotation: bool, lag_s: float) -> None:
        replica.in_rotation = in_rotation
        self._serving = tuple(each for each in self.replicas if each.in_rotation)
        REPLICA_LAG.labels(replica.name).set(lag_s)
        REPLICA_IN_ROTATION.labels(replica.name).set(int(in_rotation))

    def check(self) -> None:
        """Measure every replica's lag behind the primary's position now; update the rotation."""
        try:
            ((position,),) = self._primary.rows(self._primary_position, {})
        except DBAPIError as error:
            log.warning("replica check: the primary does not answer (%s)", error.orig)
            return
        for replica in self.replicas:
            started = time.monotonic()
            try:
                ((result, applied),) = replica.connections.rows(
                    self._wait, {"position": position, "timeout": self._max_lag_s}
                )
            except DBAPIError as error:
                if replica.in_rotation:
                    log.warning("replica %s does not answer (%s)", replica.name, error.orig)
                self._set_state(replica, in_rotation=False, lag_s=math.nan)
                continue
            lag_s = time.monotonic() - started
            caught_up = result == 0
            if caught_up != replica.in_rotation:
                log.warning(
                    "replica %s %s (lag %.3f s)",
                    replica.name,
                    "back in rotation" if caught_up else "lags: out of rotation",
                    lag_s,
                )
            replica.applied = parse_position(applied) or replica.applied
            self._set_state(replica, in_rotation=caught_up, lag_s=lag_s)

    def start(self) -> None:
        """Check once now, so the worker's first reads already use the replicas, then in the
        background about once a second; call it in the worker, after the fork."""
        self.check()
        self._checker = threading.Thread(target=self._check_forever, name="replica-check")
        self._checker.daemon = True
        self._checker.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        self._stopping.set()
        if self._checker is not None:
            self._checker.join(self._max_lag_s + CHECK_INTERVAL_S)
        for replica in self.replicas:
            replica.engine.dispose()

    def _check_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                self.check()
            except Exception:
                log.exception("replica check failed")
            self._stopping.wait(CHECK_INTERVAL_S)


def route_reads(config: Config, engine: Engine) -> ReplicaRouter:
    """Make the engine's reads go through a router over its replicas; before any Reader is made."""
    primary: ThreadConnections = engine.get_execution_options()[READ_CONNECTIONS]
    replicas = [
        Replica(
            replica_label(url),
            create_replica_engine(config, url),
            config.db_pool_recycle_s,
        )
        for url in config.database_replica_urls
    ]
    router = ReplicaRouter(
        primary,
        replicas,
        engine,
        max_lag_s=config.replica_max_lag_ms / 1000,
        token_wait_s=config.replica_token_wait_ms / 1000,
    )
    engine.update_execution_options(**{READ_CONNECTIONS: router})
    return router
