"""/outbound?keywords=: which participants posted about these words, best match first."""

import falcon

from feedsvc.api.resources.request import limit_param
from feedsvc.core.limits import KEYWORDS_MAX_CHARS
from feedsvc.core.wire import participant_link
from feedsvc.service.feed import Feed


class Senders:
    def __init__(self, feed: Feed) -> None:
        self._feed = feed

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        keywords = req.get_param("keywords", required=True)
        if not keywords.strip() or len(keywords) > KEYWORDS_MAX_CHARS:
            raise falcon.HTTPBadRequest(
                title="Invalid parameter",
                description=f"`keywords` must be 1 to {KEYWORDS_MAX_CHARS} characters.",
            )
        senders = self._feed.senders_matching(keywords, limit_param(req))
        resp.media = [participant_link(sender) for sender in senders]
