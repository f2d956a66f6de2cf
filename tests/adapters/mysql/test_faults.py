"""Database faults: 503 JSON with Retry-After instead of hangs, recovery without a restart."""

import logging
import signal
import threading
import time

import pytest
import sqlalchemy as sa
from falcon.testing import TestClient

from feedsvc.compose.service import build_app, build_service
from feedsvc.core.config import Config
from feedsvc.db import engines
from feedsvc.db.tables import inbound, outbound, participant
from tests.support.api import requests_of_every_kind, simulate
from tests.support.mysql import row_count

# Only there so that a hang fails the test instead of blocking the run; not a speed assertion.
HANG_DEADLINE_S = 15.0


def assert_unavailable(result):
    assert result.status_code == 503, result.text
    assert result.headers["content-type"].startswith("application/json")
    assert result.json["title"] == "Database unavailable"
    assert int(result.headers["retry-after"]) >= 1


def friends_through_the_app(database_url: str) -> tuple[Config, TestClient, dict, dict]:
    """Ada and Bob, friends, made through the real app on that database."""
    config = Config.from_env({"FEED_DATABASE_URL": database_url})
    client = TestClient(build_app(config))
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json
    bob = client.simulate_post("/participant", json={"name": "Bob"}).json
    client.simulate_post(f"{ada['link']}/friends", json={"to": bob["link"]})
    return config, client, ada, bob


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "crashed"]
)
def test_database_down_answers_503_and_the_same_app_recovers(private_mariadb, stop_signal):
    config, client, ada, bob = friends_through_the_app(private_mariadb.url)
    client.simulate_post(f"{ada['link']}/outbound", json={"subject": "s", "story": "a story"})

    private_mariadb.stop(stop_signal)
    slowest = 0.0
    for method, path, body in requests_of_every_kind(ada, bob):
        started = time.monotonic()
        assert_unavailable(simulate(client, method, path, body))
        slowest = max(slowest, time.monotonic() - started)
    print(f"slowest 503 while the database was down: {slowest:.3f} s")
    assert slowest < HANG_DEADLINE_S

    assert client.simulate_get("/health").status_code == 200  # alive, so nobody restarts it

    private_mariadb.start()
    assert client.simulate_get("/ready").status_code == 200
    assert client.simulate_get(ada["link"]).status_code == 200
    assert client.simulate_get(f"{bob['link']}/inbound").json[0]["story"] == "a story"
    again = client.simulate_post(f"{ada['link']}/outbound", json={"subject": "s", "story": "back"})
    assert again.status_code == 200, again.text
    # The post refused while the database was down was not half-written.
    assert row_count(config.database_url, outbound) == 2
    assert row_count(config.database_url, inbound) == 2


def test_a_worker_started_while_the_database_is_down_serves_once_it_is_back(private_mariadb):
    config = Config.from_env({"FEED_DATABASE_URL": private_mariadb.url})
    private_mariadb.stop()

    client = TestClient(build_app(config))
    assert_unavailable(client.simulate_post("/participant", json={"name": "Ada"}))

    private_mariadb.start()
    assert client.simulate_post("/participant", json={"name": "Ada"}).status_code == 200


def test_an_exhausted_pool_answers_503_to_writes_instead_of_waiting_and_reads_never_wait(
    mariadb_url,
):
    config = Config.from_env(
        {
            "FEED_DATABASE_URL": mariadb_url,
            "FEED_DB_POOL_SIZE": "1",
            "FEED_DB_MAX_OVERFLOW": "0",
            "FEED_DB_POOL_TIMEOUT": "0.2",
        }
    )
    service = build_service(config)
    client = TestClient(service.app)
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json
    try:
        with service.engine.connect():  # the pool's only connection, held by someone else
            assert_unavailable(client.simulate_post("/participant", json={"name": "Bob"}))
            # Each serving thread reads on a connection of its own, outside the pool.
            assert client.simulate_get(ada["link"]).status_code == 200
        assert client.simulate_post("/participant", json={"name": "Bob"}).status_code == 200
    finally:
        service.close()


