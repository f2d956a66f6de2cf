"""Search on MariaDB's InnoDB FULLTEXT index: the embedded backend's keyword rules, no errors."""

import pytest
import sqlalchemy as sa
from falcon.testing import TestClient

from feedsvc.adapters.search.mysql_fulltext import INDEX_NAME, FulltextSearch
from feedsvc.compose.service import build_app
from feedsvc.core.config import Config
from feedsvc.db import engines

# Strings MariaDB's FULLTEXT parser rejects or reads as operators when passed through raw.
OPERATOR_STRINGS = [
    "*", "+", "-", "~", "@", "<>", "(", ")", "()", '"', '""', '+"', "+-", "a*", "-x", "@8",
    "fox*", '"quick fox"', "+quick -fox", "quick @2", "(fox)", "'", "\\", "%", "_", "; DROP",
    "NEAR", "AND OR NOT", "\u0000", "😀",
]  # fmt: skip


@pytest.fixture
def config(mariadb_url):
    return Config.from_env({"FEED_DATABASE_URL": mariadb_url})


@pytest.fixture
def client(config):
    return TestClient(build_app(config))


@pytest.fixture
def search(config):
    engine = engines.create_engine(config)
    yield FulltextSearch(engine)
    engine.dispose()


def post(client, name, *stories):
    author = client.simulate_post("/participant", json={"name": name}).json
    for story in stories:
        result = client.simulate_post(
            f"{author['link']}/outbound", json={"subject": "s", "story": story}
        )
        assert result.status_code == 200, result.text
    return author["link"]


def senders(client, keywords):
    result = client.simulate_get("/outbound", params={"keywords": keywords})
    assert result.status_code == 200, result.text
    return result.json


def test_a_post_is_searchable_as_soon_as_it_is_acknowledged(client):
    ada = post(client, "Ada", "The quick brown fox")

    assert senders(client, "fox") == [ada]


@pytest.mark.parametrize("keywords", OPERATOR_STRINGS)
def test_operator_characters_are_plain_text_and_never_an_error(client, keywords):
    post(client, "Ada", "The quick brown fox")

    assert senders(client, keywords) in ([], ["/participant/1"])


def test_operator_characters_around_words_still_find_the_words(client):
    ada = post(client, "Ada", "The quick brown fox")

    for keywords in ('"fox"', "+fox", "-fox", "fox*", "(fox)", "~fox", "fox@3", ">fox<"):
        assert senders(client, keywords) == [ada], keywords


def test_matching_ignores_case_and_accents_like_the_embedded_index(client):
    ada = post(client, "Ada", "Café CRÈME in Straße")

    for keywords in ("cafe", "CAFÉ", "creme", "strasse", "STRASSE"):
        assert senders(client, keywords) == [ada], keywords


def test_stopwords_are_searchable_because_the_index_has_none(client):
    ada = post(client, "Ada", "about the thing")

    assert senders(client, "about") == [ada]
    assert senders(client, "the") == [ada]


def test_any_keyword_matches_and_the_best_match_comes_first(client):
    once = post(client, "Once", "a fox and a dog", "nothing here")
    twice = post(client, "Twice", "fox fox badger")
    post(client, "Neither", "a cat")

    assert senders(client, "fox badger") == [twice, once]


def test_each_sender_appears_once_and_limit_bounds_the_list(client):
    links = [post(client, f"P{i}", "shared word", "shared again") for i in range(5)]

    found = senders(client, "shared")
    assert sorted(found) == sorted(links)
    limited = client.simulate_get("/outbound", params={"keywords": "shared", "limit": "2"}).json
    assert len(limited) == 2


def test_words_shorter_than_the_minimum_token_size_match_nothing(client, search):
    """innodb_ft_min_token_size (3 here) keeps short words out of the index: documented limit."""
    post(client, "Ada", "go to it")

    assert search.senders_matching("go", 10) == []
    assert search.senders_matching("go it to", 10) == []


def test_a_rolled_back_post_is_never_found(config, search):
    engine = engines.create_engine(config)
    try:
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO participant (name) VALUES ('Ada')")
            conn.exec_driver_sql(
                "INSERT INTO outbound (sender_id, occurred, subject, story)"
                " VALUES (LAST_INSERT_ID(), UTC_TIMESTAMP(3), 's', 'phantom story')"
            )
            raise RuntimeError("the post's transaction fails after indexing")
    finally:
        engine.dispose()

    assert search.senders_matching("phantom", 10) == []


def test_search_uses_the_fulltext_index(config):
    engine = engines.create_engine(config)
    try:
        with engine.connect() as conn:
            plans = conn.execute(
                sa.text(
                    "EXPLAIN SELECT sender_id FROM outbound"
                    " WHERE MATCH (story) AGAINST (:q IN NATURAL LANGUAGE MODE)"
                ),
                {"q": "fox"},
            ).all()
    finally:
        engine.dispose()
    print("EXPLAIN search:", [dict(plan._mapping) for plan in plans])

    assert [(plan.type, plan.key) for plan in plans] == [("fulltext", INDEX_NAME)]
