"""The feed's nouns, as plain immutable values passed between store, service and resources."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Participant:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Friendship:
    """A friendship seen from one participant: `participant_id` befriended `friend_id`."""

    id: int
    participant_id: int
    friend_id: int


@dataclass(frozen=True, slots=True)
class Post:
    id: int
    sender_id: int
    occurred: datetime
    subject: str
    story: str


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a timeline, newest first; `next_before` continues it when more exist."""

    posts: list[Post]
    next_before: int | None
