"""Read replicas over real MariaDB GTID replication: reads on the replica, read-your-writes through
the Feed-Position header whichever host answers, and a stopped or lagging replica skipped with no
failed request."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedsvc.api.positions import POSITION_HEADER
from feedsvc.db.replicas import replica_label
from loadtest.harness.gunicorn import GunicornServer
from loadtest.harness.mariadb import ReplicatedMariadb
from tests.support.processes import ClientLoop, killed_at_exit
from tests.support.prometheus import sample

# A participant that exists on the replica only (written there outside replication): a read that
# finds it was served by the replica.
REPLICA_ONLY_ID = 1_000_000
REPLICA_ONLY_NAME = "only on the replica"
REPLICA_ONLY_STORY = "replicated nowhere"
# Only there so that a broken rotation fails the test instead of hanging it; no speed assertion.
DEADLINE_S = 30.0
ROUNDS = 6


def replica_env(pair: ReplicatedMariadb, max_lag_ms: int = 1000) -> dict[str, str]:
    return {
        "FEED_DATABASE_URL": pair.primary.url,
        "FEED_DATABASE_REPLICA_URLS": pair.replica.url,
        "FEED_REPLICA_MAX_LAG_MS": str(max_lag_ms),
        # A position the replica has not applied is looked for there this long, then on the primary.
        "FEED_REPLICA_TOKEN_WAIT_MS": "100",
    }


def wait_for(condition: object, what: str) -> None:
    give_up = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > give_up:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.05)


def replica_state(server: GunicornServer, pair: ReplicatedMariadb) -> float:
    metrics = server.request("GET", "/metrics").body.decode()
    return sample(metrics, "feed_replica_in_rotation", replica=replica_label(pair.replica.url))


def served_by_replica(server: GunicornServer) -> bool:
    return server.request("GET", f"/participant/{REPLICA_ONLY_ID}").status == 200


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[GunicornServer, GunicornServer]]:
    """Two app hosts, unstarted: two gunicorn masters with their own data directories."""
    with (
        killed_at_exit(GunicornServer(tmp_path / "a" / "gunicorn.log")) as first,
        killed_at_exit(GunicornServer(tmp_path / "b" / "gunicorn.log")) as second,
    ):
        for server in (first, second):
            server.log_path.parent.mkdir()
        yield first, second


def mark_replica(pair: ReplicatedMariadb) -> None:
    """Two friends, a post and its delivery written on the replica only."""
    friend, post = REPLICA_ONLY_ID + 1, REPLICA_ONLY_ID
    for statement in (
        "INSERT INTO feed.participant (id, name)"
        f" VALUES ({REPLICA_ONLY_ID}, '{REPLICA_ONLY_NAME}'), ({friend}, 'friend')",
        "INSERT INTO feed.friendship (id, low_id, high_id)"
        f" VALUES ({REPLICA_ONLY_ID}, {REPLICA_ONLY_ID}, {friend})",
        "INSERT INTO feed.outbound (id, sender_id, occurred, subject, story) VALUES"
        f" ({post}, {REPLICA_ONLY_ID}, '2026-12-01 00:00:00', 's', '{REPLICA_ONLY_STORY}')",
        f"INSERT INTO feed.inbound (recipient_id, outbound_id) VALUES ({friend}, {post})",
    ):
        pair.run(pair.replica, statement)


def test_reads_are_served_by_the_replica_and_writes_by_the_primary(
    gunicorn_server: GunicornServer, replicated_mariadb: ReplicatedMariadb
) -> None:
    pair = replicated_mariadb
    mark_replica(pair)
    gunicorn_server.start(replica_env(pair), workers=2)
    gunicorn_server.wait_ready(workers=2)
    wait_for(lambda: replica_state(gunicorn_server, pair) == 1, "the replica in rotation")
    # Each worker puts it in rotation after its first check; then every read goes there.
    wait_for(
        lambda: all(served_by_replica(gunicorn_server) for _ in range(4)),
        "reads on the replica in both workers",
    )
    marked, friend = f"/participant/{REPLICA_ONLY_ID}", f"/participant/{REPLICA_ONLY_ID + 1}"
    for _ in range(10):
        found = gunicorn_server.request("GET", marked)
        assert found.status == 200
        assert found.json["name"] == REPLICA_ONLY_NAME
        assert [
            item["to"] for item in gunicorn_server.request("GET", f"{friend}/friends").json
        ] == [marked]
        for timeline in (f"{marked}/outbound", f"{friend}/inbound"):
            posts = gunicorn_server.request("GET", timeline).json
            assert [post["story"] for post in posts] == [REPLICA_ONLY_STORY]
        # FULLTEXT search, on the replica's own index.
        assert gunicorn_server.request("GET", "/outbound?keywords=nowhere").json == [marked]

    created = gunicorn_server.request("POST", "/participant", {"name": "Ada"})
    assert created.status == 200, created.body
    (on_primary,) = pair.run(
        pair.primary, f"SELECT COUNT(*) FROM feed.participant WHERE id = {created.json['id']}"
    )
    assert on_primary == 1
    # The write's position, in MariaDB's GTID form, for the client's next reads.
    assert created.headers[POSITION_HEADER].startswith("0-1-")
    assert POSITION_HEADER not in gunicorn_server.request("GET", created.json["link"]).headers

    metrics = gunicorn_server.request("GET", "/metrics").body.decode()
    lag = sample(metrics, "feed_replica_lag_seconds", replica=replica_label(pair.replica.url))
    assert 0 <= lag < 1


def test_a_read_with_the_position_sees_the_write_while_the_replica_applies_nothing(
    gunicorn_server: GunicornServer, replicated_mariadb: ReplicatedMariadb
) -> None:
    pair = replicated_mariadb
    mark_replica(pair)
    gunicorn_server.start(replica_env(pair), workers=1)
    gunicorn_server.wait_ready(workers=1)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    bob = gunicorn_server.request("POST", "/participant", {"name": "Bob"}).json
    befriended = gunicorn_server.request("POST", f"{ada['link']}/friends", {"to": bob["link"]})
    assert befriended.status == 200
    pair.wait_replicated()
    wait_for(lambda: served_by_replica(gunicorn_server), "reads on the replica")

    pair.pause_applying()
    body = {"subject": "s", "story": "while the replica waits"}
    key = {"Idempotency-Key": '"one post"'}
    posted = gunicorn_server.request("POST", f"{ada['link']}/outbound", body, key)
    assert posted.status == 200, posted.body
    position = {POSITION_HEADER: posted.headers[POSITION_HEADER]}
    # A retry answered from the key carries a position too (the primary's, at or past the post).
    replayed = gunicorn_server.request("POST", f"{ada['link']}/outbound", body, key)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    replayed_own = gunicorn_server.request(
        "GET",
        f"{ada['link']}/outbound",
        headers={POSITION_HEADER: replayed.headers[POSITION_HEADER]},
    )
    assert [post["story"] for post in replayed_own.json] == ["while the replica waits"]

    own = gunicorn_server.request("GET", f"{ada['link']}/outbound", headers=position)
    friends = gunicorn_server.request("GET", f"{bob['link']}/inbound", headers=position)
    assert [post["story"] for post in own.json] == ["while the replica waits"]
    assert [post["story"] for post in friends.json] == ["while the replica waits"]
    # The replica had not applied the post: those answers came from the primary.
    unapplied = f"SELECT COUNT(*) FROM feed.outbound WHERE sender_id = {ada['id']}"
    assert pair.run(pair.replica, unapplied) == (0,)

    pair.resume_applying()
    pair.wait_replicated()
    # Applied there now: the same position is served by the replica (which has the marker).
    marked = gunicorn_server.request("GET", f"/participant/{REPLICA_ONLY_ID}", headers=position)
    assert marked.status == 200


def test_a_lagging_then_a_stopped_replica_is_skipped_with_no_failed_request(
    gunicorn_server: GunicornServer, replicated_mariadb: ReplicatedMariadb
) -> None:
    pair = replicated_mariadb
    gunicorn_server.start(replica_env(pair, max_lag_ms=200), workers=2)
    gunicorn_server.wait_ready(workers=2)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    pair.wait_replicated()
    wait_for(lambda: replica_state(gunicorn_server, pair) == 1, "the replica in rotation")

    with ClientLoop(gunicorn_server.port, path=f"{ada['link']}/outbound", clients=4) as clients:
        clients.wait_for_successes(50)
        pair.pause_applying()
        late = gunicorn_server.request("POST", "/participant", {"name": "Late"}).json
        # Out of rotation once a check finds it behind: the new participant is then found.
        wait_for(lambda: replica_state(gunicorn_server, pair) == 0, "the lagging replica out")
        wait_for(
            lambda: all(
                gunicorn_server.request("GET", late["link"]).status == 200 for _ in range(4)
            ),
            "reads of the lagging replica on the primary",
        )
        clients.wait_for_successes(50)

        pair.resume_applying()
        wait_for(lambda: replica_state(gunicorn_server, pair) == 1, "the replica back")
        clients.wait_for_successes(50)

        pair.replica.stop(signal.SIGKILL)
        clients.wait_for_successes(200)
        wait_for(lambda: replica_state(gunicorn_server, pair) == 0, "the dead replica out")
        clients.wait_for_successes(50)
    assert clients.failures == []
    assert gunicorn_server.request("GET", "/ready").status == 200


def test_two_hosts_serve_one_client_alternately_with_its_writes_visible(
    hosts: tuple[GunicornServer, GunicornServer], replicated_mariadb: ReplicatedMariadb
) -> None:
    pair = replicated_mariadb
    for server in hosts:
        server.start(replica_env(pair), workers=2)
    for server in hosts:
        server.wait_ready(workers=2)
    first, second = hosts
    ada = first.request("POST", "/participant", {"name": "Ada"})
    bob = second.request("POST", "/participant", {"name": "Bob"})
    friends = first.request(
        "POST", f"{ada.json['link']}/friends", {"to": bob.json["link"]}
    ).headers[POSITION_HEADER]
    for server in hosts:
        listed = server.request(
            "GET", f"{bob.json['link']}/friends", headers={POSITION_HEADER: friends}
        )
        assert [item["to"] for item in listed.json] == [ada.json["link"]]

    # A write that changes nothing still gets a position covering what it answered with: with
    # replication stalled, Carl's befriending finds the pair Ada had just made from the other host.
    pair.pause_applying()
    carl = first.request("POST", "/participant", {"name": "Carl"}).json
    first.request("POST", f"{ada.json['link']}/friends", {"to": carl["link"]})
    again = second.request("POST", f"{carl['link']}/friends", {"to": ada.json["link"]})
    assert again.status == 200, again.body
    listed = first.request(
        "GET", f"{carl['link']}/friends", headers={POSITION_HEADER: again.headers[POSITION_HEADER]}
    )
    assert [item["to"] for item in listed.json] == [ada.json["link"]]
    pair.resume_applying()

    stories: list[str] = []
    for round_number in range(ROUNDS):
        if round_number == ROUNDS // 2:
            # The second half with replication stalled: the positions still find every post.
            pair.pause_applying()
        writer, reader = hosts[round_number % 2], hosts[1 - round_number % 2]
        story = f"story {round_number}"
        posted = writer.request(
            "POST", f"{ada.json['link']}/outbound", {"subject": "s", "story": story}
        )
        assert posted.status == 200, posted.body
        stories.insert(0, story)
        position = {POSITION_HEADER: posted.headers[POSITION_HEADER]}
        own = reader.request("GET", f"{ada.json['link']}/outbound", headers=position)
        inbound = reader.request("GET", f"{bob.json['link']}/inbound", headers=position)
        assert [post["story"] for post in own.json] == stories
        assert [post["story"] for post in inbound.json] == stories
    pair.resume_applying()
