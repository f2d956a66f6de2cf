"""The durable outbox: work a post owes to other systems, committed with the post, delivered later.

A post's transaction calls `enqueue` for each sink that must hear of it (the search index, the
event stream), so the post and that promise commit together. Each worker runs an `OutboxRelay` with
one background thread per sink. Delivery is by lease: the worker holding a sink's row in
`outbox_lease` (renewed while it works, released when the backlog is empty) delivers that sink's
rows in id order, in batches, and deletes them only after the sink acknowledged the batch; it
renews the lease only every third of its period and keeps it through short idle gaps. Other workers
stand by and take the lease when it is free or has expired (a dead worker), so rows are never stuck
and two workers never race on the same rows; while another holds it, a stand-by looks a few times a
second, not at each of its posts, since the holder delivers them anyway. On failure the holder
keeps the rows and the lease and retries with capped exponential backoff, which spares a failing
sink. Delivery is at least once: a sink must make redelivery harmless (the search index uses the
post id as the document id; events carry the post id for consumers to deduplicate). Lease expiry is
judged by each worker's own clock: hosts sharing one MySQL database need clocks synchronised (NTP)
to well within the lease period.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import Connection, bindparam, delete, event, func, insert, or_, select, update
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import IntegrityError

from feedsvc.core.clock import utc_now
from feedsvc.core.protocols import OutboxRow, Sink
from feedsvc.db.engines import writer
from feedsvc.db.statements import CompiledQuery, run_in
from feedsvc.db.tables import outbox, outbox_lease

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
# Longer than any delivery may take, so a slow batch is not delivered twice by a second worker.
DEFAULT_LEASE_SECONDS = 30.0
# How often an idle worker looks for rows it was not woken for (posts made by other workers).
DEFAULT_POLL_SECONDS = 1.0
# How often the lease holder looks for rows while it keeps a sink's lease: posts made by other
# workers wake only their own relay, so this bounds their wait for delivery (a post is searchable
# within a second). After a partial batch the holder also waits this long, so that rows gather
# into batches and its own write (deleting what it delivered) takes the posts' write lock at most
# about 1 / DEFAULT_HELD_POLL_SECONDS times a second instead of once per post.
DEFAULT_HELD_POLL_SECONDS = 0.05
# How long a drained sink's lease is kept before it is handed back: under steady posting the
# holder keeps it, so a post costs one delete, not a take-and-release of the lease as well.
DEFAULT_IDLE_RELEASE_SECONDS = 2.0
# A worker that found rows but another worker holding the lease looks again after this long,
# whatever wakes it meanwhile: the holder polls every DEFAULT_HELD_POLL_SECONDS and keeps the
# lease for DEFAULT_IDLE_RELEASE_SECONDS after its last rows, so it delivers this worker's posts.
# Without it each post woke the stand-by's thread for two queries, in every worker but one.
DEFAULT_STANDBY_SECONDS = 0.25
DEFAULT_MIN_BACKOFF_SECONDS = 0.5
DEFAULT_MAX_BACKOFF_SECONDS = 30.0
# How often the backlog gauge is refreshed while a sink is being drained.
BACKLOG_REPORT_SECONDS = 1.0

# The outbox INSERT compiled for each engine's dialect: one or two engines in a worker.
_INSERTS: dict[Dialect, CompiledQuery] = {}

# Set on a pooled connection's info by `enqueue`; read when the connection returns to the pool.
_PENDING_SINKS = "feedsvc.adapters.outbox.pending_sinks"

BACKLOG = Gauge(
    "feed_outbox_backlog",
    "Outbox rows waiting for delivery, per sink",
    ["sink"],
    multiprocess_mode="livemostrecent",
)
DELIVERED = Counter("feed_outbox_delivered", "Outbox rows delivered and acknowledged", ["sink"])
FAILURES = Counter("feed_outbox_delivery_failures", "Batches a sink failed to take", ["sink"])

_INSERT = insert(outbox).values(
    sink=bindparam("sink"),
    key=bindparam("key"),
    payload=bindparam("payload"),
    created=bindparam("created"),
)
_NEXT_BATCH = (
    select(outbox.c.id, outbox.c.key, outbox.c.payload)
    .where(outbox.c.sink == bindparam("sink"))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
_ANY_ROW = select(outbox.c.id).where(outbox.c.sink == bindparam("sink")).limit(1)
_COUNT_ALL = select(func.count()).select_from(outbox)
_COUNT = _COUNT_ALL.where(outbox.c.sink == bindparam("sink"))
# By id, never by range: a row with a lower id may still be committing in another transaction.
_DELETE = delete(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))

_READ_LEASE = select(outbox_lease.c.owner, outbox_lease.c.expires).where(
    outbox_lease.c.sink == bindparam("lease_sink")
)
_INSERT_LEASE = insert(outbox_lease).values(
    sink=bindparam("lease_sink"), owner=bindparam("me"), expires=bindparam("until")
)
_TAKE_LEASE = (
    update(outbox_lease)
    .where(
        outbox_lease.c.sink == bindparam("lease_sink"),
        or_(outbox_lease.c.owner == bindparam("me"), outbox_lease.c.expires < bindparam("now")),
    )
    .values(owner=bindparam("me"), expires=bindparam("until"))
)
_RELEASE_LEASE = (
    update(outbox_lease)
    .where(outbox_lease.c.sink == bindparam("lease_sink"), outbox_lease.c.owner == bindparam("me"))
    .values(expires=bindparam("now"))
)


def enqueue(conn: Connection, sink: str, payload: bytes, key: str | None = None) -> None:
    """Queue a delivery inside the caller's transaction: it commits, or vanishes, with the post."""
    params = {"sink": sink, "key": key, "payload": payload, "created": utc_now()}
    run_in(conn, _compiled_insert(conn), params)
    conn.info.setdefault(_PENDING_SINKS, set()).add(sink)


