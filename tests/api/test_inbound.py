"""A participant's inbound timeline: what their friends posted, newest first, addressed to them."""

from tests.support.api import assert_error, befriend, create_participant, publish


def test_inbound_merges_every_friends_posts_newest_first(client):
    reader = create_participant(client, "Reader")
    ada = create_participant(client, "Ada")
    bob = create_participant(client, "Bob")
    befriend(client, reader, ada)
    befriend(client, bob, reader)

    posted = [
        publish(client, ada, "one", "from Ada"),
        publish(client, bob, "two", "from Bob"),
        publish(client, ada, "three", "from Ada again"),
    ]

    result = client.simulate_get(f"{reader['link']}/inbound")

    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    assert result.json == [{**post, "to": reader["link"]} for post in reversed(posted)]
    assert all(set(item) == {"from", "to", "occurred", "subject", "story"} for item in result.json)
    assert "link" not in result.headers


def test_inbound_keeps_posts_from_before_an_unrelated_friendship(client):
    reader = create_participant(client, "Reader")
    ada = create_participant(client, "Ada")
    befriend(client, reader, ada)
    post = publish(client, ada)
    befriend(client, reader, create_participant(client, "Bob"))

    assert client.simulate_get(f"{reader['link']}/inbound").json == [{**post, "to": reader["link"]}]


def test_inbound_of_a_participant_without_friends_is_empty(client):
    loner = create_participant(client, "Loner")
    publish(client, loner)

    result = client.simulate_get(f"{loner['link']}/inbound")

    assert result.status_code == 200
    assert result.json == []


def test_inbound_of_an_unknown_participant_is_not_found(client):
    assert_error(client.simulate_get("/participant/999999/inbound"), 404)
