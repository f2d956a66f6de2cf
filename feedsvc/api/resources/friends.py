"""/participant/{id}/friends: symmetric friendships, created once and listed from either side."""

import falcon
import orjson

from feedsvc.api.resources.representation import friendship_json
from feedsvc.api.resources.request import (
    idempotent_write,
    json_object,
    participant_ref,
    same_participant,
)
from feedsvc.core.config import Config
from feedsvc.service.feed import Feed


class Collection:
    def __init__(self, config: Config, feed: Feed) -> None:
        self._max_body_bytes = config.max_body_bytes
        self._feed = feed

    def on_get(self, req: falcon.Request, resp: falcon.Response, participant_id: int) -> None:
        resp.media = [friendship_json(found) for found in self._feed.friendships(participant_id)]

    def on_post(self, req: falcon.Request, resp: falcon.Response, participant_id: int) -> None:
        body = json_object(req, self._max_body_bytes)
        same_participant(body, participant_id)
        friend_id = participant_ref(body, "to")
        if friend_id is None:
            raise falcon.HTTPBadRequest(title="Invalid field", description="`to` is required.")
        once = idempotent_write(req, body, lambda found: orjson.dumps(friendship_json(found)))
        resp.media = friendship_json(self._feed.befriend(participant_id, friend_id, once))
