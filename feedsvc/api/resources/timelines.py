"""/participant/{id}/outbound and /inbound: posting, and both timelines, newest first, paginated."""

from collections.abc import Callable

import falcon
import orjson

from feedsvc.api.resources.representation import (
    decode_cursor,
    inbound_json,
    next_link,
    outbound_json,
)
from feedsvc.api.resources.request import (
    idempotent_write,
    json_object,
    limit_param,
    same_participant,
    text_field,
)
from feedsvc.core.config import Config
from feedsvc.core.limits import STORY_MAX_CHARS, SUBJECT_MAX_CHARS
from feedsvc.core.model import Page
from feedsvc.core.wire import participant_link
from feedsvc.service.feed import Feed


def _read_page(
    req: falcon.Request, resp: falcon.Response, read: Callable[[int | None, int], Page]
) -> Page:
    """Apply ?limit= and ?before= to a timeline read, and link the next page when there is one."""
    limit = limit_param(req)
    cursor = req.get_param("before")
    page = read(decode_cursor(cursor) if cursor is not None else None, limit)
    if page.next_before is not None:
        resp.append_header("Link", next_link(req, limit, page.next_before))
    return page


class Outbound:
    def __init__(self, config: Config, feed: Feed) -> None:
        self._max_body_bytes = config.max_body_bytes
        self._feed = feed

    def on_get(self, req: falcon.Request, resp: falcon.Response, participant_id: int) -> None:
        page = _read_page(
            req, resp, lambda before, limit: self._feed.outbound_page(participant_id, before, limit)
        )
        resp.media = [outbound_json(post) for post in page.posts]

    def on_post(self, req: falcon.Request, resp: falcon.Response, participant_id: int) -> None:
        body = json_object(req, self._max_body_bytes)
        same_participant(body, participant_id)
        subject = text_field(body, "subject", SUBJECT_MAX_CHARS)
        story = text_field(body, "story", STORY_MAX_CHARS)
        # A client-sent `occurred` is accepted for compatibility and ignored: the server dates it.
        once = idempotent_write(req, body, lambda post: orjson.dumps(outbound_json(post)))
        post = self._feed.social_broadcast(participant_id, subject, story, once)
        resp.media = outbound_json(post)


class Inbound:
    def __init__(self, feed: Feed) -> None:
        self._feed = feed

    def on_get(self, req: falcon.Request, resp: falcon.Response, participant_id: int) -> None:
        page = _read_page(
            req, resp, lambda before, limit: self._feed.inbound_page(participant_id, before, limit)
        )
        recipient = participant_link(participant_id)
        resp.media = [inbound_json(post, recipient) for post in page.posts]
