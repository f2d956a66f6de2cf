"""GET /openapi.json: a valid OpenAPI 3.1 document that matches what the service really answers."""

import random
import re
import sys

import falcon
import jsonschema
import pytest
import referencing
from openapi_spec_validator import validate

from feedsvc.api.openapi import NAME_PATTERN, WHITESPACE
from feedsvc.api.resources.representation import CURSOR_PATTERN, decode_cursor, encode_cursor
from feedsvc.api.resources.request import LINK_PATTERN, text_field
from feedsvc.core.limits import MAX_ID, NAME_MAX_CHARS
from tests.support.api import befriend, create_participant, publish

OPERATIONS = {
    ("/participant", "post"),
    ("/participant/{}", "get"),
    ("/participant/{}/friends", "post"),
    ("/participant/{}/friends", "get"),
    ("/participant/{}/outbound", "post"),
    ("/participant/{}/outbound", "get"),
    ("/participant/{}/inbound", "get"),
    ("/outbound", "get"),
}
# The document may describe itself too; the API operations above are what it must describe.
SELF = ("/openapi.json", "get")
OPERATIONS_ENDPOINTS = {("/health", "get"), ("/ready", "get"), ("/metrics", "get")}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def template(path):
    """A path with its parameter names blanked, so `{id}` and `{participant_id}` compare equal."""
    return re.sub(r"\{[^}]*\}", "{}", path)


@pytest.fixture
def document(client):
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    return result.json


def operation(document, path, method):
    """The operation object documented for a concrete path template and method."""
    for documented_path, item in document["paths"].items():
        if template(documented_path) == template(path) and method in item:
            return documented_path, item[method]
    raise AssertionError(f"{method.upper()} {path} is not documented")


