"""The WSGI app: routes wired to injected dependencies, and nothing else."""

from collections.abc import Sequence
from typing import TypeAlias

import falcon
import orjson

from feedsvc.api import errors, routes
from feedsvc.api.middleware import RequestMetrics
from feedsvc.api.openapi import Document
from feedsvc.api.resources import friends, ops, participants, search, timelines
from feedsvc.api.resources.request import ID_CONVERTER_NAME, IdConverter
from feedsvc.core.config import Config
from feedsvc.service.feed import Feed

# What the composition hands gunicorn, named here so that only this layer imports falcon.
App: TypeAlias = falcon.App


def create_app(config: Config, feed: Feed, middleware: Sequence[object] = ()) -> App:
    app = falcon.App(middleware=[RequestMetrics(), *middleware])
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json})
    app.resp_options.media_handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json})
    errors.install(app)
    app.router_options.converters[ID_CONVERTER_NAME] = IdConverter

    app.add_route(routes.PARTICIPANTS, participants.Collection(config, feed))
    app.add_route(routes.PARTICIPANT, participants.Item(feed))
    app.add_route(routes.FRIENDS, friends.Collection(config, feed))
    app.add_route(routes.OUTBOUND, timelines.Outbound(config, feed))
    app.add_route(routes.INBOUND, timelines.Inbound(feed))
    app.add_route(routes.SEARCH, search.Senders(feed))
    app.add_route(routes.OPENAPI, Document())
    app.add_route(routes.HEALTH, ops.Health())
    app.add_route(routes.READY, ops.Readiness(feed))
    app.add_route(routes.METRICS, ops.Metrics())
    return app
