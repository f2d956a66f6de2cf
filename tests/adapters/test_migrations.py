"""Alembic migrations: init-db upgrades a database today's init-db made, full of data, losing
nothing, and the revisions make exactly the tables feedsvc.db.tables describes (SQLite, MariaDB)."""

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from falcon.testing import TestClient
from sqlalchemy.engine import URL

from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_app
from feedsvc.core.config import Config
from feedsvc.db import engines, migrations, tables
from tests.support.api import befriend, create_participant, publish, wait_until_delivered
from tests.support.mysql import server_url

PARTICIPANTS = 12
POSTS_EACH = 3


@pytest.fixture
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: a SQLite file, or a new database on the shared MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'feed.db'}"
        return
    admin_url: URL = request.getfixturevalue("mariadb_server")
    name = f"feedsvc_migrate_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield server_url(name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


BACKENDS = pytest.mark.parametrize("fresh_database_url", ["sqlite", "mariadb"], indirect=True)


def config_for(url: str, tmp_path: Path) -> Config:
    return Config.from_env({"FEED_DATA_DIR": str(tmp_path), "FEED_DATABASE_URL": url})


def init_db_before_migrations(config: Config) -> None:
    """What `feedsvc init-db` made before this release: the same tables (the revisions make
    exactly tables.metadata, see below) and search structures, but no alembic_version."""
    init_db(config)
    engine = engines.create_engine(config)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE alembic_version")
    finally:
        engine.dispose()


def every_row(config: Config) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in key order: what an upgrade must leave exactly as it was."""
    engine = engines.create_engine(config)
    try:
        with engine.connect() as conn:
            return {
                table.name: [
                    tuple(row)
                    for row in conn.execute(sa.select(table).order_by(*table.primary_key))
                ]
                for table in tables.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def revisions(config: Config) -> tuple[str | None, str | None]:
    engine = engines.create_engine(config)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, ScriptDirectory.from_config(migrations.scripts_config()).get_current_head()


@BACKENDS
def test_a_database_made_before_migrations_is_upgraded_with_every_row_kept(
    fresh_database_url: str, tmp_path: Path
) -> None:
    config = config_for(fresh_database_url, tmp_path)
    init_db_before_migrations(config)
    client = TestClient(build_app(config))
    people = [create_participant(client, f"p{number}") for number in range(PARTICIPANTS)]
    for left, right in itertools.pairwise(people):
        befriend(client, left, right)
    for person in people:
        for number in range(POSTS_EACH):
            publish(client, person, subject=f"s{number}", story=f"legacy story {number}")
    # The app's outbox relay indexes the posts meanwhile: compare the rows once it is done.
    wait_until_delivered(config)
    before = every_row(config)
    assert len(before["inbound"]) == 2 * (PARTICIPANTS - 1) * POSTS_EACH
    assert revisions(config)[0] is None

    init_db(config)
    init_db(config)  # and again: nothing more to do

    current, head = revisions(config)
    assert current == head is not None
    assert every_row(config) == before
    client = TestClient(build_app(config))
    found = client.simulate_get("/outbound", params={"keywords": "legacy"}).json
    assert sorted(found) == sorted(person["link"] for person in people)
    publish(client, people[0], subject="after", story="written after the upgrade")
    assert len(every_row(config)["outbound"]) == PARTICIPANTS * POSTS_EACH + 1


@BACKENDS
def test_the_revisions_make_exactly_the_schema_module_describes(
    fresh_database_url: str, tmp_path: Path
) -> None:
    config = config_for(fresh_database_url, tmp_path)
    init_db(config)
    engine = engines.create_engine(config)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                # The search backend's own structures (FTS5 tables, FULLTEXT index) are not ours.
                opts={
                    "include_object": lambda obj, name, kind, reflected, other: (
                        not (reflected and other is None)
                    )
                },
            )
            differences = compare_metadata(context, tables.metadata)
    finally:
        engine.dispose()
    assert differences == []
