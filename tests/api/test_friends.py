"""Friendships: symmetric, unique, idempotent, and listed once from each side."""

import pytest

from tests.support.api import assert_error, befriend, create_participant


def ref_forms(participant):
    """The two ways a request may name a participant: its link or its bare integer id."""
    return {"link": participant["link"], "id": participant["id"]}


@pytest.mark.parametrize("form", ["link", "id"])
def test_befriend_accepts_a_link_or_an_id(client, row_counts, ada, bob, form):
    result = client.simulate_post(f"{ada['link']}/friends", json={"to": ref_forms(bob)[form]})

    assert result.status_code == 200
    body = result.json
    assert set(body) == {"id", "from", "to"}
    assert type(body["id"]) is int and body["id"] > 0
    assert body["from"] == ada["link"]
    assert body["to"] == bob["link"]
    assert row_counts()["friendship"] == 1


def test_an_id_written_as_an_integral_number_is_that_id(client, ada, bob):
    """JSON Schema's integer, as /openapi.json documents ids: 2.0 is 2, 2.5 is no id."""
    whole = client.simulate_post(f"{ada['link']}/friends", json={"to": float(bob["id"])})
    fraction = client.simulate_post(f"{ada['link']}/friends", json={"to": bob["id"] + 0.5})

    assert (whole.status_code, whole.json["to"]) == (200, bob["link"])
    assert fraction.status_code == 400


@pytest.mark.parametrize("form", ["link", "id"])
def test_befriend_accepts_from_when_it_is_the_path_participant(client, ada, bob, form):
    body = {"from": ref_forms(ada)[form], "to": bob["link"]}
    result = client.simulate_post(f"{ada['link']}/friends", json=body)

    assert result.status_code == 200
    assert (result.json["from"], result.json["to"]) == (ada["link"], bob["link"])


def test_friendship_is_listed_from_both_sides(client, ada, bob):
    friendship = befriend(client, ada, bob)

    ada_friends = client.simulate_get(f"{ada['link']}/friends")
    bob_friends = client.simulate_get(f"{bob['link']}/friends")

    assert ada_friends.status_code == 200
    assert ada_friends.json == [{"id": friendship["id"], "from": ada["link"], "to": bob["link"]}]
    assert bob_friends.status_code == 200
    assert bob_friends.json == [{"id": friendship["id"], "from": bob["link"], "to": ada["link"]}]


def test_befriending_again_returns_the_existing_friendship_and_writes_nothing(
    client, row_counts, ada, bob
):
    friendship = befriend(client, ada, bob)
    before = row_counts()

    result = client.simulate_post(f"{ada['link']}/friends", json={"to": bob["id"]})

    assert result.status_code == 200
    assert result.json == friendship
    assert row_counts() == before


def test_befriending_in_the_other_direction_returns_the_existing_friendship(
    client, row_counts, ada, bob
):
    friendship = befriend(client, ada, bob)
    before = row_counts()

    result = client.simulate_post(f"{bob['link']}/friends", json={"to": ada["link"]})

    assert result.status_code == 200
    assert result.json == {"id": friendship["id"], "from": bob["link"], "to": ada["link"]}
    assert row_counts() == before
    assert len(client.simulate_get(f"{ada['link']}/friends").json) == 1
    assert len(client.simulate_get(f"{bob['link']}/friends").json) == 1


def test_every_friendship_of_a_participant_is_listed_once(client, ada, bob):
    carol = create_participant(client, "Carol")
    dave = create_participant(client, "Dave")
    with_bob = befriend(client, ada, bob)
    with_carol = befriend(client, carol, ada)
    befriend(client, ada, carol)
    befriend(client, bob, dave)

    listed = client.simulate_get(f"{ada['link']}/friends").json

    assert sorted(listed, key=lambda friendship: friendship["id"]) == sorted(
        [
            {"id": with_bob["id"], "from": ada["link"], "to": bob["link"]},
            {"id": with_carol["id"], "from": ada["link"], "to": carol["link"]},
        ],
        key=lambda friendship: friendship["id"],
    )


def test_a_participant_without_friends_has_an_empty_list(client, ada):
    result = client.simulate_get(f"{ada['link']}/friends")

    assert result.status_code == 200
    assert result.json == []


@pytest.mark.parametrize("form", ["link", "id"])
def test_befriending_oneself_is_rejected(client, row_counts, ada, form):
    before = row_counts()

    result = client.simulate_post(f"{ada['link']}/friends", json={"to": ref_forms(ada)[form]})

    assert_error(result, 400)
    assert row_counts() == before


def test_befriending_an_unknown_participant_is_not_found(client, row_counts, ada):
    before = row_counts()

    by_id = client.simulate_post(f"{ada['link']}/friends", json={"to": ada["id"] + 1000})
    by_link = client.simulate_post(f"{ada['link']}/friends", json={"to": "/participant/999999"})

    assert_error(by_id, 404)
    assert_error(by_link, 404)
    assert row_counts() == before


def test_an_unknown_participant_cannot_befriend_anyone(client, row_counts, ada):
    before = row_counts()

    result = client.simulate_post("/participant/999999/friends", json={"to": ada["link"]})

    assert_error(result, 404)
    assert row_counts() == before


def test_the_friends_of_an_unknown_participant_are_not_found(client):
    assert_error(client.simulate_get("/participant/999999/friends"), 404)


def test_from_that_is_not_the_path_participant_is_rejected(client, row_counts, ada, bob):
    carol = create_participant(client, "Carol")
    before = row_counts()

    as_other = client.simulate_post(
        f"{ada['link']}/friends", json={"from": bob["link"], "to": carol["link"]}
    )
    as_unknown = client.simulate_post(
        f"{ada['link']}/friends", json={"from": 999999, "to": carol["link"]}
    )

    assert_error(as_other, 400)
    assert_error(as_unknown, 400)
    assert row_counts() == before
