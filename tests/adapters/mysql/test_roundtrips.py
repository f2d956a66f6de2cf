"""Round trips on MySQL: one statement per read, the fewest per write, and no pre-ping to lean on:
a connection the server closed between requests costs a retry, never a failed request."""

import time

import pytest
import sqlalchemy as sa
from falcon.testing import TestClient

from feedsvc.adapters.outbox import OutboxRelay, enqueue
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_app, build_service
from feedsvc.core.config import Config
from feedsvc.core.protocols import OutboxRow
from feedsvc.db import engines, retries
from feedsvc.db.tables import friendship, inbound, outbound
from tests.support.api import requests_of_every_kind, simulate
from tests.support.mysql import RoundTrips, kill_connections, row_count, set_wait_timeout

FRIENDS = 4
REPEATS = 20
# Longer than the 1 s wait_timeout the tests give a server: its idle connections are closed.
IDLE_PAST_WAIT_TIMEOUT_S = 1.5
# Only there so that a hang fails the test instead of blocking the run; not a speed assertion.
HANG_DEADLINE_S = 30.0


def ada_and_bob(send):
    """Ada and her friend Bob, whose inbound holds a story of hers."""
    ada = send("POST", "/participant", {"name": "Ada"})
    bob = send("POST", "/participant", {"name": "Bob"})
    send("POST", f"{ada['link']}/friends", {"to": bob["link"]})
    send("POST", f"{ada['link']}/outbound", {"subject": "s", "story": "a story"})
    return ada, bob


def in_process(client):
    def send(method, path, body):
        result = simulate(client, method, path, body)
        assert result.status_code == 200, (method, path, result.status_code, result.text)
        return result.json

    return send


def over_http(server):
    def send(method, path, body):
        response = server.request(method, path, body)
        assert response.status == 200, (method, path, response.status, response.body)
        return response.json

    return send


def test_each_read_is_one_statement_and_a_post_three(private_mariadb):
    config = Config.from_env({"FEED_DATABASE_URL": private_mariadb.url})
    client = TestClient(build_app(config))
    send = in_process(client)
    ada = send("POST", "/participant", {"name": "Ada"})
    friends = [send("POST", "/participant", {"name": f"Friend {i}"}) for i in range(FRIENDS)]
    for friend in friends:
        send("POST", f"{ada['link']}/friends", {"to": friend["link"]})
    send("POST", f"{ada['link']}/outbound", {"subject": "s", "story": "hello world"})
    loner = send("POST", "/participant", {"name": "Loner"})
    unknown = "/participant/999999"
    newcomers = [send("POST", "/participant", {"name": f"n{i}"}) for i in range(REPEATS)]
    # Statements per request, and why: a read is its own transaction in autocommit, and tells an
    # unknown participant from one with nothing yet by itself; a write's first statement opens
    # its transaction (no BEGIN) and checks what it needs (no SELECT).
    expected = [
        ("GET", ada["link"], None, 200, 1),
        ("GET", unknown, None, 404, 1),
        ("GET", f"{friends[0]['link']}/inbound", None, 200, 1),
        ("GET", f"{loner['link']}/inbound", None, 200, 1),
        ("GET", f"{unknown}/inbound", None, 404, 1),
        ("GET", f"{ada['link']}/outbound", None, 200, 1),
        ("GET", f"{loner['link']}/outbound", None, 200, 1),
        ("GET", f"{unknown}/outbound", None, 404, 1),
        ("GET", f"{ada['link']}/friends", None, 200, 1),
        ("GET", f"{loner['link']}/friends", None, 200, 1),
        ("GET", f"{unknown}/friends", None, 404, 1),
        ("GET", "/outbound?keywords=world", None, 200, 1),
        ("GET", "/outbound?keywords=nowhere", None, 200, 1),
        ("POST", "/participant", {"name": "x"}, 200, 2),  # INSERT, COMMIT
        # Already friends: INSERT ... SELECT (no row), COMMIT, SELECT finds the friendship.
        ("POST", f"{ada['link']}/friends", {"to": friends[0]["link"]}, 200, 3),
        # Post: INSERT ... SELECT FROM participant, INSERT ... SELECT FROM friendship, COMMIT.
        ("POST", f"{ada['link']}/outbound", {"subject": "s", "story": "x"}, 200, 3),
    ]
    counter = RoundTrips(private_mariadb.url)
    try:
        measured = {}
        empty_answers = set()
        for method, path, body, status, _ in expected:
            simulate(client, method, path, body)  # this thread's connections exist before counting
            before = counter.total()
            answers = [simulate(client, method, path, body) for _ in range(REPEATS)]
            measured[method, path] = (counter.total() - before) / REPEATS
            assert {answer.status_code for answer in answers} == {status}, (method, path)
            if answers[0].json == []:
                empty_answers.add(path)
        # A new friendship: INSERT ... SELECT FROM participant WHERE NOT EXISTS, COMMIT.
        before = counter.total()
        for newcomer in newcomers:
            send("POST", f"{ada['link']}/friends", {"to": newcomer["link"]})
        new_pair = (counter.total() - before) / REPEATS
    finally:
        counter.close()

    assert measured == {(method, path): trips for method, path, _, _, trips in expected}
    assert new_pair == 2
    # Each kind of GET was counted with an empty answer as well as a full one.
    loner_empty = {f"{loner['link']}/{timeline}" for timeline in ("inbound", "outbound", "friends")}
    assert empty_answers == loner_empty | {"/outbound?keywords=nowhere"}