def response_validator(document, path, method, status):
    """A JSON Schema validator for one documented response body, with the document's $refs."""
    documented_path, documented = operation(document, path, method)
    response = documented["responses"][status]
    escaped_path = documented_path.replace("~", "~0").replace("/", "~1")
    location = response.get("$ref", f"#/paths/{escaped_path}/{method}/responses/{status}")
    resource = referencing.Resource.from_contents(
        {**document, "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:feed"}
    )
    registry = referencing.Registry().with_resource("urn:feed", resource)
    schema = {"$ref": f"urn:feed{location}/content/application~1json/schema"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")

    validate(document)


def test_every_operation_is_documented(document):
    documented = {
        (template(path), method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }

    assert documented - {SELF} == OPERATIONS | OPERATIONS_ENDPOINTS


@pytest.mark.parametrize(("path", "method"), sorted(OPERATIONS))
def test_every_operation_documents_that_the_database_may_be_unavailable(document, path, method):
    _, documented = operation(document, path, method)
    assert "503" in documented["responses"]


@pytest.mark.parametrize(("path", "method"), sorted(OPERATIONS))
def test_every_operation_documents_its_success_and_error_responses(document, path, method):
    _, documented = operation(document, path, method)
    statuses = set(documented["responses"])

    assert "200" in statuses
    if method == "post":
        assert {"400", "413", "415"} <= statuses
    if "{}" in path:
        assert "404" in statuses
    if path in {"/participant/{}/outbound", "/participant/{}/inbound", "/outbound"}:
        assert "400" in statuses


def test_occurred_is_documented_as_ignored(document):
    _, documented = operation(document, "/participant/{}/outbound", "post")
    raw = str(documented["requestBody"]).lower() + str(document.get("components", {})).lower()

    assert "occurred" in raw
    assert "ignored" in raw


def test_documented_schemas_match_real_responses(indexed_client, document):
    client = indexed_client
    ada = create_participant(client, "Ada")
    bob = create_participant(client, "Bob")
    checks = [
        ("/participant", "post", ada),
        ("/participant/{id}", "get", client.simulate_get(ada["link"]).json),
        ("/participant/{id}/friends", "post", befriend(client, ada, bob)),
        ("/participant/{id}/friends", "get", client.simulate_get(f"{ada['link']}/friends").json),
        ("/participant/{id}/outbound", "post", publish(client, ada, "Hi", "apple")),
        ("/participant/{id}/outbound", "get", client.simulate_get(f"{ada['link']}/outbound").json),
        ("/participant/{id}/inbound", "get", client.simulate_get(f"{bob['link']}/inbound").json),
        ("/outbound", "get", client.simulate_get("/outbound?keywords=apple").json),
        ("/health", "get", client.simulate_get("/health").json),
        ("/ready", "get", client.simulate_get("/ready").json),
    ]

    for path, method, body in checks:
        assert body, f"{method} {path} returned an empty body; the check would prove nothing"
        response_validator(document, path, method, "200").validate(body)


def test_documented_error_schema_matches_real_errors(client, document):
    errors = [
        ("/participant/{id}", "get", "404", client.simulate_get("/participant/999999")),
        ("/participant", "post", "400", client.simulate_post("/participant", json={"name": ""})),
    ]

    for path, method, status, result in errors:
        assert result.status_code == int(status)
        response_validator(document, path, method, status).validate(result.json)


def test_schemas_reject_what_the_service_never_sends(document):
    """Guard against a permissive schema (e.g. `{}`) that would make the checks above vacuous."""
    validator = response_validator(document, "/participant/{id}", "get", "200")

    assert not validator.is_valid({"id": "1", "name": "Ada", "link": "/participant/1"})
    assert not validator.is_valid({"name": "Ada", "link": "/participant/1"})
    assert not validator.is_valid([])


@pytest.mark.parametrize(("path", "method"), sorted(op for op in OPERATIONS if op[1] == "post"))
def test_every_post_documents_the_idempotency_key_and_its_422(document, path, method):
    _, documented = operation(document, path, method)
    headers = [p["name"] for p in documented.get("parameters", []) if p["in"] == "header"]
    assert headers == ["Idempotency-Key"]
    assert "422" in documented["responses"]
    assert "Idempotent-Replayed" in documented["responses"]["200"]["headers"]


def test_the_whitespace_class_is_what_str_strip_removes():
    pattern = re.compile(WHITESPACE)
    every_character = map(chr, range(sys.maxunicode + 1))

    assert {c for c in every_character if pattern.fullmatch(c)} == {
        chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()
    }


def test_the_name_pattern_accepts_exactly_the_names_the_service_accepts():
    pattern = re.compile(NAME_PATTERN)
    pieces = [" ", "\t", "\u3000", "\x1c", "\ufeff", "\n", "a", "é", "\U0001f600"]
    generator = random.Random(7)
    names = ["".join(generator.choices(pieces, k=generator.randrange(60))) for _ in range(20_000)]

    for name in names:
        try:
            text_field({"name": name}, "name", NAME_MAX_CHARS, strip=True)
            accepted = True
        except falcon.HTTPBadRequest:
            accepted = False
        assert bool(pattern.search(name)) == accepted, repr(name)


def test_the_cursor_pattern_is_exactly_the_cursors_the_service_makes():
    pattern = re.compile(CURSOR_PATTERN)
    generator = random.Random(7)
    post_ids = [1, 15, 16, MAX_ID, *(generator.randrange(1, MAX_ID) for _ in range(1000))]

    for post_id in post_ids:
        cursor = encode_cursor(post_id)
        assert pattern.fullmatch(cursor) and decode_cursor(cursor) == post_id
    for outside in ["0", "01", "8000000000000000", "A", "-1", "1 ", "bzE"]:
        assert not pattern.fullmatch(outside)
        with pytest.raises(falcon.HTTPBadRequest):
            decode_cursor(outside)


def test_the_link_pattern_stops_at_the_largest_id():
    pattern = re.compile(LINK_PATTERN)

    assert pattern.fullmatch(f"/participant/{MAX_ID}")
    assert not pattern.fullmatch(f"/participant/{MAX_ID + 1}")
    assert not pattern.fullmatch("/participant/01")
