"""POST /participant and GET /participant/{id}: the exact shapes existing clients rely on."""

from tests.support.api import LINK_PATTERN, create_participant


def test_create_returns_id_name_and_link(client):
    result = client.simulate_post("/participant", json={"name": "Ada Lovelace"})

    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert set(body) == {"id", "name", "link"}
    assert type(body["id"]) is int and body["id"] > 0
    assert body["name"] == "Ada Lovelace"
    assert body["link"] == f"/participant/{body['id']}"
    assert LINK_PATTERN.match(body["link"])


def test_get_returns_the_created_participant(client):
    created = create_participant(client, "Grace")

    result = client.simulate_get(created["link"])

    assert result.status_code == 200
    assert result.json == created


def test_each_participant_gets_its_own_id(client, row_counts):
    first = create_participant(client, "Ada")
    second = create_participant(client, "Ada")

    assert first["id"] != second["id"]
    assert client.simulate_get(first["link"]).json["name"] == "Ada"
    assert client.simulate_get(second["link"]).json["name"] == "Ada"
    assert row_counts()["participant"] == 2


def test_name_is_trimmed_before_it_is_stored(client):
    created = create_participant(client, "  \tAda Lovelace \n")

    assert created["name"] == "Ada Lovelace"
    assert client.simulate_get(created["link"]).json["name"] == "Ada Lovelace"


def test_name_length_bounds_count_characters_after_trimming(client):
    assert create_participant(client, "A")["name"] == "A"
    assert create_participant(client, "x" * 50)["name"] == "x" * 50
    assert create_participant(client, "  " + "y" * 50 + "  ")["name"] == "y" * 50


def test_json_content_type_with_charset_is_accepted(client):
    result = client.simulate_post(
        "/participant",
        body='{"name": "Ada"}',
        content_type="application/json; charset=utf-8",
    )

    assert result.status_code == 200
    assert result.json["name"] == "Ada"


def test_unknown_fields_in_the_body_are_ignored(client, row_counts):
    result = client.simulate_post("/participant", json={"name": "Ada", "id": 999, "extra": [1]})

    assert result.status_code == 200
    assert result.json["name"] == "Ada"
    assert row_counts()["participant"] == 1
    assert client.simulate_get("/participant/999").status_code == 404
