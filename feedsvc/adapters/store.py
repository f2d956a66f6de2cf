"""Storage on SQLAlchemy Core: every statement is built once, at import, and portable SQL.

Statements are compiled once per engine and run on the DB-API cursor (`Reader`, `run_in`).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    CompoundSelect,
    Connection,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from feedsvc.adapters.idempotency import Responses
from feedsvc.core.model import Friendship, Participant, Post
from feedsvc.db.engines import writer
from feedsvc.db.statements import READ_CONNECTIONS, CompiledQuery, ReadConnections, Reader, run_in
from feedsvc.db.tables import friendship, inbound, outbound, participant

_INSERT_PARTICIPANT = insert(participant).values(name=bindparam("name"))
_SELECT_PARTICIPANT = select(participant.c.id, participant.c.name).where(
    participant.c.id == bindparam("id")
)

_SELECT_PAIR = select(friendship.c.id).where(
    friendship.c.low_id == bindparam("low_id"), friendship.c.high_id == bindparam("high_id")
)
# The pair is inserted only when both participants exist and it does not yet: no separate
# checks, no extra round trips.
_LOW = participant.alias("low")
_HIGH = participant.alias("high")
_INSERT_PAIR = insert(friendship).from_select(
    ["low_id", "high_id"],
    select(_LOW.c.id, _HIGH.c.id).where(
        _LOW.c.id == bindparam("low_id"),
        _HIGH.c.id == bindparam("high_id"),
        ~exists(_SELECT_PAIR),
    ),
)


def _friends_union(participant_id: object, outbound_id: object | None = None) -> CompoundSelect:
    """Both halves of the symmetric friendship table: (friendship id or post id, friend id) rows."""
    key = friendship.c.id if outbound_id is None else outbound_id
    return union_all(
        select(key.label("id"), friendship.c.high_id.label("friend_id")).where(
            friendship.c.low_id == participant_id
        ),
        select(key.label("id"), friendship.c.low_id.label("friend_id")).where(
            friendship.c.high_id == participant_id
        ),
    )


# A GET is one statement: it also says whether the participant exists, so an empty answer needs
# no second query to tell a 404 from "nothing yet". This row of NULLs is there when they do.
_PARTICIPANT_ROW = (
    select(null(), null())
    .select_from(participant)
    .where(participant.c.id == bindparam("participant_id"))
)
# The friends, after the participant's row (NULL sorts before every id): [] for an unknown one.
_FRIENDS = union_all(
    *_friends_union(bindparam("participant_id")).selects, _PARTICIPANT_ROW
).subquery()
_SELECT_FRIENDS = select(_FRIENDS.c.id, _FRIENDS.c.friend_id).order_by(_FRIENDS.c.id)

# The post is inserted only when its sender exists: no separate check, no extra round trip.
_INSERT_POST = insert(outbound).from_select(
    ["sender_id", "occurred", "subject", "story"],
    select(
        participant.c.id,
        bindparam("occurred", type_=outbound.c.occurred.type),
        bindparam("subject", type_=outbound.c.subject.type),
        bindparam("story", type_=outbound.c.story.type),
    ).where(participant.c.id == bindparam("sender_id")),
)
# The social broadcast in one set-based statement: the friend list never leaves the database.
_FAN_OUT_ROWS = _friends_union(bindparam("sender_id"), bindparam("outbound_id", type_=BigInteger))
_FAN_OUT = insert(inbound).from_select(["outbound_id", "recipient_id"], _FAN_OUT_ROWS)

_POST_COLUMNS = (
    outbound.c.id,
    outbound.c.sender_id,
    outbound.c.occurred,
    outbound.c.subject,
    outbound.c.story,
)
_OUTBOUND_PAGE = (
    select(*_POST_COLUMNS)
    .where(outbound.c.sender_id == bindparam("participant_id"), outbound.c.id < bindparam("before"))
    .order_by(outbound.c.id.desc())
    .limit(bindparam("limit"))
)
_INBOUND_PAGE = (
    select(*_POST_COLUMNS)
    .select_from(inbound.join(outbound, outbound.c.id == inbound.c.outbound_id))
    .where(
        inbound.c.recipient_id == bindparam("participant_id"),
        inbound.c.outbound_id < bindparam("before"),
    )
    .order_by(inbound.c.outbound_id.desc())
    .limit(bindparam("limit"))
)
# A page, each in one statement that tells an unknown participant (no row at all) from one with no
# posts (a row of NULLs). MySQL: the participant's row of NULLs, then the page in its own
# parenthesised member, which keeps its index order and LIMIT; MariaDB sends a UNION ALL member by
# member, with no temporary table (a LEFT JOIN would sort the whole timeline in one).
_PARTICIPANT_POST_ROW = (
    select(*(null() for _ in _POST_COLUMNS))
    .select_from(participant)
    .where(participant.c.id == bindparam("participant_id"))
)
_OUTBOUND_PAGE_ON_MYSQL = union_all(_PARTICIPANT_POST_ROW, _OUTBOUND_PAGE)
_INBOUND_PAGE_ON_MYSQL = union_all(_PARTICIPANT_POST_ROW, _INBOUND_PAGE)
# SQLite (which has no parenthesised members): the page LEFT JOINed to the participant's row, a
# row of NULLs when it is empty; SQLite walks the same index in page order, no sort, no extra cost.
_OUTBOUND_PAGE_ON_SQLITE = (
    select(*_POST_COLUMNS)
    .select_from(
        participant.outerjoin(
            outbound,
            and_(outbound.c.sender_id == participant.c.id, outbound.c.id < bindparam("before")),
        )
    )
    .where(participant.c.id == bindparam("participant_id"))
    .order_by(outbound.c.id.desc())
    .limit(bindparam("limit"))
)
_INBOUND_PAGE_ON_SQLITE = (
    select(*_POST_COLUMNS)
    .select_from(
        participant.outerjoin(
            inbound,
            and_(
                inbound.c.recipient_id == participant.c.id,
                inbound.c.outbound_id < bindparam("before"),
            ),
        ).outerjoin(outbound, outbound.c.id == inbound.c.outbound_id)
    )
    .where(participant.c.id == bindparam("participant_id"))
    .order_by(inbound.c.outbound_id.desc())
    .limit(bindparam("limit"))
)

# Every post in id order, a batch at a time: for rebuilding a search index.
_POSTS_AFTER = (
    select(*_POST_COLUMNS)
    .where(outbound.c.id > bindparam("after"))
    .order_by(outbound.c.id)
    .limit(bindparam("limit"))
)
_POST_COUNT = select(func.count()).select_from(outbound)
_NEWEST_POST_ID = select(func.coalesce(func.max(outbound.c.id), 0))
# A scan (occurred has no index): for operator commands, never for requests.
_FIRST_POST_ID_SINCE = select(func.coalesce(func.min(outbound.c.id), 0)).where(
    outbound.c.occurred >= bindparam("since")
)
_PING = select(literal(1))


def _as_datetime(value: datetime | str) -> datetime:
    """Reads return ISO text: SQLite keeps what SQLAlchemy wrote, and mysqlclient's read
    connections pass DATETIME on as text; another MySQL driver returns datetimes."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _post(row: tuple[Any, ...]) -> Post:
    post_id, sender_id, occurred, subject, story = row
    return Post(post_id, sender_id, _as_datetime(occurred), subject, story)


