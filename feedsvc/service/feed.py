"""The feed's rules: who may befriend whom, the social broadcast, timelines and search."""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from feedsvc.adapters.idempotency import StoredResponse
from feedsvc.adapters.store import CommitOutcomeUnknown, Store
from feedsvc.core.clock import utc_now
from feedsvc.core.limits import MAX_ID
from feedsvc.core.model import Friendship, Page, Participant, Post
from feedsvc.core.protocols import PostListener, SearchBackend
from feedsvc.db.retries import retry_transaction

log = logging.getLogger(__name__)

# How often (per worker) a keyed write also deletes the keys past their retention.
KEY_PURGE_INTERVAL_S = 60.0
T = TypeVar("T")


class FeedError(Exception):
    """A request the feed's rules refuse; the HTTP layer maps each kind to a 4xx."""


class UnknownParticipant(FeedError):
    def __init__(self, participant_id: int) -> None:
        super().__init__(f"participant {participant_id} does not exist")
        self.participant_id = participant_id


class SelfFriendship(FeedError):
    def __init__(self, participant_id: int) -> None:
        super().__init__(f"participant {participant_id} cannot befriend themselves")


class KeyReused(FeedError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for a different request; use a new key"
        )


@dataclass(frozen=True)
class IdempotentWrite:
    """A write the client sent with an Idempotency-Key: answered once, replayed after that."""

    key: str
    # A digest of what the request asked for (method, path, body): a reused key must match it.
    fingerprint: str
    # The 200 response body for the write's result, stored with the write.
    render: Callable[[Any], bytes]


class Replayed(Exception):
    """This key's write is already committed: answer with the response stored with it."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__(f"replaying the stored {response.status} response")
        self.response = response


class UncertainWrite(Exception):
    """The database connection broke during COMMIT; `committed` is what checking the key found."""

    def __init__(self, *, committed: bool | None, retry_safe: bool) -> None:
        super().__init__(f"commit outcome: {committed}; retry safe: {retry_safe}")
        # False: checked, not committed; None: unknown.
        self.committed = committed
        self.retry_safe = retry_safe


class Feed:
    """The service functions each resource calls; storage, search and events are injected."""

    def __init__(
        self, store: Store, search: SearchBackend, listeners: Sequence[PostListener] = ()
    ) -> None:
        self._store = store
        self._search = search
        self._listeners = tuple(listeners)
        self._next_key_purge = 0.0

    def check_database(self) -> None:
        """Raise the driver's error unless the database answers a query now."""
        self._store.ping()

    @retry_transaction
    def create_participant(self, name: str, once: IdempotentWrite | None = None) -> Participant:
        return self._write(once, lambda conn: self._store.insert_participant(conn, name))

    def participant(self, participant_id: int) -> Participant:
        found = self._store.participant(participant_id)
        if found is None:
            raise UnknownParticipant(participant_id)
        return found

    @retry_transaction
    def befriend(
        self, participant_id: int, friend_id: int, once: IdempotentWrite | None = None
    ) -> Friendship:
        """Make two participants friends once; asking again, from either side, changes nothing."""
        if participant_id == friend_id:
            raise SelfFriendship(participant_id)
        low_id, high_id = sorted((participant_id, friend_id))

        def befriend_in(conn: Connection) -> Friendship:
            friendship_id = self._store.insert_friendship(conn, low_id, high_id)
            if friendship_id is None:
                # Nothing inserted: the pair exists (never removed), or someone does not.
                friendship_id = self._store.friendship_id(low_id, high_id)
                if friendship_id is None:
                    raise UnknownParticipant(self._first_unknown(participant_id, friend_id))
            return Friendship(friendship_id, participant_id, friend_id)

        try:
            return self._write(once, befriend_in)
        except IntegrityError:
            # A concurrent request created the same friendship first: answer with that one.
            return self._write(once, befriend_in)

    def _first_unknown(self, *participant_ids: int) -> int:
        """Which of these participants does not exist (participants are never removed)."""
        return next(
            someone for someone in participant_ids if self._store.participant(someone) is None
        )

    def friendships(self, participant_id: int) -> list[Friendship]:
        found = self._store.friendships(participant_id)
        if found is None:
            raise UnknownParticipant(participant_id)
        return found

    @retry_transaction
    def social_broadcast(
        self, sender_id: int, subject: str, story: str, once: IdempotentWrite | None = None
    ) -> Post:
        """Store a post, deliver it to every current friend, queue it for search: all or none."""

        def broadcast_in(conn: Connection) -> Post:
            post = self._store.insert_post(conn, sender_id, utc_now(), subject, story)
            if post is None:
                raise UnknownParticipant(sender_id)
            recipients = self._store.fan_out(conn, post)
            self._search.index_post(conn, post)
            for listener in self._listeners:
                listener.post_published(conn, post, recipients)
            return post

        return self._write(once, broadcast_in)

    def outbound_page(self, participant_id: int, before: int | None, limit: int) -> Page:
        posts = self._store.outbound_page(participant_id, before or MAX_ID, limit + 1)
        return self._page(participant_id, posts, limit)

    def inbound_page(self, participant_id: int, before: int | None, limit: int) -> Page:
        posts = self._store.inbound_page(participant_id, before or MAX_ID, limit + 1)
        return self._page(participant_id, posts, limit)

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        return self._search.senders_matching(keywords, limit)

    def _page(self, participant_id: int, posts: list[Post] | None, limit: int) -> Page:
        if posts is None:
            raise UnknownParticipant(participant_id)
        if len(posts) > limit:
            return Page(posts[:limit], next_before=posts[limit - 1].id)
        return Page(posts, next_before=None)

    def _write(self, once: IdempotentWrite | None, write: Callable[[Connection], T]) -> T:
        """Run `write` in one transaction; with a key, store its response there, or replay it."""
        try:
            with self._store.transaction() as conn:
                if once is None:
                    return write(conn)
                self._replay_if_stored(conn, once)
                self._purge_expired_keys_now_and_then(conn)
                result = write(conn)
                self._store.responses.remember(
                    conn, once.key, once.fingerprint, 200, once.render(result), utc_now()
                )
            return result
        except IntegrityError:
            if once is not None:
                # The same key's concurrent twin committed first: answer as it was answered.
                with self._store.transaction() as conn:
                    self._replay_if_stored(conn, once)
            raise
        except CommitOutcomeUnknown as lost:
            log.warning("connection lost during COMMIT: %s", lost)
            if once is None:
                raise UncertainWrite(committed=None, retry_safe=False) from lost
            raise self._outcome_of(once) from lost

    def _outcome_of(self, once: IdempotentWrite) -> UncertainWrite:
        """Look the key up again: stored means committed (replayed), missing means not."""
        try:
            with self._store.transaction() as conn:
                self._replay_if_stored(conn, once)
        except (DBAPIError, PoolTimeoutError, CommitOutcomeUnknown) as error:
            log.warning("cannot check Idempotency-Key after a lost COMMIT: %s", error)
            return UncertainWrite(committed=None, retry_safe=True)
        return UncertainWrite(committed=False, retry_safe=True)

    def _replay_if_stored(self, conn: Connection, once: IdempotentWrite) -> None:
        stored = self._store.responses.stored(conn, once.key)
        if stored is None:
            return
        if stored.fingerprint != once.fingerprint:
            raise KeyReused(once.key)
        raise Replayed(stored)

    def _purge_expired_keys_now_and_then(self, conn: Connection) -> None:
        now = time.monotonic()
        if now >= self._next_key_purge:
            self._next_key_purge = now + KEY_PURGE_INTERVAL_S
            self._store.responses.purge(conn, utc_now())
