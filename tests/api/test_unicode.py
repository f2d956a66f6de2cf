"""Unicode round-trips byte for byte: no normalisation, no mangling of 4-byte or combining marks."""

import unicodedata

import pytest

from tests.support.api import assert_error, befriend, create_participant
from tests.support.mysql import fulltext_min_token_size

SAMPLES = {
    "emoji": "Party 🎉🥳 time",
    "zwj-family": "👩‍👩‍👧‍👦 family",
    "flag-and-skin-tone": "🇯🇵 👋🏽 hi",
    "cjk": "漢字とかな、한국어",
    "cjk-4-byte": "𠜎𠜱𠝹𠱓 𩸽",
    "arabic": "مرحبا بالعالم",
    "hebrew": "שלום עולם",
    "mixed-direction": "abc שלום 123 مرحبا",
    "combining-marks": "e\u0301 a\u0308 n\u0303 Z\u0335\u0327",
    "decomposed-vs-composed": "Cafe\u0301 Café",
    "invisible-format": "a\u200bb\u200dc\u200ed\ufeffe",
    "control-characters": "tab\tline\nnul\x00unit\x1fdel\x7f",
}


def utf8(value):
    return value.encode("utf-8")


def test_samples_really_are_not_normalised():
    decomposed = SAMPLES["combining-marks"]
    assert unicodedata.normalize("NFC", decomposed) != decomposed


@pytest.mark.parametrize("text", SAMPLES.values(), ids=SAMPLES.keys())
def test_names_round_trip_byte_exact(client, text):
    created = create_participant(client, text)

    fetched = client.simulate_get(created["link"])

    assert utf8(created["name"]) == utf8(text)
    assert utf8(fetched.json["name"]) == utf8(text)


@pytest.mark.parametrize("text", SAMPLES.values(), ids=SAMPLES.keys())
def test_subjects_and_stories_round_trip_byte_exact(client, text):
    sender = create_participant(client, "Sender")
    friend = create_participant(client, "Friend")
    befriend(client, sender, friend)
    story = f"{text}\n\n{text * 3}"

    posted = client.simulate_post(
        f"{sender['link']}/outbound", json={"subject": text, "story": story}
    )
    outbound = client.simulate_get(f"{sender['link']}/outbound").json[0]
    inbound = client.simulate_get(f"{friend['link']}/inbound").json[0]

    assert posted.status_code == 200
    for stored in (posted.json, outbound, inbound):
        assert utf8(stored["subject"]) == utf8(text)
        assert utf8(stored["story"]) == utf8(story)


def test_responses_are_utf8_json(client):
    created = create_participant(client, SAMPLES["cjk-4-byte"])

    result = client.simulate_get(created["link"])

    assert result.headers["content-type"].startswith("application/json")
    assert SAMPLES["cjk-4-byte"] in result.content.decode("utf-8")


def test_name_limit_counts_characters_not_bytes(client, row_counts):
    four_byte = "𠜎"
    assert len(utf8(four_byte)) == 4

    assert create_participant(client, four_byte * 50)["name"] == four_byte * 50
    before = row_counts()
    result = client.simulate_post("/participant", json={"name": four_byte * 51})

    assert_error(result, 400)
    assert row_counts() == before


def test_story_limit_counts_characters_not_bytes(client):
    sender = create_participant(client, "Sender")
    story = "🎉" * 10000

    result = client.simulate_post(
        f"{sender['link']}/outbound", json={"subject": "🎉", "story": story}
    )

    assert result.status_code == 200
    assert client.simulate_get(f"{sender['link']}/outbound").json[0]["story"] == story


@pytest.mark.parametrize(
    ("story", "keywords"),
    [
        ("مرحبا بالعالم", "بالعالم"),
        ("שלום עולם", "עולם"),
        ("Grüße aus Köln", "köln"),
        ("漢字 かな", "漢字"),
        ("नमस्ते दुनिया", "नमस्ते"),
        ("สวัสดี ครับ", "สวัสดี"),
        ("Cafe\u0301 noir", "café"),
    ],
)
def test_non_latin_words_are_searchable(indexed_client, api_config, story, keywords):
    client = indexed_client
    sender = create_participant(client, "Sender")
    client.simulate_post(f"{sender['link']}/outbound", json={"subject": "s", "story": story})

    result = client.simulate_get("/outbound", params={"keywords": keywords})

    assert result.status_code == 200
    if not api_config.is_sqlite and len(keywords) < fulltext_min_token_size(
        api_config.database_url
    ):
        # Documented MySQL limit: a word shorter than innodb_ft_min_token_size is not indexed.
        assert result.json == []
    else:
        assert result.json == [sender["link"]]
