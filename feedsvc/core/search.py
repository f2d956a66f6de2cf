"""The search rules every backend shares: keywords are words, never a query language."""

import unicodedata

# Everything that is not a letter, digit or combining mark separates (a Devanagari or Thai word
# keeps its vowel signs; InnoDB indexes it whole). No cap on their number: the 200-character
# limit on keywords already bounds it.
_WORD_CATEGORIES = frozenset("LNM")
# Posts ranked before grouping by sender: enough for any page of senders in practice, bounded
# so that a very common word cannot make one search scan the whole table.
MAX_RANKED_POSTS = 10_000


def keywords_to_words(keywords: str) -> list[str]:
    """The distinct words of a search, lower-cased, in the order given."""
    spaced = "".join(
        char if unicodedata.category(char)[0] in _WORD_CATEGORIES else " " for char in keywords
    )
    return list(dict.fromkeys(spaced.lower().split()))


class SearchUnavailable(Exception):
    """The search engine did not answer in time; the client may retry later (HTTP 503)."""
