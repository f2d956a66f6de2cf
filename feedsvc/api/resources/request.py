"""Reading client input: JSON bodies, participant references and query parameters, validated."""

import hashlib
import re
from collections.abc import Callable
from typing import Any

import falcon
import orjson

from feedsvc.core.limits import DEFAULT_LIMIT, IDEMPOTENCY_KEY_MAX_CHARS, MAX_ID, MAX_LIMIT
from feedsvc.core.wire import LINK_PREFIX
from feedsvc.service.feed import IdempotentWrite

# Path segments that name a participant: a positive 63-bit integer or the route does not match.
ID_CONVERTER_NAME = "participant_id"
ID_CONVERTER = f"{ID_CONVERTER_NAME}(min=1, max={MAX_ID})"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# An sf-string as the IETF draft asks ("..."), or the bare token many clients send: printable
# ASCII without quotes or backslashes, so a key needs no unescaping and is safe in a log.
# Stated as is in /openapi.json.
IDEMPOTENCY_KEY_PATTERN = (
    rf'^(?:"([\x20\x21\x23-\x5b\x5d-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}})"'
    rf"|([\x21\x23-\x5b\x5d-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}))$"
)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def decimal_pattern(maximum: int) -> str:
    """A regex group matching exactly the decimals 1..maximum, without leading zeros."""
    digits = str(maximum)
    alternatives = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for position, digit in enumerate(digits):
        lowest = 1 if position == 0 else 0
        if int(digit) > lowest:
            rest = len(digits) - position - 1
            alternatives.append(f"{digits[:position]}[{lowest}-{int(digit) - 1}][0-9]{{{rest}}}")
    alternatives.append(digits)
    return f"({'|'.join(alternatives)})"


# A participant link, exactly: its id is a positive 63-bit integer. Stated as is in /openapi.json.
LINK_PATTERN = f"^{re.escape(LINK_PREFIX)}{decimal_pattern(MAX_ID)}$"
_LINK = re.compile(LINK_PATTERN)


class IdConverter(falcon.routing.IntConverter):
    """Only ASCII digits name an id: int() alone also takes '+1', '1_000' and non-ASCII digits."""

    __slots__ = ()

    def convert(self, value: str) -> int | None:
        if not (value.isascii() and value.isdigit()):
            return None
        return super().convert(value)


def json_object(req: falcon.Request, max_body_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or the 4xx that says why it is not one."""
    if (
        req.content_type is None
        or req.content_type.split(";")[0].strip().lower() != falcon.MEDIA_JSON
    ):
        raise falcon.HTTPUnsupportedMediaType(description="The body must be application/json.")
    if req.content_length is None:
        raise falcon.HTTPLengthRequired(description="A JSON body needs a Content-Length header.")
    if req.content_length > max_body_bytes:
        raise falcon.HTTPContentTooLarge(
            description=f"The body may be at most {max_body_bytes} bytes."
        )
    body = req.get_media()
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(
            title="Invalid body", description="The body must be a JSON object."
        )
    return body


def text_field(body: dict[str, Any], name: str, max_chars: int, *, strip: bool = False) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise falcon.HTTPBadRequest(
            title="Invalid field", description=f"`{name}` is required and must be a string."
        )
    if strip:
        value = value.strip()
    if not value or len(value) > max_chars:
        raise falcon.HTTPBadRequest(
            title="Invalid field", description=f"`{name}` must be 1 to {max_chars} characters."
        )
    return value


def participant_ref(body: dict[str, Any], name: str) -> int | None:
    """A participant named by link (`/participant/7`) or bare id (7); None when absent."""
    value = body.get(name)
    if value is None and name not in body:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        participant_id = value
    elif isinstance(value, float) and value.is_integer():
        # JSON Schema's integer, as /openapi.json states it: 7.0 is the integer 7.
        participant_id = int(value)
    elif isinstance(value, str) and (link := _LINK.fullmatch(value)):
        participant_id = int(link[1])
    else:
        participant_id = 0
    if not 0 < participant_id <= MAX_ID:
        raise falcon.HTTPBadRequest(
            title="Invalid field",
            description=f"`{name}` must be a link like /participant/7 or a positive id.",
        )
    return participant_id


def same_participant(body: dict[str, Any], participant_id: int) -> None:
    """A `from` in the body, when given, must be the participant of the URL."""
    sender = participant_ref(body, "from")
    if sender is not None and sender != participant_id:
        raise falcon.HTTPBadRequest(
            title="Invalid field", description="`from` must be the participant named in the URL."
        )


def limit_param(req: falcon.Request) -> int:
    """?limit= as ASCII digits only: int() alone also takes '+5', ' 5', '1_0' and other digits."""
    value = req.get_param("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_LIMIT):
        raise falcon.HTTPInvalidParam(
            f"The value must be an integer from 1 to {MAX_LIMIT}.", "limit"
        )
    return int(value)


def idempotent_write(
    req: falcon.Request, body: dict[str, Any], render: Callable[[Any], bytes]
) -> IdempotentWrite | None:
    """The request's Idempotency-Key with a fingerprint of what it asks for; None without one."""
    header = req.get_header(IDEMPOTENCY_KEY_HEADER)
    if header is None:
        return None
    key = _IDEMPOTENCY_KEY.match(header.strip())
    if key is None:
        raise falcon.HTTPBadRequest(
            title="Invalid header",
            description=f"{IDEMPOTENCY_KEY_HEADER} must be a quoted string of 1 to "
            f"{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters without quotes or "
            'backslashes, such as "8e03978e-40d5-43e8-bc93-6894a57f9324".',
        )
    digest = hashlib.sha256(f"{req.method} {req.path}\n".encode())
    digest.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return IdempotentWrite(key[1] or key[2], digest.hexdigest(), render)
