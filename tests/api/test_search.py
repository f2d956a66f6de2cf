"""GET /outbound?keywords=: words, never a query language; distinct senders, best match first."""

import pytest

from tests.support.api import LINK_PATTERN, assert_error, create_participant, publish


def search(client, keywords, **params):
    result = client.simulate_get("/outbound", params={"keywords": keywords, **params})
    assert result.status_code == 200, result.text
    assert isinstance(result.json, list)
    assert all(isinstance(link, str) and LINK_PATTERN.match(link) for link in result.json)
    return result.json


@pytest.fixture
def client(indexed_client):
    """Search is near-real-time: each post is waited for until the relay has indexed it."""
    return indexed_client


@pytest.fixture
def orchard(client):
    """Three senders: one all about apples, one mentioning an apple once, one without apples."""
    keen = create_participant(client, "Keen")
    casual = create_participant(client, "Casual")
    other = create_participant(client, "Other")
    publish(client, keen, "Fruit", "apple apple apple")
    publish(client, casual, "Market", "apple banana cherry grape melon peach plum lime")
    publish(client, other, "Weather", "rain cloud wind")
    return {"keen": keen["link"], "casual": casual["link"], "other": other["link"]}


def test_search_returns_matching_senders_best_match_first(client, orchard):
    assert search(client, "apple") == [orchard["keen"], orchard["casual"]]


def test_a_post_matches_if_it_contains_any_of_the_words(client, orchard):
    assert set(search(client, "banana wind")) == {orchard["casual"], orchard["other"]}


def test_a_sender_is_listed_once_however_many_posts_match(client, orchard):
    keen = orchard["keen"]
    for _ in range(3):
        client.simulate_post(f"{keen}/outbound", json={"subject": "again", "story": "apple pie"})

    assert search(client, "apple") == [orchard["keen"], orchard["casual"]]


def test_search_ignores_case(client, orchard):
    assert search(client, "APPLE") == search(client, "apple")


def test_no_match_is_an_empty_list(client, orchard):
    assert search(client, "zeppelin") == []


def test_limit_keeps_the_best_matches(client, orchard):
    assert search(client, "apple", limit=1) == [orchard["keen"]]


def test_a_post_is_searchable_once_the_relay_indexed_it(client):
    sender = create_participant(client, "Fresh")
    publish(client, sender, "New", "kaleidoscope")

    assert search(client, "kaleidoscope") == [sender["link"]]


@pytest.mark.parametrize(
    "keywords",
    [
        '"apple"',
        '"apple',
        "apple*",
        "*apple",
        "-apple",
        "apple -banana",
        "NOT apple",
        "apple NOT",
        "apple NEAR rain",
        "NEAR(apple rain, 2)",
        "apple AND wind",
        "apple OR",
        "AND apple",
        "(apple",
        "(apple)",
        "apple)",
        "^apple",
        "apple^2",
        "story:apple",
        ":apple",
        "{apple}",
        "{story subject}: apple",
        "[apple]",
        "apple\\",
        "\\apple",
        "apple 🍎",
        "apple's",
        "apple; DROP TABLE outbound; --",
        "apple%",
        "apple_",
        "apple + rain",
        "apple~",
        "apple?",
        "apple|rain",
        "apple & rain",
        "'apple'",
        "apple\t\nrain",
    ],
)
def test_special_characters_are_plain_text(client, row_counts, orchard, keywords):
    before = row_counts()

    found = search(client, keywords)

    assert orchard["keen"] in found
    assert row_counts() == before


@pytest.mark.parametrize(
    "keywords",
    [
        "*",
        '"',
        '""',
        "-",
        "--",
        "()",
        "(",
        ")",
        "^",
        ":",
        "{}",
        "[]",
        "\\",
        "!@#$%&",
        "🍎",
        ". , ;",
    ],
)
def test_keywords_without_any_word_match_nothing(client, orchard, keywords):
    assert search(client, keywords) == []


def test_words_that_are_query_operators_are_searched_as_words(client):
    sender = create_participant(client, "Logician")
    publish(client, sender, "Logic", "AND OR NOT NEAR")

    assert search(client, "near") == [sender["link"]]
    assert search(client, "AND") == [sender["link"]]


def test_every_word_of_a_long_search_counts(client, orchard):
    words = [f"w{n}" for n in range(40)] + ["rain"]
    keywords = " ".join(words)
    assert len(keywords) <= 200

    assert search(client, keywords) == [orchard["other"]]


def test_keywords_of_two_hundred_characters_are_accepted(client, orchard):
    keywords = ("apple " * 34)[:200]
    assert len(keywords) == 200

    assert orchard["keen"] in search(client, keywords)


@pytest.mark.parametrize(
    "query_string",
    [
        "",
        "keywords=",
        "keywords=%20%20%20",
        "limit=10",
        "keywords=" + "a" * 201,
        "keywords=" + "apple%20" * 33 + "abc",
    ],
    ids=["missing", "empty", "whitespace", "only-limit", "201-chars", "201-chars-of-words"],
)
def test_missing_empty_or_overlong_keywords_are_rejected(client, row_counts, orchard, query_string):
    before = row_counts()

    result = client.simulate_get("/outbound", query_string=query_string)

    assert_error(result, 400)
    assert row_counts() == before


@pytest.mark.parametrize("limit", ["0", "1001", "-5", "ten"])
def test_search_limit_out_of_bounds_is_rejected(client, orchard, limit):
    result = client.simulate_get("/outbound", query_string=f"keywords=apple&limit={limit}")

    assert_error(result, 400)


def test_search_limit_bounds_are_accepted(client, orchard):
    assert len(search(client, "apple", limit=1000)) == 2
    assert len(search(client, "apple", limit=1)) == 1