def backlog(engine: Engine, sink: str | None = None) -> int:
    """Outbox rows waiting for delivery: one sink's, or every sink's."""
    with engine.connect() as conn:
        if sink is None:
            return conn.execute(_COUNT_ALL).scalar_one()
        return conn.execute(_COUNT, {"sink": sink}).scalar_one()


def _compiled_insert(conn: Connection) -> CompiledQuery:
    """The INSERT compiled once per engine (its dialect, which `writer` copies share): SQLAlchemy's
    own execute was a large share of what an enqueue cost."""
    query = _INSERTS.get(conn.dialect)
    if query is None:
        query = _INSERTS[conn.dialect] = CompiledQuery(conn.engine, _INSERT)
    return query


def worker_identity() -> str:
    """Unique per process start, so a restarted worker never takes an old lease for its own."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class OutboxRelay:
    """One worker's delivery threads, one per sink; start it in the worker, after fork."""

    def __init__(
        self,
        engine: Engine,
        sinks: Sequence[Sink],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        held_poll_seconds: float = DEFAULT_HELD_POLL_SECONDS,
        held_poll_seconds_by_sink: Mapping[str, float] | None = None,
        idle_release_seconds: float = DEFAULT_IDLE_RELEASE_SECONDS,
        standby_seconds: float = DEFAULT_STANDBY_SECONDS,
        min_backoff_seconds: float = DEFAULT_MIN_BACKOFF_SECONDS,
        max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
    ) -> None:
        self._engine = engine
        owner = worker_identity()
        held_polls = held_poll_seconds_by_sink or {}
        self._deliveries = {
            sink.name: _SinkDelivery(
                engine,
                sink,
                _Lease(engine, sink.name, owner, timedelta(seconds=lease_seconds)),
                batch_size=batch_size,
                poll_seconds=poll_seconds,
                held_poll_seconds=held_polls.get(sink.name, held_poll_seconds),
                idle_release_seconds=idle_release_seconds,
                standby_seconds=standby_seconds,
                backoff=_Backoff(min_backoff_seconds, max_backoff_seconds),
            )
            for sink in sinks
        }
        self._started = False

    def start(self) -> None:
        if self._started or not self._deliveries:
            return
        self._started = True
        event.listen(self._engine, "checkin", self._on_checkin)
        for delivery in self._deliveries.values():
            delivery.start()
        # Hand the leases over at once when the worker exits, instead of after they expire.
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        if not self._started:
            return
        self._started = False
        event.remove(self._engine, "checkin", self._on_checkin)
        for delivery in self._deliveries.values():
            delivery.stop()
        for delivery in self._deliveries.values():
            delivery.join(timeout)
        atexit.unregister(self.stop)

    def wake(self, sink: str | None = None) -> None:
        """Deliver now rather than at the next poll: rows were just committed here."""
        for name, delivery in self._deliveries.items():
            if sink is None or name == sink:
                delivery.wake()

    def _on_checkin(self, _dbapi_connection: Any, record: Any) -> None:
        # A connection comes back to the pool after its transaction ended: wake the sinks that
        # `enqueue` marked on it (after a rollback the wake finds nothing, which is harmless).
        sinks = record.info.pop(_PENDING_SINKS, None) if record is not None else None
        for sink in sinks or ():
            self.wake(sink)


