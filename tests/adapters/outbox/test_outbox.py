"""The outbox relay against a real SQLite database and fake sinks: order, leases, backoff."""

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Engine

from feedsvc.adapters.outbox import OutboxRelay, _Backoff, backlog, enqueue
from feedsvc.core.clock import utc_now
from feedsvc.core.config import Config
from feedsvc.core.protocols import OutboxRow
from feedsvc.db.engines import create_engine, writer
from feedsvc.db.tables import metadata, outbox_lease

DEADLINE_SECONDS = 20.0


class RecordingSink:
    """Remembers every row delivered to it; fails the first `failures` batches."""

    def __init__(self, name: str, *, failures: int = 0, log: list[int] | None = None) -> None:
        self.name = name
        self.delivered: list[int] = [] if log is None else log
        self.attempts = 0
        self.failures = failures
        self.attempt_times: list[float] = []
        self._lock = threading.Lock()

    def deliver(self, rows: list[OutboxRow]) -> None:
        with self._lock:
            self.attempts += 1
            self.attempt_times.append(time.time())
            if self.attempts <= self.failures:
                raise ConnectionError("sink is down")
            self.delivered.extend(int(row.payload) for row in rows)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(Config(data_dir=tmp_path))
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def relays() -> Iterator[list[OutboxRelay]]:
    """Relays a test starts; all stopped at the end, whatever happened."""
    started: list[OutboxRelay] = []
    yield started
    for relay in started:
        relay.stop()


def post(engine: Engine, sink: str, numbers: range) -> None:
    with writer(engine).begin() as conn:
        for number in numbers:
            enqueue(conn, sink, str(number).encode(), key=str(number))


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.02)


def start(relays: list[OutboxRelay], engine: Engine, *sinks: RecordingSink, **options) -> None:
    relay = OutboxRelay(engine, sinks, **options)
    relay.start()
    relays.append(relay)


def test_rows_are_delivered_in_id_order_exactly_once_then_deleted(engine, relays):
    sink = RecordingSink("order")
    post(engine, "order", range(1000))
    start(relays, engine, sink, batch_size=64)
    wait_until(lambda: len(sink.delivered) >= 1000)
    wait_until(lambda: backlog(engine, "order") == 0)
    assert sink.delivered == list(range(1000))


def test_a_rolled_back_transaction_delivers_nothing(engine, relays):
    sink = RecordingSink("rollback")
    start(relays, engine, sink)
    with pytest.raises(RuntimeError), writer(engine).begin() as conn:
        enqueue(conn, "rollback", b"1")
        raise RuntimeError("the post failed")
    post(engine, "rollback", range(2, 3))
    wait_until(lambda: sink.delivered == [2])
    # The relay deletes a batch's rows just after the sink took it.
    wait_until(lambda: backlog(engine, "rollback") == 0)


def test_rows_of_other_sinks_are_left_alone(engine, relays):
    sink = RecordingSink("mine")
    post(engine, "theirs", range(5))
    post(engine, "mine", range(5, 8))
    start(relays, engine, sink)
    wait_until(lambda: sink.delivered == [5, 6, 7])
    assert backlog(engine, "theirs") == 5


def test_a_commit_wakes_the_relay_without_waiting_for_the_poll(engine, relays):
    sink = RecordingSink("wake")
    start(relays, engine, sink, poll_seconds=3600)
    time.sleep(0.1)  # let the thread reach its long idle wait
    post(engine, "wake", range(3))
    wait_until(lambda: sink.delivered == [0, 1, 2])


def test_failed_batches_stay_queued_and_are_retried_until_delivered(engine, relays):
    sink = RecordingSink("flaky", failures=3)
    post(engine, "flaky", range(10))
    start(relays, engine, sink, min_backoff_seconds=0.05, max_backoff_seconds=0.2)
    wait_until(lambda: sink.attempts >= 2)
    assert backlog(engine, "flaky") == 10
    assert REGISTRY.get_sample_value("feed_outbox_backlog", {"sink": "flaky"}) == 10
    wait_until(lambda: sink.delivered == list(range(10)))
    wait_until(lambda: backlog(engine, "flaky") == 0)
    assert REGISTRY.get_sample_value("feed_outbox_delivery_failures_total", {"sink": "flaky"}) == 3
    assert REGISTRY.get_sample_value("feed_outbox_delivered_total", {"sink": "flaky"}) == 10


