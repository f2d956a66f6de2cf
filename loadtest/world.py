"""Seeds the participants, friendships and posts that read-side modes act on, before timing."""

from __future__ import annotations

import http.client
import random

import orjson

from loadtest.scenarios import STORY_WORDS, SUBJECT_WORDS, World, link, words

SEED_PARTICIPANTS = 40
SEED_POSTS_EACH = 25  # four friends x 25 posts: every inbound is one full default page (100)
RING_REACH = 2  # befriend the next two on a ring: everyone ends up with exactly four friends


class SeedError(RuntimeError):
    """The target refused the seeding requests: wrong address, or not a feedsvc."""


def seed_world(
    host: str, port: int, rng: random.Random, participants: int = SEED_PARTICIPANTS
) -> World:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        ids = [
            _post(connection, "/participant", {"name": f"seed {n}"})["id"]
            for n in range(participants)
        ]
        for position, sender in enumerate(ids):
            for step in range(1, RING_REACH + 1):
                friend = ids[(position + step) % len(ids)]
                _post(connection, f"{link(sender)}/friends", {"to": link(friend)})
        for sender in ids:
            for _ in range(SEED_POSTS_EACH):
                story = {"subject": words(rng, SUBJECT_WORDS), "story": words(rng, STORY_WORDS)}
                _post(connection, f"{link(sender)}/outbound", story)
    finally:
        connection.close()
    return World(tuple(ids))


def _post(connection: http.client.HTTPConnection, path: str, document: dict) -> dict:
    headers = {"Content-Type": "application/json"}
    connection.request("POST", path, orjson.dumps(document), headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise SeedError(f"POST {path} answered {response.status}: {body[:200]!r}")
    return orjson.loads(body)
