"""The WSGI app: routes wired to injected dependencies, and nothing else."""

from collections.abc import Sequence

import falcon
import orjson

from feedsvc import errors, metrics
from feedsvc.config import Config
from feedsvc.feed import Feed
from feedsvc.openapi import Document
from feedsvc.resources import friends, ops, participants, search, timelines
from feedsvc.resources.request import ID_CONVERTER, ID_CONVERTER_NAME, IdConverter

PARTICIPANT = f"/participant/{{participant_id:{ID_CONVERTER}}}"


def create_app(config: Config, feed: Feed, middleware: Sequence[object] = ()) -> falcon.App:
    app = falcon.App(middleware=[metrics.RequestMetrics(), *middleware])
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json})
    app.resp_options.media_handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json})
    errors.install(app)
    app.router_options.converters[ID_CONVERTER_NAME] = IdConverter

    app.add_route("/participant", participants.Collection(config, feed))
    app.add_route(PARTICIPANT, participants.Item(feed))
    app.add_route(f"{PARTICIPANT}/friends", friends.Collection(config, feed))
    app.add_route(f"{PARTICIPANT}/outbound", timelines.Outbound(config, feed))
    app.add_route(f"{PARTICIPANT}/inbound", timelines.Inbound(feed))
    app.add_route("/outbound", search.Senders(feed))
    app.add_route("/openapi.json", Document())
    app.add_route("/health", ops.Health())
    app.add_route("/ready", ops.Readiness(feed))
    app.add_route("/metrics", ops.Metrics())
    return app