def test_retries_back_off_exponentially_up_to_the_cap():
    backoff = _Backoff(0.5, 30.0)
    delays = [backoff.failed() for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    backoff.succeeded()
    assert backoff.failed() == 0.5


def test_new_posts_do_not_cut_a_backoff_short(engine, relays):
    sink = RecordingSink("patient", failures=1000)
    post(engine, "patient", range(1))
    start(relays, engine, sink, min_backoff_seconds=2.0, max_backoff_seconds=2.0)
    wait_until(lambda: sink.attempts >= 1)
    for number in range(1, 20):
        post(engine, "patient", range(number, number + 1))
    wait_until(lambda: sink.attempts >= 2)
    # Every post woke the relay, yet the second attempt still waited out the backoff.
    assert sink.attempt_times[1] - sink.attempt_times[0] >= 2.0


def test_one_worker_at_a_time_delivers_and_order_holds_across_workers(engine, relays):
    shared_log: list[int] = []
    sinks = [RecordingSink("shared", log=shared_log) for _ in range(3)]
    for sink in sinks:
        start(relays, engine, sink, batch_size=16, poll_seconds=0.05)
    for batch in range(20):
        post(engine, "shared", range(batch * 25, batch * 25 + 25))
    wait_until(lambda: len(shared_log) >= 500)
    wait_until(lambda: backlog(engine, "shared") == 0)
    assert shared_log == list(range(500))


def test_an_expired_lease_of_a_dead_worker_is_taken_over(engine, relays):
    dead_until = utc_now() + timedelta(seconds=1.5)
    with writer(engine).begin() as conn:
        conn.execute(insert(outbox_lease).values(sink="orphan", owner="dead", expires=dead_until))
    post(engine, "orphan", range(4))
    sink = RecordingSink("orphan")
    start(relays, engine, sink, poll_seconds=0.05)
    wait_until(lambda: sink.delivered == [0, 1, 2, 3])
    assert sink.attempt_times[0] >= dead_until.replace(tzinfo=UTC).timestamp()
    with engine.connect() as conn:
        owner = conn.execute(select(outbox_lease.c.owner)).scalar_one()
    assert owner != "dead"


def test_stopping_hands_the_lease_over_at_once(engine, relays):
    stuck = RecordingSink("handover", failures=10**6)
    post(engine, "handover", range(2))
    start(relays, engine, stuck, lease_seconds=3600, min_backoff_seconds=3600)
    wait_until(lambda: stuck.attempts == 1)
    relays[0].stop()
    successor = RecordingSink("handover")
    start(relays, engine, successor, lease_seconds=3600, poll_seconds=0.05)
    wait_until(lambda: successor.delivered == [0, 1])


def test_the_lease_holder_delivers_rows_other_workers_committed_without_the_idle_poll(
    engine, relays, tmp_path
):
    sink = RecordingSink("elsewhere")
    start(relays, engine, sink, poll_seconds=3600, idle_release_seconds=3600)
    post(engine, "elsewhere", range(1))
    wait_until(lambda: sink.delivered == [0])
    # Another worker's engine: its commits wake only its own relay, never this one.
    other_worker = create_engine(Config(data_dir=tmp_path))
    try:
        post(other_worker, "elsewhere", range(1, 3))
    finally:
        other_worker.dispose()
    wait_until(lambda: sink.delivered == [0, 1, 2])


def test_a_stand_by_worker_does_not_query_for_each_post_it_commits(engine, relays, tmp_path):
    shared_log: list[int] = []
    start(relays, engine, RecordingSink("standby", log=shared_log), idle_release_seconds=3600)
    post(engine, "standby", range(1))
    wait_until(lambda: shared_log == [0])
    other_worker = create_engine(Config(data_dir=tmp_path))
    queries: list[str] = []
    event.listen(other_worker, "before_cursor_execute", lambda *args: queries.append(args[2]))
    try:
        start(relays, other_worker, RecordingSink("standby", log=shared_log))
        for number in range(1, 201):
            post(other_worker, "standby", range(number, number + 1))  # each commit wakes its relay
            time.sleep(0.005)
        wait_until(lambda: len(shared_log) == 201)
        relays[-1].stop()
    finally:
        other_worker.dispose()
    assert shared_log == list(range(201))
    # Two queries per wake would be 400; the stand-by looks a few times a second instead.
    assert len(queries) < 100, queries


def test_a_sink_with_a_longer_held_poll_gets_its_rows_gathered_into_one_batch(engine, relays):
    gathering, prompt = RecordingSink("gathering"), RecordingSink("prompt")
    start(relays, engine, gathering, prompt, held_poll_seconds_by_sink={"gathering": 2.0})
    post(engine, "gathering", range(1))
    wait_until(lambda: gathering.delivered == [0])
    for number in range(1, 11):
        post(engine, "gathering", range(number, number + 1))  # each commit wakes the relay
    wait_until(lambda: gathering.delivered == list(range(11)))
    assert gathering.attempts == 2
    post(engine, "prompt", range(3))  # other sinks keep the default poll
    wait_until(lambda: prompt.delivered == [0, 1, 2])
