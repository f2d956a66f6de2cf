"""The schema on MariaDB: engine and charset, init-db as create-or-upgrade, and index-only pages."""

import os
import secrets
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
import sqlalchemy as sa
from falcon.testing import TestClient

from feedsvc.adapters import store
from feedsvc.adapters.search.mysql_fulltext import INDEX_NAME
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_app
from feedsvc.core.config import Config
from feedsvc.db import engines, statements
from feedsvc.db.tables import friendship, inbound, metadata, outbound, participant
from tests.support.mysql import server_url

STORY = "Grüße 😀👩‍👩‍👧 𠀋𡈁𨳒 東京タワー مرحبا שלום"


@pytest.fixture
def config(mariadb_url):
    return Config.from_env({"FEED_DATABASE_URL": mariadb_url})


@pytest.fixture
def engine(config):
    engine = engines.create_engine(config)
    yield engine
    engine.dispose()


@pytest.fixture
def client(config):
    return TestClient(build_app(config))


def test_tables_are_innodb_and_text_is_utf8mb4(engine):
    with engine.connect() as conn:
        tables = conn.exec_driver_sql(
            "SELECT table_name, engine FROM information_schema.tables"
            " WHERE table_schema = DATABASE()"
        ).all()
        charsets = conn.exec_driver_sql(
            "SELECT column_name, character_set_name FROM information_schema.columns"
            " WHERE table_schema = DATABASE() AND character_set_name IS NOT NULL"
        ).all()
        occurred = conn.exec_driver_sql(
            "SELECT column_type FROM information_schema.columns WHERE table_schema = DATABASE()"
            " AND table_name = 'outbound' AND column_name = 'occurred'"
        ).scalar_one()

    expected = [*metadata.tables, "alembic_version"]
    assert dict(tables) == {table: "InnoDB" for table in expected}
    assert {"name", "subject", "story"} <= {column for column, _ in charsets}
    assert {charset for _, charset in charsets} == {"utf8mb4"}
    assert occurred == "datetime(3)"


SESSION_SETTINGS = (
    "SELECT @@tx_isolation, @@character_set_connection, @@time_zone,"
    " @@innodb_lock_wait_timeout, @@autocommit"
)
EXPECTED_SETTINGS = ("READ-COMMITTED", "utf8mb4", "+00:00", engines.MYSQL_LOCK_WAIT_TIMEOUT_S)


def test_the_read_connection_is_read_committed_utf8mb4_utc_with_each_select_its_own_transaction(
    engine,
):
    reader = statements.Reader(engine)
    (settings,) = reader.rows(statements.CompiledQuery(engine, sa.text(SESSION_SETTINGS)), {})

    assert settings == (*EXPECTED_SETTINGS, 1)


def test_every_write_connection_is_read_committed_utf8mb4_utc_with_short_lock_waits(engine):
    with engine.begin() as conn:
        settings = conn.exec_driver_sql(SESSION_SETTINGS).one()

    # Not in autocommit: a write's first statement opens its transaction, with no BEGIN.
    assert tuple(settings) == (*EXPECTED_SETTINGS, 0)


def test_four_byte_text_and_milliseconds_round_trip_exactly(client, engine):
    ada = client.simulate_post("/participant", json={"name": "𠀋 Ada 😀"}).json
    posted = client.simulate_post(
        f"{ada['link']}/outbound", json={"subject": "👩‍👩‍👧 𨳒", "story": STORY}
    ).json

    shown = client.simulate_get(f"{ada['link']}/outbound").json
    with engine.connect() as conn:
        stored = conn.execute(sa.select(outbound.c.story, outbound.c.occurred)).one()

    assert client.simulate_get(ada["link"]).json["name"] == "𠀋 Ada 😀"
    assert shown == [posted]
    assert shown[0]["story"].encode() == STORY.encode()
    assert stored.story == STORY
    assert stored.occurred.isoformat(timespec="milliseconds") + "Z" == posted["occurred"]
    assert abs((datetime.utcnow() - stored.occurred).total_seconds()) < 3600  # UTC, not local


def test_a_friendship_exists_once_whichever_side_created_it(client, engine):
    ada, bob = (client.simulate_post("/participant", json={"name": n}).json for n in ("A", "B"))
    client.simulate_post(f"{ada['link']}/friends", json={"to": bob["link"]})
    client.simulate_post(f"{bob['link']}/friends", json={"to": ada["link"]})

    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(friendship)).scalar() == 1
        with pytest.raises(sa.exc.IntegrityError):
            conn.execute(friendship.insert().values(low_id=ada["id"], high_id=bob["id"]))


def test_init_db_twice_keeps_the_data(config, client, engine):
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json
    client.simulate_post(f"{ada['link']}/outbound", json={"subject": "s", "story": "kept"})

    init_db(config)
    init_db(config)

    assert client.simulate_get(f"{ada['link']}/outbound").json[0]["story"] == "kept"
    assert client.simulate_get("/outbound", params={"keywords": "kept"}).json == [ada["link"]]


