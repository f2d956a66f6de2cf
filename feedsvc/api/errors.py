"""Every error leaves as Falcon's JSON error body, and no internals ever reach a client."""

import logging
from typing import Any

import falcon
import orjson
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from feedsvc.core.search import SearchUnavailable
from feedsvc.service.feed import (
    KeyReused,
    Replayed,
    SelfFriendship,
    UncertainWrite,
    UnknownParticipant,
)

# Seconds a client should wait before retrying a search the engine could not answer.
SEARCH_RETRY_AFTER_SECONDS = 5

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying when the database cannot serve it right now.
DATABASE_RETRY_AFTER_S = 1
# Down, restarting, unreachable, or every pooled connection busy past the checkout timeout.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)
# Marks a response answered from the Idempotency-Key store instead of by a new write.
REPLAYED_HEADER = "Idempotent-Replayed"


class UncertainWriteError(falcon.HTTPServiceUnavailable):
    """A 503 whose body also says, as `retry_safe`, whether sending the request again is safe."""

    def __init__(self, title: str, description: str, retry_safe: bool) -> None:
        super().__init__(
            title=title,
            description=description,
            retry_after=DATABASE_RETRY_AFTER_S,
        )
        self.retry_safe = retry_safe


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Always JSON, always with a description, whatever the client's Accept header says."""
    reason = error.title.split(" ", 1)[-1].lower()
    description = error.description or f"{req.method} {req.path}: {reason}"
    body: dict[str, Any] = {"title": error.title, "description": description}
    if isinstance(error, UncertainWriteError):
        body["retry_safe"] = error.retry_safe
    resp.data = orjson.dumps(body)
    resp.content_type = falcon.MEDIA_JSON


def unknown_participant(
    req: falcon.Request, resp: falcon.Response, error: UnknownParticipant, params: dict[str, Any]
) -> None:
    raise falcon.HTTPNotFound(title="Unknown participant", description=str(error))


def self_friendship(
    req: falcon.Request, resp: falcon.Response, error: SelfFriendship, params: dict[str, Any]
) -> None:
    raise falcon.HTTPBadRequest(title="Invalid friendship", description=str(error))


def database_unavailable(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    """A passing condition, not a bug: the client may retry; the pool reconnects by itself."""
    log.warning("database unavailable on %s %s: %s", req.method, req.path, _reason(error))
    raise falcon.HTTPServiceUnavailable(
        title="Database unavailable",
        description="The database cannot serve this request right now; retry shortly.",
        retry_after=DATABASE_RETRY_AFTER_S,
    )


def key_reused(
    req: falcon.Request, resp: falcon.Response, error: KeyReused, params: dict[str, Any]
) -> None:
    raise falcon.HTTPUnprocessableEntity(title="Idempotency-Key reused", description=str(error))


def replayed(
    req: falcon.Request, resp: falcon.Response, replay: Replayed, params: dict[str, Any]
) -> None:
    """The original response of a write already done for this Idempotency-Key, byte for byte."""
    resp.status = replay.response.status
    resp.data = replay.response.body
    resp.content_type = falcon.MEDIA_JSON
    resp.set_header(REPLAYED_HEADER, "true")


def uncertain_write(
    req: falcon.Request, resp: falcon.Response, error: UncertainWrite, params: dict[str, Any]
) -> None:
    """The connection broke during COMMIT: tell the client exactly what a retry would do."""
    title = "Write outcome unknown"
    if error.committed is False:
        title = "Write not committed"
        description = (
            "The database connection was lost while committing, and the write was not stored;"
            " sending it again is safe."
        )
    elif error.retry_safe:
        description = (
            "The database connection was lost while committing, so the write may or may not be"
            " stored. Sending it again with the same Idempotency-Key is safe: it is answered with"
            " the original response if the write was stored, and done once otherwise."
        )
    else:
        description = (
            "The database connection was lost while committing, so the write may or may not be"
            " stored; sending it again may store it twice. Send an Idempotency-Key header with"
            " writes to make retries safe."
        )
    raise UncertainWriteError(title, description, error.retry_safe)


def _reason(error: Exception) -> str:
    """The driver's own message, without the SQL and parameters SQLAlchemy appends."""
    return str(getattr(error, "orig", None) or type(error).__name__)


def search_unavailable(
    req: falcon.Request, resp: falcon.Response, error: SearchUnavailable, params: dict[str, Any]
) -> None:
    log.warning("search unavailable: %s", error.__cause__ or error)
    raise falcon.HTTPServiceUnavailable(
        title="Search unavailable",
        description="The search engine did not answer; try again shortly.",
        retry_after=SEARCH_RETRY_AFTER_SECONDS,
    )


def unexpected(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]
) -> None:
    """An error nobody foresaw: log it whole, tell the client only that it happened."""
    log.exception("unexpected error on %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(
        title="Internal error", description="The server could not complete the request."
    )


def install(app: falcon.App) -> None:
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(UnknownParticipant, unknown_participant)
    app.add_error_handler(SelfFriendship, self_friendship)
    app.add_error_handler(DATABASE_UNAVAILABLE, database_unavailable)
    app.add_error_handler(SearchUnavailable, search_unavailable)
    app.add_error_handler(KeyReused, key_reused)
    app.add_error_handler(Replayed, replayed)
    app.add_error_handler(UncertainWrite, uncertain_write)
