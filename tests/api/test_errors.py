"""Every error class: a clear 4xx in Falcon's JSON error format, and nothing written."""

import dataclasses

import falcon.testing
import orjson
import pytest

from feedsvc.api.app import create_app
from feedsvc.compose.service import build_app
from feedsvc.service.feed import Feed
from tests.support.api import assert_error


@pytest.fixture(params=["participant", "friends", "outbound"])
def post_route(request, client, ada, bob):
    """(path, a valid body) for each POST endpoint; tests break the body in one way each."""
    return {
        "participant": ("/participant", {"name": "Carol"}),
        "friends": (f"{ada['link']}/friends", {"to": bob["link"]}),
        "outbound": (f"{ada['link']}/outbound", {"subject": "s", "story": "t"}),
    }[request.param]


def assert_rejected(result, status, row_counts, before):
    assert_error(result, status)
    assert row_counts() == before


def test_valid_bodies_of_the_routes_under_test_are_accepted(client, post_route):
    path, body = post_route

    assert client.simulate_post(path, json=body).status_code == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"name": }',
        b"not json",
        b"{'name': 'single quotes'}",
        b'{"name": "Carol",}',
        b'{"name": "Carol"} trailing',
        b"\xff\xfe{}",
        b'{"name": "\xff"}',
        b'{"name": "\\ud800"}',
        b'{"name": NaN}',
        b'{"name": 1e400}',
        b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=[
        "empty",
        "unclosed",
        "missing-value",
        "text",
        "single-quotes",
        "trailing-comma",
        "trailing-text",
        "bad-utf8-bom",
        "bad-utf8-in-string",
        "lone-surrogate",
        "nan",
        "infinity",
        "nested-too-deep",
    ],
)
def test_malformed_json_is_rejected(client, row_counts, post_route, raw):
    path, _ = post_route
    before = row_counts()

    result = client.simulate_post(
        path,
        body=raw,
        headers={"Content-Type": "application/json", "Content-Length": str(len(raw))},
    )

    assert_rejected(result, 400, row_counts, before)


def test_json_post_without_content_length_is_rejected(client, row_counts, post_route):
    path, _ = post_route
    before = row_counts()

    result = client.simulate_post(path, content_type="application/json")

    assert_rejected(result, 411, row_counts, before)


@pytest.mark.parametrize("raw", [b"[]", b'["name"]', b'"Carol"', b"1", b"null", b"true"])
def test_json_that_is_not_an_object_is_rejected(client, row_counts, post_route, raw):
    path, _ = post_route
    before = row_counts()

    result = client.simulate_post(path, body=raw, content_type="application/json")

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize(
    ("route", "field"),
    [
        ("participant", "name"),
        ("friends", "to"),
        ("outbound", "subject"),
        ("outbound", "story"),
    ],
)
def test_missing_required_fields_are_rejected(client, row_counts, ada, bob, route, field):
    path, body = {
        "participant": ("/participant", {"name": "Carol"}),
        "friends": (f"{ada['link']}/friends", {"to": bob["link"]}),
        "outbound": (f"{ada['link']}/outbound", {"subject": "s", "story": "t"}),
    }[route]
    del body[field]
    before = row_counts()

    result = client.simulate_post(path, json=body)

    assert_rejected(result, 400, row_counts, before)


WRONG_TYPES = [None, True, False, 1, 1.5, [], ["x"], {}, {"name": "x"}]
WRONG_REFS = [
    None,
    True,
    False,
    1.5,
    [],
    [1],
    {},
    {"id": 1},
    "",
    "participant/1",
    "/participant/",
    "/participant/abc",
    "/participant/1/friends",
    "/participants/1",
    "http://example.com/participant/1",
    0,
    -1,
    2**63,
    2**64,
    "/participant/0",
    "/participant/-1",
    f"/participant/{2**63}",
]