def test_a_post_that_times_out_on_a_row_lock_is_retried_not_failed(mariadb_url, caplog):
    caplog.set_level(logging.INFO, logger="feedsvc.db.retries")
    config, client, ada, bob = friends_through_the_app(mariadb_url)

    blocker = engines.create_engine(config)
    locked = threading.Event()

    def hold_the_sender_row() -> None:
        # The post's foreign-key check must wait for this lock past innodb_lock_wait_timeout.
        with blocker.begin() as conn:
            conn.exec_driver_sql(f"SELECT id FROM participant WHERE id = {ada['id']} FOR UPDATE")
            locked.set()
            time.sleep(1.5)

    holder = threading.Thread(target=hold_the_sender_row)
    holder.start()
    try:
        assert locked.wait(HANG_DEADLINE_S)
        result = client.simulate_post(
            f"{ada['link']}/outbound", json={"subject": "s", "story": "x"}
        )
    finally:
        holder.join(HANG_DEADLINE_S)
        blocker.dispose()

    assert result.status_code == 200, result.text
    assert "social_broadcast: lock conflict" in caplog.text  # it did wait, time out, retry
    assert row_count(config.database_url, outbound) == 1
    assert client.simulate_get(f"{bob['link']}/inbound").json[0]["story"] == "x"


def test_a_frozen_database_answers_503_after_the_timeouts_then_recovers(private_mariadb):
    """SIGSTOP: the socket stays open but nothing answers, the case only timeouts can end."""
    config = Config.from_env({"FEED_DATABASE_URL": private_mariadb.url})
    client = TestClient(build_app(config))
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json

    assert private_mariadb.process is not None
    private_mariadb.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert_unavailable(client.simulate_get(ada["link"]))  # pooled: read timeout
        assert_unavailable(client.simulate_get(ada["link"]))  # new connection: connect timeout
        elapsed = time.monotonic() - started
    finally:
        private_mariadb.process.send_signal(signal.SIGCONT)
    print(f"two 503s from a frozen database took {elapsed:.2f} s")
    assert elapsed < HANG_DEADLINE_S

    assert client.simulate_get(ada["link"]).status_code == 200


def test_a_post_chosen_as_deadlock_victim_is_retried_not_failed(mariadb_url, caplog):
    caplog.set_level(logging.INFO, logger="feedsvc.db.retries")
    config, client, ada, bob = friends_through_the_app(mariadb_url)
    other = engines.create_engine(config)
    outcome = {}

    def post() -> None:
        body = {"subject": "s", "story": "survives a deadlock"}
        outcome["result"] = client.simulate_post(f"{ada['link']}/outbound", json=body)

    poster = threading.Thread(target=post)
    try:
        with other.begin() as conn:
            # Heavier than the post (50 rows written), so InnoDB rolls the post back, not this.
            conn.execute(sa.insert(participant), [{"name": f"w{i}"} for i in range(50)])
            conn.exec_driver_sql(f"SELECT id FROM participant WHERE id = {bob['id']} FOR UPDATE")
            poster.start()
            # The post has written its outbound row and now waits for Bob's row (its fan-out).
            wait_for_lock_wait(other)
            conn.exec_driver_sql("SELECT id FROM outbound FOR UPDATE")  # waits for the post
    finally:
        poster.join(HANG_DEADLINE_S)
        other.dispose()

    result = outcome["result"]
    assert result.status_code == 200, result.text
    assert "social_broadcast: lock conflict ((1213" in caplog.text
    inbound_of_bob = client.simulate_get(f"{bob['link']}/inbound").json
    assert [item["story"] for item in inbound_of_bob] == ["survives a deadlock"]


def wait_for_lock_wait(engine) -> None:
    """Until a transaction in this test's database waits for a row lock (polled, not slept)."""
    deadline = time.monotonic() + HANG_DEADLINE_S
    while time.monotonic() < deadline:
        # InnoDB refreshes this table only after 0.1 s without readers: poll slower than that.
        time.sleep(0.2)
        with engine.connect() as conn:
            waiting = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM information_schema.innodb_trx AS trx"
                " JOIN information_schema.processlist AS p ON p.id = trx.trx_mysql_thread_id"
                " WHERE trx.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
            ).scalar_one()
        if waiting:
            return
    raise AssertionError("the post never waited for the lock")
