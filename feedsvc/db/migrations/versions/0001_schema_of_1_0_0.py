"""The schema of release 1.0.0, as `feedsvc init-db` made it before migrations existed.

Idempotent on purpose: a database init-db made before Alembic came (tables, no alembic_version)
gets only what it lacks, the indexes added since it was made included, and keeps its rows.
Frozen: later schema changes are new revisions, never edits here.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
STORY = sa.Text().with_variant(
    mysql.MEDIUMTEXT(collation="utf8mb4_unicode_520_ci"), "mysql", "mariadb"
)
PAYLOAD = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
INNODB = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
BINARY_NAMES = {**INNODB, "mysql_collate": "utf8mb4_bin"}
# Secondary indexes by table, created when missing: (name, columns).
INDEXES = {
    "friendship": [("ix_friendship_high_low", ["high_id", "low_id"])],
    "outbound": [("ix_outbound_sender_id", ["sender_id", "id"])],
    "outbox": [("ix_outbox_sink_id", ["sink", "id"])],
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES:
        if name not in existing:
            create()
    inspector = sa.inspect(op.get_bind())
    for table, indexes in INDEXES.items():
        present = {index["name"] for index in inspector.get_indexes(table)}
        for name, columns in indexes:
            if name not in present:
                op.create_index(name, table, columns)


def downgrade() -> None:
    for name, _create in reversed(TABLES):
        op.drop_table(name)


def _participant() -> None:
    op.create_table(
        "participant",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(50), nullable=False),
        **BINARY_NAMES,
    )


def _friendship() -> None:
    op.create_table(
        "friendship",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("low_id", ID, sa.ForeignKey("participant.id"), nullable=False),
        sa.Column("high_id", ID, sa.ForeignKey("participant.id"), nullable=False),
        sa.UniqueConstraint("low_id", "high_id", name="uq_friendship_pair"),
        **BINARY_NAMES,
    )


def _outbound() -> None:
    op.create_table(
        "outbound",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("sender_id", ID, sa.ForeignKey("participant.id"), nullable=False),
        sa.Column("occurred", TIMESTAMP, nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("story", STORY, nullable=False),
        **BINARY_NAMES,
    )


def _inbound() -> None:
    op.create_table(
        "inbound",
        sa.Column("recipient_id", ID, sa.ForeignKey("participant.id"), primary_key=True),
        sa.Column("outbound_id", ID, sa.ForeignKey("outbound.id"), primary_key=True),
        sqlite_with_rowid=False,
        **INNODB,
    )


def _outbox() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("sink", sa.String(32), nullable=False),
        sa.Column("key", sa.String(64), nullable=True),
        sa.Column("payload", PAYLOAD, nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        **INNODB,
    )


def _outbox_lease() -> None:
    op.create_table(
        "outbox_lease",
        sa.Column("sink", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires", TIMESTAMP, nullable=False),
        **INNODB,
    )


# In dependency order: a table's foreign keys point only at tables before it.
TABLES = [
    ("participant", _participant),
    ("friendship", _friendship),
    ("outbound", _outbound),
    ("inbound", _inbound),
    ("outbox", _outbox),
    ("outbox_lease", _outbox_lease),
]
