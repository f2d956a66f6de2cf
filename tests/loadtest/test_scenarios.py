"""The simulated users' request sequences, driven with synthetic responses (no network)."""

import random
from collections import Counter

import orjson

from loadtest.connection import Response
from loadtest.scenarios import (
    BATCH_SIZE,
    DICTIONARY,
    MODES,
    POSTS_PER_PARTICIPANT,
    SEARCHES_PER_LOOP,
    SINGLE_OPERATION_MODES,
    STORY_WORDS,
    SUBJECT_WORDS,
    User,
    World,
    is_searcher,
)


def make_user(seed: int = 1, searcher: bool = False) -> User:
    return User(0, random.Random(seed), World((11, 12, 13)), searcher=searcher)


def play(user: User, mode: str = "classic") -> list:
    """Runs one loop, answering like the service: ids for new participants, 200 for the rest."""
    loop = MODES[mode](user)
    requests = []
    next_id = 100
    response = None
    while True:
        try:
            request = loop.send(response) if requests else next(loop)
        except StopIteration:
            return requests
        requests.append(request)
        if request.operation == "participant.post":
            next_id += 1
            response = Response(200, orjson.dumps({"id": next_id}))
        else:
            response = Response(200, b"{}")


def test_dictionary_holds_forty_thousand_distinct_number_words():
    assert len(set(DICTIONARY)) == 40_000
    assert all(word.isdigit() and len(word) == 5 for word in DICTIONARY)


def test_classic_loop_creates_a_batch_befriends_within_it_and_the_befriended_post():
    requests = play(make_user())
    counts = Counter(request.operation for request in requests)
    assert counts["participant.post"] == BATCH_SIZE
    friendships = [r for r in requests if r.operation == "friends.post"]
    senders = Counter(r.path.split("/")[2] for r in friendships)
    assert len(senders) == 3  # a quarter of ten, rounded up
    assert all(2 <= n <= 4 for n in senders.values())
    batch = {str(n) for n in range(101, 111)}
    involved = set(senders)
    for request in friendships:
        to = orjson.loads(request.body)["to"]
        assert to.startswith("/participant/") and to.split("/")[2] in batch
        involved.add(to.split("/")[2])
    posters = Counter(r.path.split("/")[2] for r in requests if r.operation == "outbound.post")
    assert set(posters) == involved
    assert set(posters.values()) == {POSTS_PER_PARTICIPANT}


def test_stories_have_five_word_subjects_and_hundred_fifty_word_bodies_from_the_dictionary():
    post = next(r for r in play(make_user()) if r.operation == "outbound.post")
    story = orjson.loads(post.body)
    assert len(story["subject"].split()) == SUBJECT_WORDS
    assert len(story["story"].split()) == STORY_WORDS
    assert set(story["story"].split()) <= set(DICTIONARY)


def test_a_searching_user_runs_five_keyword_searches_per_loop():
    requests = play(make_user(searcher=True))
    assert [r.operation for r in requests] == ["outbound.search"] * SEARCHES_PER_LOOP
    assert all(r.path.startswith("/outbound?keywords=") for r in requests)


def test_failed_participant_creation_leaves_it_out_of_the_batch():
    loop = MODES["classic"](make_user())
    request = next(loop)
    operations = []
    while True:
        operations.append(request.operation)
        try:
            request = loop.send(Response(500, b""))
        except StopIteration:
            break
    assert operations == ["participant.post"] * BATCH_SIZE


def test_same_seed_same_requests():
    assert play(make_user(seed=7)) == play(make_user(seed=7))
    assert play(make_user(seed=7)) != play(make_user(seed=8))


def test_read_heavy_is_dominated_by_inbound_reads_of_known_participants():
    user = make_user()
    operations = Counter()
    for _ in range(2000):
        (request,) = play(user, "read-heavy")
        operations[request.operation] += 1
        assert request.path.split("/")[2].split("?")[0] in {"11", "12", "13"}
    assert operations.most_common(1)[0][0] == "inbound.get"
    assert operations["inbound.get"] > 0.7 * 2000


def test_single_operation_modes_issue_only_their_operation():
    expected = {
        "get-participant": "participant.get",
        "get-friends": "friends.get",
        "get-inbound": "inbound.get",
        "get-outbound": "outbound.get",
        "post-participant": "participant.post",
        "post-outbound": "outbound.post",
        "post-friends": "friends.post",
        "search": "outbound.search",
        "health": "health.get",
        "hello": "hello.get",
    }
    assert set(expected) == set(SINGLE_OPERATION_MODES)
    for mode, operation in expected.items():
        assert [r.operation for r in play(make_user(), mode)] == [operation]


def test_search_percentage_picks_that_share_of_users_spread_evenly():
    searchers = [index for index in range(100) if is_searcher(index, 10)]
    assert len(searchers) == 10
    assert searchers == list(range(9, 100, 10))
    assert sum(is_searcher(index, 25) for index in range(16)) == 4
    assert not any(is_searcher(index, 0) for index in range(50))
    assert all(is_searcher(index, 100) for index in range(50))