class _Backoff:
    """Capped exponential delays between failed attempts: 0.5 s, 1 s, 2 s ... 30 s."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._next = minimum

    def failed(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay

    def succeeded(self) -> None:
        self._next = self._minimum


class _Lease:
    """This worker's claim on delivering one sink, kept in the outbox_lease table."""

    def __init__(self, engine: Engine, sink: str, owner: str, duration: timedelta) -> None:
        self._writer = writer(engine)
        self._engine = engine
        self._sink = sink
        self._owner = owner
        self._duration = duration
        self._renewed_at = 0.0
        self.held = False

    @property
    def renew_every(self) -> float:
        return self._duration.total_seconds() / 3

    def ensure(self) -> bool:
        """Hold the lease, writing to the database only to take it or when renewal is due."""
        if self.held and time.monotonic() - self._renewed_at < self.renew_every:
            return True
        return self.acquire()

    def acquire(self) -> bool:
        """Take the lease if free or expired, or renew it if ours; False while another holds it."""
        renewed_at = time.monotonic()
        now = utc_now()
        with self._engine.connect() as conn:
            current = conn.execute(_READ_LEASE, {"lease_sink": self._sink}).first()
        if current is not None and current.owner != self._owner and current.expires > now:
            self.held = False
            return False
        params = {
            "lease_sink": self._sink,
            "me": self._owner,
            "now": now,
            "until": now + self._duration,
        }
        try:
            with self._writer.begin() as conn:
                if current is None:
                    conn.execute(_INSERT_LEASE, params)
                    self.held = True
                else:
                    self.held = conn.execute(_TAKE_LEASE, params).rowcount == 1
        except IntegrityError:
            self.held = False  # another worker created the lease row first
        if self.held:
            self._renewed_at = renewed_at
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with self._writer.begin() as conn:
            conn.execute(
                _RELEASE_LEASE, {"lease_sink": self._sink, "me": self._owner, "now": utc_now()}
            )