@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_wrongly_typed_name_is_rejected(client, row_counts, value):
    before = row_counts()

    result = client.simulate_post("/participant", json={"name": value})

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize("field", ["subject", "story"])
@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_wrongly_typed_post_fields_are_rejected(client, row_counts, ada, field, value):
    before = row_counts()

    body = {"subject": "s", "story": "t", field: value}
    result = client.simulate_post(f"{ada['link']}/outbound", json=body)

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize("value", WRONG_REFS, ids=repr)
def test_malformed_friend_refs_are_rejected(client, row_counts, ada, value):
    before = row_counts()

    result = client.simulate_post(f"{ada['link']}/friends", json={"to": value})

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize("route", ["friends", "outbound"])
@pytest.mark.parametrize("value", WRONG_REFS, ids=repr)
def test_malformed_from_refs_are_rejected(client, row_counts, ada, bob, route, value):
    body = {"to": bob["link"]} if route == "friends" else {"subject": "s", "story": "t"}
    before = row_counts()

    result = client.simulate_post(f"{ada['link']}/{route}", json={**body, "from": value})

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize(
    "name",
    ["", " ", "   \t\n ", "x" * 51, " " + "x" * 51 + " "],
    ids=["empty", "space", "whitespace", "51-chars", "51-chars-padded"],
)
def test_names_outside_one_to_fifty_characters_are_rejected(client, row_counts, name):
    before = row_counts()

    result = client.simulate_post("/participant", json={"name": name})

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize(("field", "maximum"), [("subject", 200), ("story", 10000)])
def test_post_fields_up_to_their_maximum_are_accepted(client, ada, field, maximum):
    body = {"subject": "s", "story": "t", field: "x" * maximum}

    result = client.simulate_post(f"{ada['link']}/outbound", json=body)

    assert result.status_code == 200
    assert result.json[field] == "x" * maximum


@pytest.mark.parametrize("field", ["subject", "story"])
def test_empty_post_fields_are_rejected(client, row_counts, ada, field):
    before = row_counts()

    body = {"subject": "s", "story": "t", field: ""}
    result = client.simulate_post(f"{ada['link']}/outbound", json=body)

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize(("field", "maximum"), [("subject", 200), ("story", 10000)])
def test_overlong_post_fields_are_rejected(client, row_counts, ada, field, maximum):
    before = row_counts()

    body = {"subject": "s", "story": "t", field: "x" * (maximum + 1)}
    result = client.simulate_post(f"{ada['link']}/outbound", json=body)

    assert_rejected(result, 400, row_counts, before)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/participant/999999"),
        ("GET", "/participant/999999/friends"),
        ("GET", "/participant/999999/outbound"),
        ("GET", "/participant/999999/inbound"),
        ("GET", f"/participant/{2**63 - 1}"),
    ],
)
def test_unknown_participants_are_not_found(client, row_counts, ada, method, path):
    before = row_counts()

    result = client.simulate_request(method, path)

    assert_rejected(result, 404, row_counts, before)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/participants",
        "/participant/1/nope",
        "/participant/1/friends/1",
        "/outbound/1",
    ],
)
def test_unknown_routes_are_not_found(client, row_counts, ada, path):
    before = row_counts()

    assert_rejected(client.simulate_get(path), 404, row_counts, before)
    assert_rejected(client.simulate_post(path, json={}), 404, row_counts, before)


BAD_PATH_IDS = [
    "0",
    "-1",
    "00",
    str(2**63),
    str(2**64),
    "abc",
    "1.5",
    "1e3",
    "%201",
    "0x1",
    "1_000",
    "\uff11",  # FULLWIDTH DIGIT ONE: int() accepts it, a URL id must not
    "\u0661",  # ARABIC-INDIC DIGIT ONE
]


@pytest.mark.parametrize("bad_id", BAD_PATH_IDS)
@pytest.mark.parametrize("suffix", ["", "/friends", "/outbound", "/inbound"])
def test_get_with_a_path_id_that_is_not_a_positive_63_bit_integer_is_not_found(
    client, row_counts, ada, bad_id, suffix
):
    before = row_counts()

    result = client.simulate_get(f"/participant/{bad_id}{suffix}")

    assert_rejected(result, 404, row_counts, before)


