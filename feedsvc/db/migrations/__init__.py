"""Schema migrations with Alembic: `feedsvc init-db` upgrades any database to the newest revision.

A schema change is a new revision: `.venv/bin/alembic revision -m "what changes"` at the
repository root (pyproject.toml's [tool.alembic] points here), its upgrade() written by hand.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection

SCRIPT_LOCATION = Path(__file__).parent


def scripts_config() -> AlembicConfig:
    """Alembic's settings without an alembic.ini: the revisions in this package."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def upgrade(conn: Connection) -> None:
    """Apply every revision the database lacks, on the caller's connection and in its transaction
    (so SQLite's write lock covers it all); a database at the newest revision is left alone."""
    config = scripts_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