def test_connections_killed_between_requests_cost_no_failed_request(mariadb_url):
    client = TestClient(build_app(Config.from_env({"FEED_DATABASE_URL": mariadb_url})))
    send = in_process(client)
    ada, bob = ada_and_bob(send)

    for method, path, body in requests_of_every_kind(ada, bob):
        send(method, path, body)  # the connection it will use is open and idle
        assert kill_connections(mariadb_url) >= 1
        send(method, path, body)

    assert row_count(mariadb_url, outbound) == 3  # each post stored once, none twice


def test_connections_closed_by_wait_timeout_cost_no_failed_request(private_mariadb):
    set_wait_timeout(private_mariadb.url, 1)
    config = Config.from_env({"FEED_DATABASE_URL": private_mariadb.url})
    client = TestClient(build_app(config))
    send = in_process(client)
    ada, bob = ada_and_bob(send)

    for method, path, body in requests_of_every_kind(ada, bob):
        time.sleep(IDLE_PAST_WAIT_TIMEOUT_S)
        send(method, path, body)

    assert row_count(private_mariadb.url, outbound) == 2


@pytest.mark.parametrize("worker_class", ["meinheld", "gthread"])
def test_gunicorn_workers_ride_out_killed_and_timed_out_connections(
    gunicorn_server, private_mariadb, worker_class
):
    set_wait_timeout(private_mariadb.url, 1)
    workers = 3
    env = {"FEED_DATABASE_URL": private_mariadb.url, "FEED_WORKER_CLASS": worker_class}
    gunicorn_server.start(env, workers=workers)
    gunicorn_server.wait_ready(workers=workers)
    send = over_http(gunicorn_server)
    kinds = requests_of_every_kind(*ada_and_bob(send))

    def every_kind_several_times():
        # Several of each, so that every worker (and thread) meets its closed connection.
        for _ in range(2 * workers):
            for method, path, body in kinds:
                send(method, path, body)

    every_kind_several_times()
    assert kill_connections(private_mariadb.url) >= 1
    every_kind_several_times()
    time.sleep(IDLE_PAST_WAIT_TIMEOUT_S)
    every_kind_several_times()

    assert row_count(private_mariadb.url, outbound) == 1 + 3 * 2 * workers
    assert gunicorn_server.stop() == 0, gunicorn_server.log()


