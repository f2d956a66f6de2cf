"""Concurrent posts and befriending: every committed friendship gets the post, exactly once."""

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from falcon.testing import TestClient

from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_app
from feedsvc.core.config import Config
from feedsvc.db.tables import inbound
from tests.support.mysql import row_count

CLIENTS = 16
FRIENDS = 20
NEWCOMERS = 20
STORIES = 20

# One request: (method, path, JSON body or None) -> (status, decoded JSON body).
Send = Callable[[str, str, Any], tuple[int, Any]]


@dataclass
class Done:
    """One request as a client saw it: sent and answered on the test's monotonic clock."""

    kind: str
    who: int
    sent: float
    answered: float
    status: int
    body: Any


@pytest.fixture
def config(database_url, tmp_path):
    environ = {"FEED_DATA_DIR": str(tmp_path), "FEED_DATABASE_URL": database_url}
    # Each of the 16 clients may hold a connection; the pool must not be the bottleneck here.
    environ |= {"FEED_DB_POOL_SIZE": str(CLIENTS), "FEED_DB_MAX_OVERFLOW": "0"}
    config = Config.from_env(environ)
    init_db(config)
    return config


def in_process(config: Config) -> Send:
    client = TestClient(build_app(config))

    def send(method, path, body):
        result = client.simulate_request(method, path, json=body)
        return result.status_code, result.json

    return send


def hub_posts_while_friendships_are_created(send: Send) -> int:
    """The scenario and its checks; returns how many inbound rows the API shows in all."""

    def ok(method, path, body=None):
        status, answer = send(method, path, body)
        assert status == 200, answer
        return answer

    def create(name):
        return ok("POST", "/participant", {"name": name})["id"]

    def inbound_stories(participant_id):
        answer = ok("GET", f"/participant/{participant_id}/inbound?limit=1000")
        return [item["story"] for item in answer]

    hub = create("Hub")
    friends = [create(f"Friend {i}") for i in range(FRIENDS)]
    newcomers = [create(f"Newcomer {i}") for i in range(NEWCOMERS)]
    for friend in friends:
        ok("POST", f"/participant/{hub}/friends", {"to": friend})

    def hub_posts(k):
        body = {"subject": "s", "story": f"hub {k}"}
        return "hub", k, f"/participant/{hub}/outbound", body

    def friend_posts(i):
        body = {"subject": "s", "story": f"friend {i}"}
        return "friend", i, f"/participant/{friends[i]}/outbound", body

    def newcomer_befriends(j):
        # Half ask from the hub's side, half from the newcomer's: one pair either way.
        if j % 2:
            return "befriend", j, f"/participant/{hub}/friends", {"to": newcomers[j]}
        return "befriend", j, f"/participant/{newcomers[j]}/friends", {"to": hub}

    tasks = (
        [hub_posts(k) for k in range(STORIES)]
        + [friend_posts(i) for i in range(FRIENDS)]
        + [newcomer_befriends(j) for j in range(NEWCOMERS)]
    )
    random.Random(4).shuffle(tasks)

    def run(task):
        kind, who, path, body = task
        sent = time.monotonic()
        status, answer = send("POST", path, body)
        return Done(kind, who, sent, time.monotonic(), status, answer)

    with ThreadPoolExecutor(CLIENTS) as pool:
        done = list(pool.map(run, tasks))

    failed = [d for d in done if d.status != 200]
    assert not failed, failed

    hub_stories = sorted(f"hub {k}" for k in range(STORIES))
    for friend in friends:
        assert sorted(inbound_stories(friend)) == hub_stories, friend  # none lost, none twice
    assert sorted(inbound_stories(hub)) == sorted(f"friend {i}" for i in range(FRIENDS))

    posts = {d.who: d for d in done if d.kind == "hub"}
    befriended = {d.who: d for d in done if d.kind == "befriend"}
    for j, newcomer in enumerate(newcomers):
        stories = inbound_stories(newcomer)
        assert len(stories) == len(set(stories)), newcomer
        for k, post in posts.items():
            if befriended[j].answered < post.sent:  # committed before the post began
                assert f"hub {k}" in stories, (newcomer, k)
            if post.answered < befriended[j].sent:  # posted before the friendship existed
                assert f"hub {k}" not in stories, (newcomer, k)

    friends_of_hub = ok("GET", f"/participant/{hub}/friends")
    assert len({item["to"] for item in friends_of_hub}) == len(friends_of_hub)
    assert len(friends_of_hub) == FRIENDS + NEWCOMERS

    return sum(len(inbound_stories(p)) for p in [hub, *friends, *newcomers])


def inbound_rows(config: Config) -> int:
    return row_count(config.database_url, inbound)


def test_hub_posts_while_friendships_are_created(config):
    shown = hub_posts_while_friendships_are_created(in_process(config))

    assert inbound_rows(config) == shown


def test_hub_scenario_against_gunicorn_workers_on_mariadb(gunicorn_server, mariadb_url):
    gunicorn_server.start({"FEED_DATABASE_URL": mariadb_url}, workers=4)
    gunicorn_server.wait_ready(workers=4)

    def send(method, path, body):
        response = gunicorn_server.request(method, path, body)
        return response.status, response.json

    shown = hub_posts_while_friendships_are_created(send)

    assert inbound_rows(Config.from_env({"FEED_DATABASE_URL": mariadb_url})) == shown
    assert gunicorn_server.stop() == 0, gunicorn_server.log()


def test_the_same_friendship_asked_for_at_once_from_both_sides_is_stored_once(config):
    send = in_process(config)
    ada = send("POST", "/participant", {"name": "Ada"})[1]["id"]
    bob = send("POST", "/participant", {"name": "Bob"})[1]["id"]

    def befriend(attempt):
        me, other = (ada, bob) if attempt % 2 else (bob, ada)
        return send("POST", f"/participant/{me}/friends", {"to": other})

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(befriend, range(4 * CLIENTS)))

    assert {status for status, _ in results} == {200}, results
    assert len({answer["id"] for _, answer in results}) == 1
    assert len(send("GET", f"/participant/{ada}/friends", None)[1]) == 1
