"""Schemathesis hooks (SCHEMATHESIS_HOOKS): two built-in checks, minus what no schema can say.

Two rules relate a body to its URL, which JSON Schema cannot express: a `from` must be the
participant of the URL, and nobody befriends themselves. A 400 for exactly those, recognised from
the request itself, is right; any other rejection of schema-valid data fails as usual. So does a
413 for a body under FEED_MAX_BODY_BYTES (the limit counts bytes, the schema characters). And a
404 naming a participant the body refers to is not the created resource (the URL's) gone missing.
Nor can a schema say that an Idempotency-Key already used for another request is refused (422).
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import (
    ensure_resource_availability,
    positive_data_acceptance,
)

from feedsvc.api.resources.request import LINK_PATTERN
from feedsvc.core.config import DEFAULT_MAX_BODY_BYTES

LINK = re.compile(LINK_PATTERN)
UNKNOWN_PARTICIPANT = re.compile(r"participant ([0-9]+) does not exist")
KEY_REUSED = "Idempotency-Key reused"


def referenced_id(value: Any) -> int | None:
    """The participant a body field names (link or bare id), or None when it names none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (link := LINK.fullmatch(value)):
        return int(link[1])
    return None


def url_participant(case: Any) -> int | None:
    """The participant id of the URL (the coverage phase may give it as text)."""
    value = (case.path_parameters or {}).get("participant_id")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value if isinstance(value, int) else None


def breaks_a_cross_field_rule(case: Any) -> bool:
    """The body's `from` is another participant than the URL's, or a friendship with oneself."""
    body = case.body if isinstance(case.body, dict) else {}
    participant = url_participant(case)
    sender = referenced_id(body.get("from"))
    if "from" in body and sender is not None and sender != participant:
        return True
    return case.operation.path.endswith("/friends") and referenced_id(body.get("to")) == participant


def body_over_the_limit(response: Any) -> bool:
    request_body = response.request.body or b""
    return response.status_code == 413 and len(request_body) > DEFAULT_MAX_BODY_BYTES


@schemathesis.check
def schema_valid_data_is_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, minus the rejections the schema cannot foresee (see above)."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if response.status_code == 400 and breaks_a_cross_field_rule(case):
            return None
        if body_over_the_limit(response):
            return None
        if response.status_code == 422 and KEY_REUSED in (response.text or ""):
            return None
        raise


@schemathesis.check
def created_resources_are_found(ctx: Any, response: Any, case: Any) -> bool | None:
    """ensure_resource_availability, minus 404s about another participant the body names."""
    try:
        return ensure_resource_availability(ctx, response, case)
    except AssertionError:
        missing = UNKNOWN_PARTICIPANT.search(response.text or "")
        if missing and int(missing[1]) != url_participant(case):
            return None
        raise
