"""The API's OpenAPI 3.1 description, built once and served as bytes by /openapi.json."""

from typing import Any

import falcon
import orjson

from feedsvc.api.errors import REPLAYED_HEADER
from feedsvc.api.positions import POSITION_HEADER
from feedsvc.api.resources.representation import CURSOR_PATTERN
from feedsvc.api.resources.request import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    LINK_PATTERN,
)
from feedsvc.core.limits import (
    DEFAULT_LIMIT,
    KEYWORDS_MAX_CHARS,
    MAX_ID,
    MAX_LIMIT,
    NAME_MAX_CHARS,
    STORY_MAX_CHARS,
    SUBJECT_MAX_CHARS,
)
from feedsvc.core.version import release

# The characters Python's str.strip() removes (str.isspace), as a regex class: the validation
# trims names and tests keywords with them, so the patterns below say exactly what it accepts.
WHITESPACE = r"[\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
NOT_WHITESPACE = "[^" + WHITESPACE[1:]
# 1 to NAME_MAX_CHARS characters once leading and trailing whitespace is trimmed.
NAME_PATTERN = (
    f"^{WHITESPACE}*{NOT_WHITESPACE}(?:[\\s\\S]{{0,{NAME_MAX_CHARS - 2}}}{NOT_WHITESPACE})?"
    f"{WHITESPACE}*$"
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed JSON, not an object, a missing, wrongly typed or over-long field",
        404: "Unknown participant or route",
        405: "Method not allowed on this route",
        411: "A body was sent without Content-Length",
        413: "Body larger than FEED_MAX_BODY_BYTES",
        415: "A body that is not application/json",
        422: "The Idempotency-Key was already used for a different request",
        500: "Unexpected error (details are logged, never returned)",
        503: (
            "Database or search engine unavailable for now; retry after `Retry-After` seconds."
            " When the connection broke during a write's COMMIT, `retry_safe` says whether"
            " sending the request again is safe"
        ),
    }
    return {str(status): _json(_ref("Error"), reasons[status]) for status in (*statuses, 500, 503)}


_PARTICIPANT_ID = {
    "name": "participant_id",
    "in": "path",
    "required": True,
    "description": "A positive 63-bit integer; anything else is 404.",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
}
_PAGE_PARAMS = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "before",
        "in": "query",
        "description": "Opaque cursor taken from a previous response's Link rel=next header.",
        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
    },
]
_NEXT_LINK = {
    "Link": {
        "description": 'Present when more items exist: `<...?limit=N&before=CURSOR>; rel="next"`.',
        "schema": {"type": "string"},
    }
}
_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}
_BODY_ERRORS = (400, 404, 405, 411, 413, 415, 422)
_IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "IETF httpapi Idempotency-Key: a unique value per write, such as a quoted UUID. A retry"
        " with the same key and request within 24 hours is answered with the original response"
        f" (marked `{REPLAYED_HEADER}: true`) and writes nothing; the same key with another"
        " request is 422."
    ),
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    "example": '"8e03978e-40d5-43e8-bc93-6894a57f9324"',
}
_REPLAYED = {
    REPLAYED_HEADER: {
        "description": "`true` when the response is the stored one of an earlier request",
        "schema": {"type": "string", "enum": ["true"]},
    },
    POSITION_HEADER: {
        "description": (
            "With read replicas configured: the write's position in the primary's replication"
            " stream (a MariaDB GTID list such as `0-1-4711`). Send it back on the next reads to"
            " see this write whichever host or replica serves them (on a replayed response: the"
            " primary's position then, at or past the write). Absent without replicas."
        ),
        "schema": {"type": "string"},
    },
}
# Read-your-writes: every read that may be served by a replica takes the last write's position.
_READ_AFTER = {
    "name": POSITION_HEADER,
    "in": "header",
    "required": False,
    "description": (
        f"The `{POSITION_HEADER}` of the client's last write. The read is then served by a"
        " replica that has applied that write (waiting at most FEED_REPLICA_TOKEN_WAIT_MS for"
        " one), else by the primary, so it sees the write. Any other value is read on the"
        " primary. Without it a read may lag the primary by up to FEED_REPLICA_MAX_LAG_MS."
        " Ignored when no replicas are configured (every read is on the primary)."
    ),
    "schema": {"type": "string"},
    "example": "0-1-4711",
}