def _page(rows: Sequence[tuple[Any, ...]]) -> list[Post] | None:
    """The posts of a page query's rows, newest first: None for no row (no such participant).

    SQL promises no order across UNION ALL members, so the participant's row of NULLs is dropped
    wherever it is and the page is put in order here (on rows already in order, one cheap pass).
    """
    if not rows:
        return None
    posts = [_post(row) for row in rows if row[0] is not None]
    posts.sort(key=attrgetter("id"), reverse=True)
    return posts


class CommitOutcomeUnknown(Exception):
    """The connection to a database server broke during COMMIT: the write may or may not be in."""


class Store:
    """The feed's tables behind intention-revealing methods; callers never write SQL."""

    # A write transaction: everything done on the connection commits together or not at all.
    # Raises CommitOutcomeUnknown when a server connection fails during the COMMIT itself.
    transaction: Callable[[], AbstractContextManager[Connection]]

    def __init__(self, engine: Engine) -> None:
        self._writer = writer(engine)
        # With read replicas (feedsvc.db.replicas) a write also reads on the primary and notes its
        # replication position for the response; without, it runs exactly as it always did.
        self._reads: ReadConnections = engine.get_execution_options()[READ_CONNECTIONS]
        self.transaction = self._noted_transaction if self._reads.routes else self._transaction
        # A failed COMMIT of the embedded SQLite is a rollback; a server's may have committed.
        self._commit_can_be_lost = engine.dialect.name != "sqlite"
        self.responses = Responses(engine)
        self._reader = Reader(engine)
        self._participant = CompiledQuery(engine, _SELECT_PARTICIPANT)
        self._friends = CompiledQuery(engine, _SELECT_FRIENDS)
        on_sqlite = engine.dialect.name == "sqlite"
        self._outbound_page = CompiledQuery(
            engine, _OUTBOUND_PAGE_ON_SQLITE if on_sqlite else _OUTBOUND_PAGE_ON_MYSQL
        )
        self._inbound_page = CompiledQuery(
            engine, _INBOUND_PAGE_ON_SQLITE if on_sqlite else _INBOUND_PAGE_ON_MYSQL
        )
        self._posts_after = CompiledQuery(engine, _POSTS_AFTER)
        self._post_count = CompiledQuery(engine, _POST_COUNT)
        self._newest_post_id = CompiledQuery(engine, _NEWEST_POST_ID)
        self._first_post_id_since = CompiledQuery(engine, _FIRST_POST_ID_SINCE)
        self._ping = CompiledQuery(engine, _PING)
        self._insert_participant = CompiledQuery(engine, _INSERT_PARTICIPANT)
        self._select_pair = CompiledQuery(engine, _SELECT_PAIR)
        self._insert_pair = CompiledQuery(engine, _INSERT_PAIR)
        self._insert_outbound = CompiledQuery(engine, _INSERT_POST)
        self._fan_out = CompiledQuery(engine, _FAN_OUT)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        committing = False
        try:
            with self._writer.begin() as conn:
                yield conn
                committing = True
        except DBAPIError as error:
            if committing and self._commit_can_be_lost:
                raise CommitOutcomeUnknown(str(error.orig)) from error
            raise

    @contextmanager
    def _noted_transaction(self) -> Iterator[Connection]:
        """The same transaction; its reads go to the primary, and after the COMMIT its position in
        the primary's replication stream is noted for the response (feedsvc.db.replicas)."""
        committing = False
        try:
            with self._writer.connect() as conn:
                with conn.begin(), self._reads.reads_on_primary():
                    yield conn
                    committing = True
                self._reads.note_commit(conn)
        except DBAPIError as error:
            if committing and self._commit_can_be_lost:
                raise CommitOutcomeUnknown(str(error.orig)) from error
            raise

    def ping(self) -> None:
        """The primary answers (a replica's state never makes the service unready)."""
        self._reader.primary_rows(self._ping, {})

    def insert_participant(self, conn: Connection, name: str) -> Participant:
        participant_id = run_in(conn, self._insert_participant, {"name": name}).lastrowid
        return Participant(id=participant_id, name=name)

    def participant(self, participant_id: int) -> Participant | None:
        rows = self._reader.rows(self._participant, {"id": participant_id})
        return Participant(*rows[0]) if rows else None

    def friendship_id(self, low_id: int, high_id: int) -> int | None:
        rows = self._reader.rows(self._select_pair, {"low_id": low_id, "high_id": high_id})
        return rows[0][0] if rows else None

    def insert_friendship(self, conn: Connection, low_id: int, high_id: int) -> int | None:
        """The new friendship's id; None, with nothing written, when it exists or a participant
        does not."""
        cursor = run_in(conn, self._insert_pair, {"low_id": low_id, "high_id": high_id})
        return cursor.lastrowid if cursor.rowcount else None

    def friendships(self, participant_id: int) -> list[Friendship] | None:
        """None when the participant does not exist."""
        rows = self._reader.rows(self._friends, {"participant_id": participant_id})
        if not rows:
            return None
        # The participant's row of NULLs comes first.
        return [
            Friendship(friendship_id, participant_id, friend_id)
            for friendship_id, friend_id in rows[1:]
        ]

    def insert_post(
        self, conn: Connection, sender_id: int, occurred: datetime, subject: str, story: str
    ) -> Post | None:
        """The stored post; None, with nothing written, when the sender does not exist."""
        values = {"sender_id": sender_id, "occurred": occurred, "subject": subject, "story": story}
        cursor = run_in(conn, self._insert_outbound, values)
        return Post(id=cursor.lastrowid, **values) if cursor.rowcount else None

    def fan_out(self, conn: Connection, post: Post) -> int:
        """Deliver a post to the inbound of every current friend of its sender; returns how many."""
        params = {"sender_id": post.sender_id, "outbound_id": post.id}
        return run_in(conn, self._fan_out, params).rowcount

    def outbound_page(self, participant_id: int, before: int, limit: int) -> list[Post] | None:
        """The sender's posts with ids below `before`, newest first; None when they do not exist."""
        params = {"participant_id": participant_id, "before": before, "limit": limit}
        return _page(self._reader.rows(self._outbound_page, params))

    def inbound_page(self, participant_id: int, before: int, limit: int) -> list[Post] | None:
        """Posts delivered to the recipient with ids below `before`, newest first; None when they
        do not exist."""
        params = {"participant_id": participant_id, "before": before, "limit": limit}
        return _page(self._reader.rows(self._inbound_page, params))

    def posts_after(self, after: int, limit: int) -> list[Post]:
        """Posts with ids above `after`, oldest first: walks the whole table a batch at a time."""
        rows = self._reader.primary_rows(self._posts_after, {"after": after, "limit": limit})
        return [_post(row) for row in rows]

    def post_count(self) -> int:
        return self._reader.primary_rows(self._post_count, {})[0][0]

    def newest_post_id(self) -> int:
        return self._reader.primary_rows(self._newest_post_id, {})[0][0]

    def first_post_id_since(self, since: datetime) -> int:
        """The id of the first post made at or after `since`; 0 when there is none."""
        return self._reader.primary_rows(self._first_post_id_since, {"since": since})[0][0]
