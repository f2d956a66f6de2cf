"""Idempotency-Key on every POST: a retry is answered with the original response, writes nothing."""

import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from falcon.testing import TestClient

from feedsvc.compose.service import build_app
from feedsvc.db import engines
from feedsvc.db.tables import idempotency_key
from tests.support.api import assert_error, befriend, create_participant

KEY = '"8e03978e-40d5-43e8-bc93-6894a57f9324"'


def post(client, path, body, key=KEY):
    return client.simulate_post(path, json=body, headers={"Idempotency-Key": key})


def writes(ada, bob):
    """One POST of each kind, as (path, body) by kind."""
    return {
        "participant": ("/participant", {"name": "Carol"}),
        "friends": (f"{ada['link']}/friends", {"to": bob["link"]}),
        "outbound": (f"{ada['link']}/outbound", {"subject": "once", "story": "a story told once"}),
    }


@pytest.mark.parametrize("kind", ["participant", "friends", "outbound"])
def test_a_retry_with_the_same_key_returns_the_original_response_and_writes_nothing(
    client, row_counts, kind
):
    ada, bob = create_participant(client, "Ada"), create_participant(client, "Bob")
    path, body = writes(ada, bob)[kind]
    first = post(client, path, body)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    counts = row_counts()
    assert counts["idempotency_key"] == 1

    for _ in range(2):
        again = post(client, path, body)
        assert again.status_code == 200, again.text
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
    assert row_counts() == counts


def test_a_bare_token_key_works_like_a_quoted_one(client, row_counts):
    first = post(client, "/participant", {"name": "Ada"}, key="abc-123")
    again = post(client, "/participant", {"name": "Ada"}, key='"abc-123"')
    assert again.content == first.content
    assert row_counts()["participant"] == 1


def test_different_keys_or_no_key_write_each_time(client, row_counts):
    post(client, "/participant", {"name": "Ada"}, key="one")
    post(client, "/participant", {"name": "Ada"}, key="two")
    client.simulate_post("/participant", json={"name": "Ada"})
    client.simulate_post("/participant", json={"name": "Ada"})
    assert row_counts()["participant"] == 4
    assert row_counts()["idempotency_key"] == 2


def test_the_same_json_spelled_differently_is_the_same_request(client, row_counts):
    first = client.simulate_post(
        "/participant",
        body='{"name": "Ada", "extra": 1}',
        headers={"Content-Type": "application/json", "Idempotency-Key": KEY},
    )
    again = client.simulate_post(
        "/participant",
        body='{ "extra":1,"name":"Ada" }',
        headers={"Content-Type": "application/json", "Idempotency-Key": KEY},
    )
    assert again.content == first.content
    assert row_counts()["participant"] == 1


@pytest.mark.parametrize("change", ["body", "path"])
def test_the_same_key_for_a_different_request_is_422_and_writes_nothing(client, row_counts, change):
    ada, bob = create_participant(client, "Ada"), create_participant(client, "Bob")
    first = post(client, f"{ada['link']}/outbound", {"subject": "s", "story": "one"})
    assert first.status_code == 200
    counts = row_counts()
    if change == "body":
        result = post(client, f"{ada['link']}/outbound", {"subject": "s", "story": "two"})
    else:
        result = post(client, f"{bob['link']}/outbound", {"subject": "s", "story": "one"})
    assert_error(result, 422)
    assert "Idempotency-Key" in result.json["description"]
    assert row_counts() == counts


@pytest.mark.parametrize("key", ["", '""', "a b", '"quote"inside"', '"back\\\\slash"', "k" * 256])
def test_an_invalid_key_is_400_and_writes_nothing(client, row_counts, key):
    counts = row_counts()
    assert_error(post(client, "/participant", {"name": "Ada"}, key=key), 400)
    assert row_counts() == counts


def test_a_refused_write_stores_no_key_so_the_retry_is_judged_afresh(client, row_counts):
    path = "/participant/7/outbound"
    body = {"subject": "s", "story": "to nobody yet"}
    assert_error(post(client, path, body), 404)
    assert row_counts()["idempotency_key"] == 0
    for name in "ABCDEFG":
        create_participant(client, name)
    assert post(client, path, body).status_code == 200


def test_concurrent_duplicates_write_once_and_all_get_the_same_response(client, row_counts):
    ada, bob = create_participant(client, "Ada"), create_participant(client, "Bob")
    befriend(client, ada, bob)
    body = {"subject": "race", "story": "sent by eight threads at once"}
    start = threading.Barrier(8)
    results = []

    def send():
        start.wait()
        results.append(post(client, f"{ada['link']}/outbound", body))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [result.status_code for result in results] == [200] * 8, [r.text for r in results]
    assert len({result.content for result in results}) == 1
    counts = row_counts()
    assert (counts["outbound"], counts["inbound"], counts["idempotency_key"]) == (1, 1, 1)


def test_keys_past_their_retention_are_purged_by_a_later_keyed_write(api_config, client):
    post(client, "/participant", {"name": "Ada"}, key="old")
    engine = engines.create_engine(api_config)
    try:
        with engine.begin() as conn:
            long_ago = datetime.utcnow() - timedelta(hours=25)
            conn.execute(sa.update(idempotency_key).values(created=long_ago))
        # A new app, as a new worker would be: it purges on its first keyed write.
        fresh = TestClient(build_app(api_config))
        post(fresh, "/participant", {"name": "Bob"}, key="new")
        with engine.connect() as conn:
            keys = conn.execute(sa.select(idempotency_key.c.key)).scalars().all()
    finally:
        engine.dispose()
    assert keys == ["new"]