def test_a_post_or_friendship_with_an_unknown_participant_writes_nothing(database_url, tmp_path):
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path), "FEED_DATABASE_URL": database_url})
    init_db(config)
    client = TestClient(build_app(config))
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json
    bob = client.simulate_post("/participant", json={"name": "Bob"}).json
    client.simulate_post(f"{ada['link']}/friends", json={"to": bob["link"]})
    unknown = "/participant/999999"

    refused = [
        client.simulate_post(f"{unknown}/outbound", json={"subject": "s", "story": "x"}),
        client.simulate_post(f"{unknown}/friends", json={"to": ada["link"]}),
        client.simulate_post(f"{ada['link']}/friends", json={"to": unknown}),
    ]

    assert [result.status_code for result in refused] == [404, 404, 404]
    assert [result.json["description"] for result in refused] == [
        "participant 999999 does not exist"
    ] * 3
    counts = [row_count(config.database_url, table) for table in (outbound, inbound, friendship)]
    assert counts == [0, 0, 1]


def test_a_post_whose_fan_out_keeps_failing_leaves_nothing_behind(mariadb_url):
    config = Config.from_env({"FEED_DATABASE_URL": mariadb_url})
    client = TestClient(build_app(config))
    ada, bob = ada_and_bob(in_process(client))
    blocker = engines.create_engine(config)
    try:
        with blocker.begin() as conn:
            # Bob's inbound row needs this row's lock; every try times out after its INSERT of
            # the outbound row, until the retries give up.
            conn.exec_driver_sql(f"SELECT id FROM participant WHERE id = {bob['id']} FOR UPDATE")
            started = time.monotonic()
            result = client.simulate_post(
                f"{ada['link']}/outbound", json={"subject": "s", "story": "x"}
            )
            assert time.monotonic() - started < HANG_DEADLINE_S
    finally:
        blocker.dispose()

    assert result.status_code == 503, result.text
    # Only the story posted before: the refused post left neither its row nor its delivery.
    assert (row_count(mariadb_url, outbound), row_count(mariadb_url, inbound)) == (1, 1)


def test_a_commit_that_loses_its_connection_is_not_retried(mariadb_url):
    """Its outcome is unknown to the service, so running the post again could store it twice."""
    config = Config.from_env({"FEED_DATABASE_URL": mariadb_url})
    service = build_service(config)
    engine = service.engine
    client = TestClient(service.app)
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json
    killer = sa.create_engine(mariadb_url, poolclass=sa.NullPool)
    commits = []

    def kill_before_commit(conn: sa.Connection) -> None:
        commits.append(conn)
        with killer.connect() as admin:
            admin.exec_driver_sql(f"KILL {conn.connection.dbapi_connection.thread_id()}")

    sa.event.listen(engine, "commit", kill_before_commit)
    try:
        body = {"subject": "s", "story": "x"}
        result = client.simulate_post(f"{ada['link']}/outbound", json=body)
    finally:
        sa.event.remove(engine, "commit", kill_before_commit)
        killer.dispose()

    assert result.status_code == 503, result.text
    assert len(commits) == 1
    assert client.simulate_post(f"{ada['link']}/outbound", json={"subject": "s", "story": "y"}).json
    service.close()


class ListSink:
    """Remembers the payloads delivered to it, in order."""

    name = "list"

    def __init__(self) -> None:
        self.delivered: list[int] = []

    def deliver(self, rows: list[OutboxRow]) -> None:
        self.delivered.extend(int(row.payload) for row in rows)


def test_the_outbox_relay_delivers_after_its_connections_were_killed(mariadb_url):
    engine = engines.create_engine(Config.from_env({"FEED_DATABASE_URL": mariadb_url}))
    sink = ListSink()
    relay = OutboxRelay(engine, [sink], poll_seconds=0.1, min_backoff_seconds=0.1)

    @retries.retry_transaction
    def post(numbers: range) -> None:
        with engines.writer(engine).begin() as conn:
            for number in numbers:
                enqueue(conn, sink.name, str(number).encode())

    def delivered(count: int) -> list[int]:
        deadline = time.monotonic() + HANG_DEADLINE_S
        while len(set(sink.delivered)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return sorted(set(sink.delivered))

    relay.start()
    try:
        post(range(5))
        assert delivered(5) == list(range(5))
        assert kill_connections(mariadb_url) >= 1
        post(range(5, 10))
        assert delivered(10) == list(range(10))
    finally:
        relay.stop()
        engine.dispose()
