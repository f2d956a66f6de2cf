"""The limits of the contract: field lengths, ids and page sizes, shared by the tables, the
validation and the OpenAPI document."""

# Ids are positive 63-bit integers (MySQL's signed BIGINT); keyset pagination starts at the top.
MAX_ID = 2**63 - 1
NAME_MAX_CHARS = 50
SUBJECT_MAX_CHARS = 200
STORY_MAX_CHARS = 10_000
KEYWORDS_MAX_CHARS = 200
# The IETF httpapi Idempotency-Key draft leaves the length to the server; a UUID needs 36.
IDEMPOTENCY_KEY_MAX_CHARS = 255
# Timeline and search pages: ?limit= takes 1 to MAX_LIMIT.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
