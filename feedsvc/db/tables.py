"""The tables, in SQLAlchemy Core, portable between SQLite and MySQL/MariaDB."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

from feedsvc.core.limits import (
    IDEMPOTENCY_KEY_MAX_CHARS,
    NAME_MAX_CHARS,
    SUBJECT_MAX_CHARS,
)

SINK_MAX_CHARS = 32
OUTBOX_KEY_MAX_CHARS = 64
LEASE_OWNER_MAX_CHARS = 64
FINGERPRINT_CHARS = 64

# SQLite only auto-increments an INTEGER PRIMARY KEY; MySQL wants BIGINT for 63-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
# Milliseconds are part of the contract: MySQL's DATETIME drops them unless asked for fsp=3.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
# utf8mb4 throughout on MySQL so emoji and 4-byte CJK round-trip byte-exact. The FULLTEXT index
# matches words by the column's collation: case- and accent-insensitive, like the FTS5 index.
StoryText = Text().with_variant(
    mysql.MEDIUMTEXT(collation="utf8mb4_unicode_520_ci"), "mysql", "mariadb"
)
# An outbox payload carries a whole story; MySQL's plain BLOB stops at 64 KiB.
Payload = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")

metadata = MetaData()

participant = Table(
    "participant",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(NAME_MAX_CHARS), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# One row per friendship, stored as (lower id, higher id) so it exists once whichever side asked.
friendship = Table(
    "friendship",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("low_id", Id, ForeignKey("participant.id"), nullable=False),
    Column("high_id", Id, ForeignKey("participant.id"), nullable=False),
    UniqueConstraint("low_id", "high_id", name="uq_friendship_pair"),
    Index("ix_friendship_high_low", "high_id", "low_id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

outbound = Table(
    "outbound",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sender_id", Id, ForeignKey("participant.id"), nullable=False),
    Column("occurred", Timestamp, nullable=False),
    Column("subject", String(SUBJECT_MAX_CHARS), nullable=False),
    Column("story", StoryText, nullable=False),
    Index("ix_outbound_sender_id", "sender_id", "id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# The social broadcast: one row per recipient of a post; the post itself is not copied.
inbound = Table(
    "inbound",
    metadata,
    Column("recipient_id", Id, ForeignKey("participant.id"), primary_key=True),
    Column("outbound_id", Id, ForeignKey("outbound.id"), primary_key=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    sqlite_with_rowid=False,
)

# Work a post's transaction leaves for a background sink (search index, events): see
# adapters/outbox.py.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sink", String(SINK_MAX_CHARS), nullable=False),
    Column("key", String(OUTBOX_KEY_MAX_CHARS), nullable=True),
    Column("payload", Payload, nullable=False),
    Column("created", Timestamp, nullable=False),
    Index("ix_outbox_sink_id", "sink", "id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# Which worker delivers a sink's rows right now, and until when, unless it renews.
outbox_lease = Table(
    "outbox_lease",
    metadata,
    Column("sink", String(SINK_MAX_CHARS), primary_key=True),
    Column("owner", String(LEASE_OWNER_MAX_CHARS), nullable=False),
    Column("expires", Timestamp, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# The response of each write a client sent with an Idempotency-Key, committed with the write:
# a retry with the same key is answered from here and writes nothing (adapters/idempotency.py).
idempotency_key = Table(
    "idempotency_key",
    metadata,
    Column("key", String(IDEMPOTENCY_KEY_MAX_CHARS), primary_key=True),
    Column("fingerprint", String(FINGERPRINT_CHARS), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", Payload, nullable=False),
    Column("created", Timestamp, nullable=False),
    Index("ix_idempotency_key_created", "created"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
