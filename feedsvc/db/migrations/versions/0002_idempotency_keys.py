"""Idempotency-Key responses, stored with the write they answer (feedsvc/adapters/idempotency.py).

Idempotent like 0001: a database whose tables were made before it was stamped keeps its table.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
PAYLOAD = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    if "idempotency_key" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "idempotency_key",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", PAYLOAD, nullable=False),
        sa.Column("created", TIMESTAMP, nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )
    op.create_index("ix_idempotency_key_created", "idempotency_key", ["created"])


def downgrade() -> None:
    op.drop_table("idempotency_key")
