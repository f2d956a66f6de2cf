"""Keyset pagination of both timelines: limit bounds, opaque cursors, rel=next links, stability."""

import pytest

from tests.support.api import (
    assert_error,
    befriend,
    create_participant,
    next_page,
    publish,
    walk_pages,
)


class Timeline:
    """One sender and one friend, so the same posts show on an outbound and an inbound timeline."""

    def __init__(self, client, kind):
        self.client = client
        self.sender = create_participant(client, "Sender")
        self.reader = create_participant(client, "Reader")
        befriend(client, self.sender, self.reader)
        owner = self.sender if kind == "outbound" else self.reader
        self.path = f"{owner['link']}/{kind}"

    def publish(self, count):
        """Post `count` stories; returns them as this timeline lists them (newest first)."""
        posts = [publish(self.client, self.sender, f"s{n}", f"story {n}") for n in range(count)]
        return [self.shown(post) for post in reversed(posts)]

    def shown(self, post):
        if self.path.endswith("/inbound"):
            return {**post, "to": self.reader["link"]}
        return post


@pytest.fixture(params=["outbound", "inbound"])
def timeline(client, request):
    return Timeline(client, request.param)


def test_default_limit_is_one_hundred(client, timeline):
    expected = timeline.publish(101)

    first = client.simulate_get(timeline.path)

    assert first.status_code == 200
    assert first.json == expected[:100]
    location = next_page(first)
    assert location is not None
    rest = client.simulate_get(location[0], query_string=location[1])
    assert rest.json == expected[100:]
    assert next_page(rest) is None


@pytest.mark.parametrize("limit", [1, 3, 1000])
def test_limit_bounds_are_accepted(client, timeline, limit):
    expected = timeline.publish(3)

    result = client.simulate_get(timeline.path, params={"limit": limit})

    assert result.status_code == 200
    assert result.json == expected[:limit]
    assert (next_page(result) is not None) == (limit < 3)


def test_walking_pages_returns_every_post_once_in_order(client, timeline):
    expected = timeline.publish(5)

    pages = walk_pages(client, timeline.path, "limit=2")

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [post for page in pages for post in page] == expected


def test_no_next_link_when_the_last_page_is_exactly_full(client, timeline):
    timeline.publish(4)

    pages = walk_pages(client, timeline.path, "limit=2")

    assert [len(page) for page in pages] == [2, 2]


def test_next_link_keeps_the_limit(client, timeline):
    timeline.publish(3)

    location = next_page(client.simulate_get(timeline.path, params={"limit": 1}))

    assert location is not None
    assert location[0] == timeline.path
    assert "limit=1" in location[1].split("&")
    assert "before=" in location[1]


def test_posts_within_the_same_millisecond_are_neither_skipped_nor_repeated(client, timeline):
    expected = timeline.publish(12)

    pages = walk_pages(client, timeline.path, "limit=1")

    assert [post for page in pages for post in page] == expected


def test_cursor_is_stable_while_new_posts_arrive(client, timeline):
    expected = timeline.publish(5)
    first = client.simulate_get(timeline.path, params={"limit": 2})
    location = next_page(first)
    assert location is not None

    newer = timeline.publish(3)
    rest = walk_pages(client, *location)

    assert first.json + [post for page in rest for post in page] == expected
    assert client.simulate_get(timeline.path).json == newer + expected


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1.5", ""])
def test_limit_out_of_bounds_is_rejected(client, row_counts, timeline, limit):
    timeline.publish(1)
    before = row_counts()

    result = client.simulate_get(timeline.path, query_string=f"limit={limit}")

    assert_error(result, 400)
    assert row_counts() == before


@pytest.mark.parametrize("cursor", ["garbage", "", "!!!", "0", "eyJ9", "%00"])
def test_malformed_cursor_is_rejected(client, row_counts, timeline, cursor):
    timeline.publish(1)
    before = row_counts()

    result = client.simulate_get(timeline.path, query_string=f"before={cursor}")

    assert_error(result, 400)
    assert row_counts() == before