@pytest.mark.parametrize("bad_id", BAD_PATH_IDS)
@pytest.mark.parametrize(
    ("suffix", "body"),
    [("/friends", {"to": 1}), ("/outbound", {"subject": "s", "story": "t"})],
)
def test_post_with_a_path_id_that_is_not_a_positive_63_bit_integer_is_not_found(
    client, row_counts, ada, bad_id, suffix, body
):
    before = row_counts()

    result = client.simulate_post(f"/participant/{bad_id}{suffix}", json=body)

    assert_rejected(result, 404, row_counts, before)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/participant", {"POST"}),
        ("PUT", "/participant", {"POST"}),
        ("DELETE", "/participant/{id}", {"GET"}),
        ("POST", "/participant/{id}", {"GET"}),
        ("PATCH", "/participant/{id}", {"GET"}),
        ("DELETE", "/participant/{id}/friends", {"GET", "POST"}),
        ("PUT", "/participant/{id}/outbound", {"GET", "POST"}),
        ("POST", "/participant/{id}/inbound", {"GET"}),
        ("POST", "/outbound", {"GET"}),
        ("DELETE", "/outbound", {"GET"}),
        ("POST", "/openapi.json", {"GET"}),
    ],
)
def test_wrong_methods_are_not_allowed(client, row_counts, ada, method, path, allowed):
    before = row_counts()

    result = client.simulate_request(method, path.format(id=ada["id"]), json={"name": "x"})

    assert_rejected(result, 405, row_counts, before)
    advertised = {name.strip() for name in result.headers["allow"].split(",")}
    assert allowed <= advertised
    assert method not in advertised


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_posts_that_are_not_json_are_unsupported(client, row_counts, post_route, content_type):
    path, body = post_route
    before = row_counts()

    result = client.simulate_post(path, body=orjson.dumps(body), content_type=content_type)

    assert_rejected(result, 415, row_counts, before)


@pytest.fixture
def small_body_client(api_config):
    """The app with a 256-byte request body limit."""
    config = dataclasses.replace(api_config, max_body_bytes=256)
    return falcon.testing.TestClient(build_app(config))


def padded_body(body, size):
    """`body` as JSON padded with insignificant whitespace to exactly `size` bytes."""
    raw = orjson.dumps(body)
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def test_body_at_the_size_limit_is_accepted(small_body_client):
    result = small_body_client.simulate_post(
        "/participant", body=padded_body({"name": "Ada"}, 256), content_type="application/json"
    )

    assert result.status_code == 200


def test_body_over_the_size_limit_is_too_large(small_body_client, row_counts):
    before = row_counts()

    result = small_body_client.simulate_post(
        "/participant", body=padded_body({"name": "Ada"}, 257), content_type="application/json"
    )

    assert_rejected(result, 413, row_counts, before)


def test_default_body_limit_is_64_kib(client, row_counts, post_route):
    path, body = post_route
    assert (
        client.simulate_post(
            "/participant",
            body=padded_body({"name": "Ada"}, 65536),
            content_type="application/json",
        ).status_code
        == 200
    )
    before = row_counts()

    result = client.simulate_post(
        path, body=padded_body(body, 65537), content_type="application/json"
    )

    assert_rejected(result, 413, row_counts, before)


class BrokenBackend:
    """Unit-test stub for the store and the search backend: every call fails like a broken disk."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise RuntimeError("disk I/O error at /srv/secret/feed.db")

        return fail


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/participant/1", None),
        ("POST", "/participant", {"name": "Ada"}),
        ("GET", "/participant/1/inbound", None),
        ("GET", "/outbound?keywords=apple", None),
    ],
)
def test_unexpected_errors_are_a_json_500_without_internals(api_config, caplog, method, path, body):
    app = create_app(api_config, Feed(BrokenBackend(), BrokenBackend()))

    result = falcon.testing.TestClient(app).simulate_request(method, path, json=body)

    assert_error(result, 500)
    for internal in ("secret", "RuntimeError", "disk I/O", "Traceback", ".py"):
        assert internal not in result.text
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == 1
    assert isinstance(logged[0].exc_info[1], RuntimeError)