def _written(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """The 200 response of a write, which may be a replay of the original one."""
    response = _json(schema, description)
    response["headers"] = _REPLAYED
    return response


def _page(item: str, description: str) -> dict[str, Any]:
    response = _json({"type": "array", "items": _ref(item)}, description)
    response["headers"] = _NEXT_LINK
    return response


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "feedsvc",
        "version": release(),
        "description": (
            "A news feed: participants, symmetric friendships, posts socially broadcast into "
            "every friend's inbound, timelines and keyword search. Wherever a body refers to a participant "
            "it accepts a link (`/participant/7`) or a bare integer id."
        ),
    },
    "paths": {
        "/participant": {
            "post": {
                "summary": "Create a participant",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewParticipant")}},
                },
                "parameters": [_IDEMPOTENCY_KEY],
                "responses": {
                    "200": _written(_ref("Participant"), "The new participant"),
                    **_errors(*_BODY_ERRORS),
                },
            }
        },
        "/participant/{participant_id}": {
            "parameters": [_PARTICIPANT_ID],
            "get": {
                "summary": "Read a participant",
                "parameters": [_READ_AFTER],
                "responses": {
                    "200": _json(_ref("Participant"), "The participant"),
                    **_errors(404, 405),
                },
            },
        },
        "/participant/{participant_id}/friends": {
            "parameters": [_PARTICIPANT_ID],
            "get": {
                "summary": "Every friendship of the participant, once, from its side",
                "parameters": [_READ_AFTER],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Friendship")}, "Friendships"),
                    **_errors(404, 405),
                },
            },
            "post": {
                "summary": "Befriend someone (symmetric; asking again returns the existing friendship)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewFriendship")}},
                },
                "parameters": [_IDEMPOTENCY_KEY],
                "responses": {
                    "200": _written(_ref("Friendship"), "The friendship"),
                    **_errors(*_BODY_ERRORS),
                },
            },
        },
        "/participant/{participant_id}/outbound": {
            "parameters": [_PARTICIPANT_ID],
            "get": {
                "summary": "The participant's own posts, newest first",
                "parameters": [*_PAGE_PARAMS, _READ_AFTER],
                "responses": {
                    "200": _page("Outbound", "A page of posts"),
                    **_errors(400, 404, 405),
                },
            },
            "post": {
                "summary": "Post: stored and delivered to every current friend's inbound, atomically",
                "description": (
                    "The post is in the sender's outbound and every friend's inbound when the "
                    "answer arrives. Search is near-real-time: the post is queued for indexing in "
                    "the same transaction and is findable within about a second."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewOutbound")}},
                },
                "parameters": [_IDEMPOTENCY_KEY],
                "responses": {
                    "200": _written(_ref("Outbound"), "The stored post"),
                    **_errors(*_BODY_ERRORS),
                },
            },
        },
        "/participant/{participant_id}/inbound": {
            "parameters": [_PARTICIPANT_ID],
            "get": {
                "summary": "Posts from the participant's friends, newest first",
                "parameters": [*_PAGE_PARAMS, _READ_AFTER],
                "responses": {"200": _page("Inbound", "A page of posts"), **_errors(400, 404, 405)},
            },
        },
        "/outbound": {
            "get": {
                "summary": "Distinct senders whose posts match any keyword, best match first",
                "description": (
                    "Near-real-time: a post is found within about a second of its acknowledgement."
                ),
                "parameters": [
                    {
                        "name": "keywords",
                        "in": "query",
                        "required": True,
                        "description": (
                            "Words, not a query language: any other character is plain text. "
                            "At least one character that is not whitespace."
                        ),
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": KEYWORDS_MAX_CHARS,
                            "pattern": NOT_WHITESPACE,
                        },
                    },
                    _PAGE_PARAMS[0],
                    _READ_AFTER,
                ],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Link")}, "Sender links"),
                    **_errors(400, 405),
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Liveness: the worker answers; no I/O",
                "responses": {"200": _json(_STATUS, "Alive")},
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: the database answers; 503 while it does not",
                "responses": {"200": _json(_STATUS, "Ready for traffic"), **_errors()},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition, summed over all workers",
                "responses": {
                    "200": {
                        "description": "Request counts and latencies by route, pool, outbox",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Link": {"type": "string", "pattern": LINK_PATTERN},
            "Ref": {
                "description": "A participant link or a bare id",
                "oneOf": [_ref("Link"), {"type": "integer", "minimum": 1, "maximum": MAX_ID}],
            },
            "Error": {
                "type": "object",
                "required": ["title", "description"],
                "properties": {
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "retry_safe": {
                        "type": "boolean",
                        "description": "Only on a 503 for a write whose COMMIT lost its connection",
                    },
                },
            },
            "NewParticipant": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "description": f"1 to {NAME_MAX_CHARS} characters after trimming",
                        "pattern": NAME_PATTERN,
                    }
                },
            },
            "Participant": {
                "type": "object",
                "required": ["id", "name", "link"],
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "link": _ref("Link"),
                },
            },
            "NewFriendship": {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "to": _ref("Ref"),
                    "from": {
                        **_ref("Ref"),
                        "description": "Optional; must be the participant of the URL",
                    },
                },
            },
            "Friendship": {
                "type": "object",
                "required": ["id", "from", "to"],
                "properties": {"id": {"type": "integer"}, "from": _ref("Link"), "to": _ref("Link")},
            },
            "NewOutbound": {
                "type": "object",
                "required": ["subject", "story"],
                "properties": {
                    "subject": {"type": "string", "minLength": 1, "maxLength": SUBJECT_MAX_CHARS},
                    "story": {"type": "string", "minLength": 1, "maxLength": STORY_MAX_CHARS},
                    "from": {
                        **_ref("Ref"),
                        "description": "Optional; must be the participant of the URL",
                    },
                    "occurred": {
                        "description": "Accepted for compatibility (any value), ignored: the server assigns it.",
                    },
                },
            },
            "Outbound": {
                "type": "object",
                "required": ["from", "occurred", "subject", "story"],
                "properties": {
                    "from": _ref("Link"),
                    "occurred": {
                        "type": "string",
                        "format": "date-time",
                        "description": "UTC, ISO 8601 with milliseconds and Z",
                    },
                    "subject": {"type": "string"},
                    "story": {"type": "string"},
                },
            },
            "Inbound": {
                "type": "object",
                "required": ["from", "to", "occurred", "subject", "story"],
                "properties": {
                    "from": _ref("Link"),
                    "to": _ref("Link"),
                    "occurred": {"type": "string", "format": "date-time"},
                    "subject": {"type": "string"},
                    "story": {"type": "string"},
                },
            },
        }
    },
}


class Document:
    """Serves the description; serialized once, at start-up."""

    def __init__(self) -> None:
        self._body = orjson.dumps(DOCUMENT)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self._body
        resp.content_type = falcon.MEDIA_JSON