def test_init_db_upgrades_a_database_missing_indexes_without_losing_data(config, client, engine):
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json
    client.simulate_post(f"{ada['link']}/outbound", json={"subject": "s", "story": "legacy"})
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ALTER TABLE outbound DROP INDEX {INDEX_NAME}")
        # As if made before the index and migrations existed (MySQL keeps an index a foreign
        # key relies on).
        conn.exec_driver_sql("DROP TABLE alembic_version")
        conn.exec_driver_sql("ALTER TABLE friendship DROP FOREIGN KEY friendship_ibfk_2")
        conn.exec_driver_sql("ALTER TABLE friendship DROP INDEX ix_friendship_high_low")

    init_db(config)

    with engine.connect() as conn:
        indexes = {index["name"] for index in sa.inspect(conn).get_indexes("outbound")}
        indexes |= {index["name"] for index in sa.inspect(conn).get_indexes("friendship")}
    assert {INDEX_NAME, "ix_friendship_high_low"} <= indexes
    assert client.simulate_get("/outbound", params={"keywords": "legacy"}).json == [ada["link"]]


@pytest.fixture
def password_user(mariadb_server, mariadb_url):
    """A MariaDB user with a password, allowed on the test database only."""
    name = f"feedsvc_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(16)
    database_name = sa.engine.make_url(mariadb_url).database
    admin = sa.create_engine(mariadb_server, poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.execute(
            sa.text(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY :pw"), {"pw": password}
        )
        conn.exec_driver_sql(f"GRANT ALL ON {database_name}.* TO '{name}'@'127.0.0.1'")
    try:
        yield server_url(database_name)._replace(username=name, password=None), password
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")
        admin.dispose()


def test_init_db_command_reads_the_password_file_and_never_prints_it(password_user, tmp_path):
    url, password = password_user
    password_file = tmp_path / "db-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("FEED_")}
    environ["FEED_DATABASE_URL"] = url.render_as_string(hide_password=False)
    environ["FEED_DATABASE_PASSWORD_FILE"] = str(password_file)

    result = subprocess.run(
        [sys.executable, "-m", "feedsvc", "init-db"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert url.username in result.stdout
    assert password not in result.stdout + result.stderr


def explain(engine, statement, **params):
    """EXPLAIN rows of a store statement, as dicts, compiled exactly as the store runs it."""
    query = statements.CompiledQuery(engine, statement)
    with engine.connect() as conn:
        result = conn.exec_driver_sql(f"EXPLAIN {query.sql}", tuple(query.values(params)))
        return [dict(row._mapping) for row in result]


@pytest.fixture
def busy_feed(engine):
    """Enough participants, friendships and posts that the optimizer's choice means something."""
    with engine.begin() as conn:
        conn.execute(participant.insert(), [{"name": f"p{i}"} for i in range(200)])
        conn.execute(
            friendship.insert(),
            [
                {"low_id": low, "high_id": low + step}
                for low in range(1, 150)
                for step in (1, 7, 31)
            ],
        )
        now = datetime.utcnow()
        conn.execute(
            outbound.insert(),
            [
                {"sender_id": 1 + i % 200, "occurred": now, "subject": "s", "story": f"story {i}"}
                for i in range(4000)
            ],
        )
        conn.execute(
            inbound.insert(),
            [{"recipient_id": 1 + (i * 7) % 200, "outbound_id": 1 + i} for i in range(4000)],
        )
        for table in ("participant", "friendship", "outbound", "inbound"):
            conn.exec_driver_sql(f"ANALYZE TABLE {table}")


def test_outbound_page_is_an_index_range_scan(engine, busy_feed):
    (plan,) = explain(engine, store._OUTBOUND_PAGE, participant_id=5, before=2**63 - 1, limit=101)
    print("EXPLAIN outbound page:", plan)

    assert plan["key"] == "ix_outbound_sender_id"
    assert plan["type"] == "range"
    assert "filesort" not in (plan["Extra"] or "")


def test_inbound_page_is_an_index_range_scan_joined_by_primary_key(engine, busy_feed):
    plans = explain(engine, store._INBOUND_PAGE, participant_id=5, before=2**63 - 1, limit=101)
    print("EXPLAIN inbound page:", plans)

    by_table = {plan["table"]: plan for plan in plans}
    assert (by_table["inbound"]["key"], by_table["inbound"]["type"]) == ("PRIMARY", "range")
    assert (by_table["outbound"]["key"], by_table["outbound"]["type"]) == ("PRIMARY", "eq_ref")
    assert "filesort" not in (by_table["inbound"]["Extra"] or "")


def test_friends_are_read_from_both_pair_indexes(engine, busy_feed):
    plans = explain(engine, store._SELECT_FRIENDS, participant_id=40)
    print("EXPLAIN friends:", plans)

    keys = {plan["key"] for plan in plans if plan["table"] == "friendship"}
    types = {plan["type"] for plan in plans if plan["table"] == "friendship"}
    assert keys == {"uq_friendship_pair", "ix_friendship_high_low"}
    assert types <= {"ref", "range"}


def test_fan_out_reads_friends_from_both_pair_indexes(engine, busy_feed):
    plans = explain(engine, store._FAN_OUT, sender_id=40, outbound_id=1)
    print("EXPLAIN fan-out:", plans)

    keys = {plan["key"] for plan in plans if plan["table"] == "friendship"}
    assert keys == {"uq_friendship_pair", "ix_friendship_high_low"}


def test_a_recycle_period_beyond_the_servers_wait_timeout_is_reported(mariadb_url, caplog):
    config = Config.from_env({"FEED_DATABASE_URL": mariadb_url, "FEED_DB_POOL_RECYCLE": "99999999"})
    engine = engines.create_engine(config)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()

    assert "FEED_DB_POOL_RECYCLE=99999999 s is not below the server's wait_timeout" in caplog.text


def test_the_default_recycle_period_is_below_the_servers_wait_timeout(config, caplog):
    engine = engines.create_engine(config)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()

    assert "FEED_DB_POOL_RECYCLE" not in caplog.text
