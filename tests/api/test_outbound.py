"""Posting (social broadcast), the outbound timeline, and fan-out to the friends of the moment."""

import re
from datetime import UTC, datetime

import falcon.testing
import pytest

from feedsvc.compose.search import create_search
from feedsvc.compose.service import build_service
from feedsvc.db import engines
from tests.support.api import assert_error, befriend, create_participant, publish

OCCURRED_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def parse_occurred(value):
    """Parse the server's timestamp, insisting on the exact format clients are promised."""
    assert OCCURRED_PATTERN.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def now_to_the_millisecond():
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def test_post_returns_the_stored_story(client, row_counts, ada):
    before = now_to_the_millisecond()
    result = client.simulate_post(
        f"{ada['link']}/outbound", json={"subject": "Engines", "story": "Notes on the engine."}
    )
    after = datetime.now(UTC)

    assert result.status_code == 200
    body = result.json
    assert set(body) == {"from", "occurred", "subject", "story"}
    assert body["from"] == ada["link"]
    assert body["subject"] == "Engines"
    assert body["story"] == "Notes on the engine."
    assert before <= parse_occurred(body["occurred"]) <= after
    assert row_counts()["outbound"] == 1


@pytest.mark.parametrize("sent", ["1999-01-01T00:00:00.000Z", "2999-12-31T23:59:59.999Z", "soon"])
def test_client_sent_occurred_is_accepted_and_ignored(client, ada, sent):
    before = now_to_the_millisecond()
    result = client.simulate_post(
        f"{ada['link']}/outbound", json={"subject": "s", "story": "t", "occurred": sent}
    )
    after = datetime.now(UTC)

    assert result.status_code == 200
    assert result.json["occurred"] != sent
    assert before <= parse_occurred(result.json["occurred"]) <= after
    assert client.simulate_get(f"{ada['link']}/outbound").json == [result.json]


@pytest.mark.parametrize("form", ["link", "id"])
def test_post_accepts_from_when_it_is_the_path_participant(client, ada, form):
    sender = {"link": ada["link"], "id": ada["id"]}[form]
    result = client.simulate_post(
        f"{ada['link']}/outbound", json={"subject": "s", "story": "t", "from": sender}
    )

    assert result.status_code == 200
    assert result.json["from"] == ada["link"]


def test_post_from_someone_else_is_rejected(client, row_counts, ada):
    bob = create_participant(client, "Bob")
    befriend(client, ada, bob)
    before = row_counts()

    for sender in (bob["link"], bob["id"], 999999):
        result = client.simulate_post(
            f"{ada['link']}/outbound", json={"subject": "s", "story": "t", "from": sender}
        )
        assert_error(result, 400)
    assert row_counts() == before


def test_post_by_an_unknown_participant_is_not_found(client, row_counts):
    before = row_counts()

    result = client.simulate_post(
        "/participant/999999/outbound", json={"subject": "s", "story": "t"}
    )

    assert_error(result, 404)
    assert row_counts() == before


def test_outbound_timeline_lists_the_senders_posts_newest_first(client, ada):
    bob = create_participant(client, "Bob")
    posted = [publish(client, ada, f"subject {n}", f"story {n}") for n in range(5)]
    publish(client, bob, "not Ada's", "story")

    result = client.simulate_get(f"{ada['link']}/outbound")

    assert result.status_code == 200
    assert result.json == posted[::-1]
    assert "link" not in result.headers
    occurred = [parse_occurred(post["occurred"]) for post in result.json]
    assert occurred == sorted(occurred, reverse=True)


def test_outbound_timeline_of_a_silent_participant_is_empty(client, ada):
    result = client.simulate_get(f"{ada['link']}/outbound")

    assert result.status_code == 200
    assert result.json == []


def test_outbound_timeline_of_an_unknown_participant_is_not_found(client):
    assert_error(client.simulate_get("/participant/999999/outbound"), 404)


def test_post_fans_out_to_exactly_the_senders_friends(client, row_counts, ada):
    bob = create_participant(client, "Bob")
    carol = create_participant(client, "Carol")
    stranger = create_participant(client, "Stranger")
    befriend(client, ada, bob)
    befriend(client, carol, ada)
    befriend(client, bob, stranger)

    post = publish(client, ada, "News", "Fresh news")

    for friend in (bob, carol):
        inbound = client.simulate_get(f"{friend['link']}/inbound")
        assert inbound.status_code == 200
        assert inbound.json == [{**post, "to": friend["link"]}]
    assert client.simulate_get(f"{stranger['link']}/inbound").json == []
    assert client.simulate_get(f"{ada['link']}/inbound").json == []
    assert row_counts()["inbound"] == 2


def test_a_friend_added_after_a_post_does_not_receive_it(client, ada):
    bob = create_participant(client, "Bob")
    befriend(client, ada, bob)
    earlier = publish(client, ada, "Earlier", "before Carol")
    carol = create_participant(client, "Carol")
    befriend(client, carol, ada)
    later = publish(client, ada, "Later", "after Carol")

    carol_inbound = client.simulate_get(f"{carol['link']}/inbound").json
    bob_inbound = client.simulate_get(f"{bob['link']}/inbound").json

    assert carol_inbound == [{**later, "to": carol["link"]}]
    assert bob_inbound == [{**later, "to": bob["link"]}, {**earlier, "to": bob["link"]}]


def test_a_post_without_friends_is_stored_but_delivered_to_nobody(client, row_counts, ada):
    post = publish(client, ada)

    counts = row_counts()
    assert counts["outbound"] == 1
    assert counts["inbound"] == 0
    assert client.simulate_get(f"{ada['link']}/outbound").json == [post]


class IndexThenFail:
    """The real search backend, except that indexing fails after it has written its entry."""

    def __init__(self, search):
        self._search = search
        self.outbox_sinks = search.outbox_sinks
        self.index = search.index

    def close(self):
        self._search.close()

    def index_post(self, conn, post):
        self._search.index_post(conn, post)
        raise RuntimeError("index failed after writing")

    def senders_matching(self, keywords, limit):
        return self._search.senders_matching(keywords, limit)


def test_a_post_that_fails_midway_leaves_nothing_behind(api_config, client, row_counts, ada):
    bob = create_participant(client, "Bob")
    befriend(client, ada, bob)
    before = row_counts()
    engine = engines.create_engine(api_config)
    search = IndexThenFail(create_search(api_config, engine))
    failing = build_service(api_config, engine=engine, search=search, start_relay=False)
    try:
        result = falcon.testing.TestClient(failing.app).simulate_post(
            f"{ada['link']}/outbound", json={"subject": "Lost", "story": "vanishing"}
        )
    finally:
        failing.close()

    assert_error(result, 500)
    assert row_counts() == before
    assert client.simulate_get(f"{ada['link']}/outbound").json == []
    assert client.simulate_get(f"{bob['link']}/inbound").json == []
    assert client.simulate_get("/outbound", params={"keywords": "vanishing"}).json == []
