"""/participant and /participant/{id}: creating and reading participants."""

import falcon
import orjson

from feedsvc.api.resources.representation import participant_json
from feedsvc.api.resources.request import idempotent_write, json_object, text_field
from feedsvc.core.config import Config
from feedsvc.core.limits import NAME_MAX_CHARS
from feedsvc.service.feed import Feed


class Collection:
    def __init__(self, config: Config, feed: Feed) -> None:
        self._max_body_bytes = config.max_body_bytes
        self._feed = feed

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = json_object(req, self._max_body_bytes)
        name = text_field(body, "name", NAME_MAX_CHARS, strip=True)
        once = idempotent_write(req, body, lambda created: orjson.dumps(participant_json(created)))
        resp.media = participant_json(self._feed.create_participant(name, once))


class Item:
    def __init__(self, feed: Feed) -> None:
        self._feed = feed

    def on_get(self, req: falcon.Request, resp: falcon.Response, participant_id: int) -> None:
        resp.media = participant_json(self._feed.participant(participant_id))
