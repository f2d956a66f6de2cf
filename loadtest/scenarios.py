"""What simulated users do: each mode is a generator yielding Requests and receiving Responses."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass

import orjson

from loadtest.connection import Request, Response

# The classic news-feed load test: a 40,000-word dictionary of numbers (five digits each, so every
# word is a token to FTS5, MySQL FULLTEXT and Elasticsearch alike).
DICTIONARY = tuple(str(number) for number in range(10_000, 50_000))
BATCH_SIZE = 10
BEFRIENDING_SHARE = 0.25
FRIENDS_PER_BEFRIENDER = (2, 4)
POSTS_PER_PARTICIPANT = 10
SUBJECT_WORDS = 5
STORY_WORDS = 150
SEARCHES_PER_LOOP = 5

UserLoop = Generator[Request, Response, None]


@dataclass(frozen=True)
class World:
    """Participants created before the timed phase, for modes that read or post as someone."""

    participant_ids: tuple[int, ...] = ()


@dataclass
class User:
    """One simulated user: its own random stream, so a run is reproducible from its seed."""

    index: int
    rng: random.Random
    world: World
    searcher: bool
    created: int = 0

    def new_name(self) -> str:
        self.created += 1
        return f"loadtest {self.index}-{self.created}"

    def known_participant(self) -> int:
        return self.rng.choice(self.world.participant_ids)


def is_searcher(user_index: int, search_percent: float) -> bool:
    """Exactly floor(users x percent / 100) searchers, spread evenly over the user indexes."""
    share = search_percent / 100.0
    return math.floor((user_index + 1) * share) > math.floor(user_index * share)


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(DICTIONARY, k=count))


def link(participant_id: int) -> str:
    return f"/participant/{participant_id}"


def create_participant(user: User) -> Request:
    body = orjson.dumps({"name": user.new_name()})
    return Request("participant.post", "POST", "/participant", body)


def befriend(sender: int, friend: int) -> Request:
    body = orjson.dumps({"to": link(friend)})
    return Request("friends.post", "POST", f"{link(sender)}/friends", body)


def post_story(rng: random.Random, sender: int) -> Request:
    story = {"subject": words(rng, SUBJECT_WORDS), "story": words(rng, STORY_WORDS)}
    return Request("outbound.post", "POST", f"{link(sender)}/outbound", orjson.dumps(story))


def search(rng: random.Random) -> Request:
    return Request("outbound.search", "GET", f"/outbound?keywords={rng.choice(DICTIONARY)}")


def classic(user: User) -> UserLoop:
    """One loop of the classic load: a batch joins, a quarter befriend, the befriended post."""
    if user.searcher:
        for _ in range(SEARCHES_PER_LOOP):
            yield search(user.rng)
        return
    batch: list[int] = []
    for _ in range(BATCH_SIZE):
        response = yield create_participant(user)
        if response.status == 200:
            batch.append(orjson.loads(response.body)["id"])
    befriended: set[int] = set()
    befrienders = math.ceil(len(batch) * BEFRIENDING_SHARE)
    for sender in user.rng.sample(batch, befrienders):
        others = [candidate for candidate in batch if candidate != sender]
        wanted = min(len(others), user.rng.randint(*FRIENDS_PER_BEFRIENDER))
        for friend in user.rng.sample(others, wanted):
            response = yield befriend(sender, friend)
            if response.status == 200:
                befriended.update((sender, friend))
    for sender in sorted(befriended):
        for _ in range(POSTS_PER_PARTICIPANT):
            yield post_story(user.rng, sender)


def read_heavy(user: User) -> UserLoop:
    """Timeline reads dominate: 80% inbound, the rest profile, friends, outbound reads and posts."""
    participant = user.known_participant()
    roll = user.rng.random()
    if roll < 0.80:
        yield Request("inbound.get", "GET", f"{link(participant)}/inbound")
    elif roll < 0.88:
        yield Request("participant.get", "GET", link(participant))
    elif roll < 0.92:
        yield Request("friends.get", "GET", f"{link(participant)}/friends")
    elif roll < 0.96:
        yield Request("outbound.get", "GET", f"{link(participant)}/outbound")
    else:
        yield post_story(user.rng, participant)


def get_participant(user: User) -> UserLoop:
    yield Request("participant.get", "GET", link(user.known_participant()))


def get_friends(user: User) -> UserLoop:
    yield Request("friends.get", "GET", f"{link(user.known_participant())}/friends")


def get_inbound(user: User) -> UserLoop:
    yield Request("inbound.get", "GET", f"{link(user.known_participant())}/inbound")


def get_outbound(user: User) -> UserLoop:
    yield Request("outbound.get", "GET", f"{link(user.known_participant())}/outbound")


def post_participant(user: User) -> UserLoop:
    yield create_participant(user)


def post_outbound(user: User) -> UserLoop:
    """Every seeded participant has four friends, so each post fans out to four inboxes."""
    yield post_story(user.rng, user.known_participant())


def post_friends(user: User) -> UserLoop:
    """Befriends two known participants (often an existing pair: befriending is idempotent)."""
    sender, friend = user.rng.sample(user.world.participant_ids, 2)
    yield befriend(sender, friend)


def health(user: User) -> UserLoop:
    """The service's cheapest route: the worker's and Falcon's own cost, no database."""
    yield Request("health.get", "GET", "/health")


def search_only(user: User) -> UserLoop:
    yield search(user.rng)


def hello(user: User) -> UserLoop:
    """The ceiling: loadtest.hello answers every path with a tiny JSON document."""
    yield Request("hello.get", "GET", "/")


MODES: dict[str, Callable[[User], UserLoop]] = {
    "classic": classic,
    "read-heavy": read_heavy,
    "get-participant": get_participant,
    "get-friends": get_friends,
    "get-inbound": get_inbound,
    "get-outbound": get_outbound,
    "post-participant": post_participant,
    "post-outbound": post_outbound,
    "post-friends": post_friends,
    "search": search_only,
    "health": health,
    "hello": hello,
}

# Modes that act on existing participants get a seeded World before the clock starts.
MODES_NEEDING_WORLD = frozenset(MODES) - {"classic", "post-participant", "health", "hello"}
# One request kind each: the rows of the worker-CPU-per-request report (bench -o single).
SINGLE_OPERATION_MODES = tuple(mode for mode in MODES if mode not in ("classic", "read-heavy"))
