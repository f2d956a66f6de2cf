"""How feed values look on the wire: participant links and the JSON shapes clients expect."""

import re
from typing import Any

import falcon

from feedsvc.core.model import Friendship, Participant, Post
from feedsvc.core.wire import participant_link, timestamp_text

# A `before` cursor: a post id (1 to MAX_ID) in lowercase hex without leading zeros. Only what
# encode_cursor makes matches, so the OpenAPI document can state the format exactly.
CURSOR_PATTERN = "^(?:[1-9a-f][0-9a-f]{0,14}|[1-7][0-9a-f]{15})$"
_CURSOR = re.compile(CURSOR_PATTERN)


def participant_json(found: Participant) -> dict[str, Any]:
    return {"id": found.id, "name": found.name, "link": participant_link(found.id)}


def friendship_json(found: Friendship) -> dict[str, Any]:
    return {
        "id": found.id,
        "from": participant_link(found.participant_id),
        "to": participant_link(found.friend_id),
    }


def outbound_json(post: Post) -> dict[str, Any]:
    return {
        "from": participant_link(post.sender_id),
        "occurred": timestamp_text(post.occurred),
        "subject": post.subject,
        "story": post.story,
    }


def inbound_json(post: Post, recipient_link: str) -> dict[str, Any]:
    return {
        "from": participant_link(post.sender_id),
        "to": recipient_link,
        "occurred": timestamp_text(post.occurred),
        "subject": post.subject,
        "story": post.story,
    }


def encode_cursor(before: int) -> str:
    """An opaque `before` cursor: clients pass it back, never build it."""
    return f"{before:x}"


def decode_cursor(cursor: str) -> int:
    if not _CURSOR.fullmatch(cursor):
        raise falcon.HTTPBadRequest(
            title="Invalid cursor", description="`before` must be a cursor from a Link header."
        )
    return int(cursor, 16)


def next_link(req: falcon.Request, limit: int, before: int) -> str:
    return f'<{req.path}?limit={limit}&before={encode_cursor(before)}>; rel="next"'