class _SinkDelivery:
    """The loop that drains one sink's rows while this worker holds its lease."""

    def __init__(
        self,
        engine: Engine,
        sink: Sink,
        lease: _Lease,
        *,
        batch_size: int,
        poll_seconds: float,
        held_poll_seconds: float,
        idle_release_seconds: float,
        standby_seconds: float,
        backoff: _Backoff,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._sink = sink
        self._lease = lease
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._held_poll_seconds = held_poll_seconds
        self._idle_release_seconds = idle_release_seconds
        self._standby_seconds = standby_seconds
        self._drained_at: float | None = None
        self._backoff = backoff
        self._backlog = BACKLOG.labels(sink.name)
        self._delivered = DELIVERED.labels(sink.name)
        self._failures = FAILURES.labels(sink.name)
        self._backlog_reported = 0.0
        self._woken = threading.Event()
        # False while a wake would not cut the current wait short: then posts skip setting the
        # event, which saves the thread a switch for nothing (the wait ends in a step anyway).
        self._wakes_wanted = True
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outbox-{sink.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def wake(self) -> None:
        if self._wakes_wanted:
            self._woken.set()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    pause, interruptible = self._step()
                except Exception:
                    log.exception("outbox %s: relay step failed; retrying", self._sink.name)
                    pause, interruptible = self._backoff.failed(), False
                self._wait(pause, interruptible)
        finally:
            try:
                self._lease.release()
            except Exception:
                log.exception("outbox %s: could not release the lease", self._sink.name)

    def _step(self) -> tuple[float, bool]:
        """Deliver at most one batch; returns how long to wait next and whether a wake cuts it."""
        if not self._lease.held and not self._has_rows():
            return self._poll_seconds, True
        if not self._lease.ensure():
            return self._standby_seconds, False
        rows = self._next_batch()
        if not rows:
            return self._drained()
        self._drained_at = None
        try:
            self._sink.deliver(rows)
        except Exception as error:
            self._failures.inc()
            delay = self._backoff.failed()
            log.warning(
                "outbox %s: delivery of %d rows failed, retrying in %.1f s: %s",
                self._sink.name,
                len(rows),
                delay,
                error,
            )
            self._report_backlog(force=True)
            return delay, False
        self._backoff.succeeded()
        with self._writer.begin() as conn:
            conn.execute(_DELETE, {"ids": [row.id for row in rows]})
        self._delivered.inc(len(rows))
        self._report_backlog()
        if len(rows) < self._batch_size:
            return self._held_poll_seconds, False  # let the next batch gather, whatever wakes
        return 0.0, True

    def _drained(self) -> tuple[float, bool]:
        """Nothing to deliver: keep the lease for a while, then hand it to whoever posts next."""
        now = time.monotonic()
        if self._drained_at is None:
            self._drained_at = now
            self._report_backlog(force=True)
        if now - self._drained_at < self._idle_release_seconds:
            return min(self._held_poll_seconds, self._idle_release_seconds), True
        self._drained_at = None
        self._lease.release()
        # A row committed while we released may have had its wake refused: look once more.
        return (0.0 if self._has_rows() else self._poll_seconds), True

    def _wait(self, seconds: float, interruptible: bool) -> None:
        """Sleep, renewing a held lease; during a backoff new posts do not cut the wait short."""
        deadline = time.monotonic() + seconds
        self._wakes_wanted = interruptible
        try:
            while not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if self._woken.wait(min(remaining, self._lease.renew_every)):
                    self._woken.clear()
                    if interruptible or self._stopping.is_set():
                        return
                elif self._lease.held:
                    self._lease.ensure()
        finally:
            # Wakes while the next step runs must count: its rows may be the ones it misses.
            self._wakes_wanted = True

    def _has_rows(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(_ANY_ROW, {"sink": self._sink.name}).first() is not None

    def _next_batch(self) -> list[OutboxRow]:
        params = {"sink": self._sink.name, "limit": self._batch_size}
        with self._engine.connect() as conn:
            rows = conn.execute(_NEXT_BATCH, params).all()
        return [OutboxRow(row.id, row.key, bytes(row.payload)) for row in rows]

    def _report_backlog(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._backlog_reported >= BACKLOG_REPORT_SECONDS:
            self._backlog.set(backlog(self._engine, self._sink.name))
            self._backlog_reported = now
