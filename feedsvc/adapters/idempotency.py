"""Responses of keyed writes (the Idempotency-Key header), kept in the write's own transaction.

The key, a fingerprint of the request and the response commit together with the write, or not
at all; so a stored key proves the write happened, and a missing one that it did not.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, insert, select
from sqlalchemy.engine import Engine

from feedsvc.db.statements import CompiledQuery, run_in
from feedsvc.db.tables import idempotency_key

# How long a key is honoured at least; rows older than this are purged. A day covers any client
# retry loop, as the IETF draft suggests, and costs about a row per write of that day.
RETENTION = timedelta(hours=24)

_SELECT = select(
    idempotency_key.c.fingerprint, idempotency_key.c.status, idempotency_key.c.body
).where(idempotency_key.c.key == bindparam("key"))
_INSERT = insert(idempotency_key).values(
    key=bindparam("key"),
    fingerprint=bindparam("fingerprint"),
    status=bindparam("status"),
    body=bindparam("body"),
    created=bindparam("created"),
)
_PURGE = delete(idempotency_key).where(idempotency_key.c.created < bindparam("cutoff"))


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: bytes


class Responses:
    """The idempotency_key table: what was answered to each key, until RETENTION has passed."""

    def __init__(self, engine: Engine) -> None:
        self._select = CompiledQuery(engine, _SELECT)
        self._insert = CompiledQuery(engine, _INSERT)
        self._purge = CompiledQuery(engine, _PURGE)

    def stored(self, conn: Connection, key: str) -> StoredResponse | None:
        row = run_in(conn, self._select, {"key": key}).fetchone()
        return StoredResponse(row[0], row[1], bytes(row[2])) if row else None

    def remember(
        self, conn: Connection, key: str, fingerprint: str, status: int, body: bytes, now: datetime
    ) -> None:
        """Insert in the write's transaction; a concurrent twin's commit makes it IntegrityError."""
        values = {
            "key": key,
            "fingerprint": fingerprint,
            "status": status,
            "body": body,
            "created": now,
        }
        run_in(conn, self._insert, values)

    def purge(self, conn: Connection, now: datetime) -> int:
        """Forget keys older than RETENTION; returns how many."""
        return run_in(conn, self._purge, {"cutoff": now - RETENTION}).rowcount
