"""The feed's rules: who may befriend whom, the social broadcast, timelines and search."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from feedsvc.database import retry_transaction
from feedsvc.model import Friendship, Page, Participant, Post
from feedsvc.search import SearchBackend
from feedsvc.store import Store

# Keyset pagination starts above every possible 63-bit id.
NEWEST = 2**63 - 1


class FeedError(Exception):
    """A request the feed's rules refuse; the HTTP layer maps each kind to a 4xx."""


class UnknownParticipant(FeedError):
    def __init__(self, participant_id: int) -> None:
        super().__init__(f"participant {participant_id} does not exist")
        self.participant_id = participant_id


class SelfFriendship(FeedError):
    def __init__(self, participant_id: int) -> None:
        super().__init__(f"participant {participant_id} cannot befriend themselves")


class PostListener(Protocol):
    """Something that must hear of every post, durably, inside the post's transaction."""

    def post_published(self, conn: Connection, post: Post, recipients: int) -> None: ...


def utc_now() -> datetime:
    """Now in UTC, to the millisecond that the API shows, as the naive value the store keeps."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Feed:
    """The service functions each resource calls; storage, search and events are injected."""

    def __init__(
        self, store: Store, search: SearchBackend, listeners: Sequence[PostListener] = ()
    ) -> None:
        self._store = store
        self._search = search
        self._listeners = tuple(listeners)

    def check_database(self) -> None:
        """Raise the driver's error unless the database answers a query now."""
        self._store.ping()

    @retry_transaction
    def create_participant(self, name: str) -> Participant:
        return self._store.create_participant(name)

    def participant(self, participant_id: int) -> Participant:
        found = self._store.participant(participant_id)
        if found is None:
            raise UnknownParticipant(participant_id)
        return found

    @retry_transaction
    def befriend(self, participant_id: int, friend_id: int) -> Friendship:
        """Make two participants friends once; asking again, from either side, changes nothing."""
        if participant_id == friend_id:
            raise SelfFriendship(participant_id)
        low_id, high_id = sorted((participant_id, friend_id))
        try:
            with self._store.transaction() as conn:
                friendship_id = self._store.insert_friendship(conn, low_id, high_id)
        except IntegrityError:
            # A concurrent request created the same friendship first: answer with that one.
            friendship_id = self._store.friendship_id(low_id, high_id)
            if friendship_id is None:
                raise
        if friendship_id is None:
            # Nothing inserted: the friendship exists (they are never removed), or someone does not.
            friendship_id = self._store.friendship_id(low_id, high_id)
            if friendship_id is None:
                raise UnknownParticipant(self._first_unknown(participant_id, friend_id))
        return Friendship(friendship_id, participant_id, friend_id)

    def _first_unknown(self, *participant_ids: int) -> int:
        """Which of these participants does not exist (participants are never removed)."""
        return next(
            someone for someone in participant_ids if self._store.participant(someone) is None
        )

    def friendships(self, participant_id: int) -> list[Friendship]:
        found = self._store.friendships(participant_id)
        if not found:
            self.participant(participant_id)
        return found

    @retry_transaction
    def social_broadcast(self, sender_id: int, subject: str, story: str) -> Post:
        """Store a post, deliver it to every current friend, queue it for search: all or none."""
        with self._store.transaction() as conn:
            post = self._store.insert_outbound(conn, sender_id, utc_now(), subject, story)
            if post is None:
                raise UnknownParticipant(sender_id)
            recipients = self._store.fan_out(conn, post)
            self._search.index_post(conn, post)
            for listener in self._listeners:
                listener.post_published(conn, post, recipients)
        return post

    def outbound_page(self, participant_id: int, before: int | None, limit: int) -> Page:
        posts = self._store.outbound_page(participant_id, before or NEWEST, limit + 1)
        return self._page(participant_id, posts, limit)

    def inbound_page(self, participant_id: int, before: int | None, limit: int) -> Page:
        posts = self._store.inbound_page(participant_id, before or NEWEST, limit + 1)
        return self._page(participant_id, posts, limit)

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        return self._search.senders_matching(keywords, limit)

    def _page(self, participant_id: int, posts: list[Post], limit: int) -> Page:
        if not posts:
            self.participant(participant_id)
        if len(posts) > limit:
            return Page(posts[:limit], next_before=posts[limit - 1].id)
        return Page(posts, next_before=None)
