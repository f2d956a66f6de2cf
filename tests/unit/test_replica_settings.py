"""Unit tests of the read-replica settings and of the replication positions the router compares."""

import pytest

from feedsvc.core.config import Config, ConfigError
from feedsvc.db import engines
from feedsvc.db.replicas import parse_position, reached, replica_label

PRIMARY = "mysql+mysqldb://feed@primary.example:3306/feed"
REPLICAS = "mysql+mysqldb://feed@r1.example/feed, mysql+mysqldb://feed@r2.example:3307/feed"
SECRET = "s3cr3t-pa55"


def test_replicas_are_parsed_and_take_the_primary_s_password():
    config = Config.from_env(
        {
            "FEED_DATABASE_URL": PRIMARY,
            "FEED_DATABASE_REPLICA_URLS": REPLICAS,
            "FEED_DATABASE_PASSWORD": SECRET,
            "FEED_REPLICA_MAX_LAG_MS": "250",
        }
    )

    assert config.database_replica_urls == (
        "mysql+mysqldb://feed@r1.example/feed",
        "mysql+mysqldb://feed@r2.example:3307/feed",
    )
    assert config.replica_max_lag_ms == 250
    replica = engines.connect_url(config, config.database_replica_urls[1])
    assert (replica.host, replica.port, replica.password) == ("r2.example", 3307, SECRET)
    assert SECRET not in repr(config)


def test_no_replicas_by_default():
    config = Config.from_env({"FEED_DATABASE_URL": PRIMARY})

    assert config.database_replica_urls == ()
    assert config.replica_max_lag_ms == 1000


@pytest.mark.parametrize(
    "environ",
    [
        {"FEED_DATABASE_REPLICA_URLS": "mysql+mysqldb://feed@r1/feed"},  # primary is SQLite
        {"FEED_DATABASE_URL": PRIMARY, "FEED_DATABASE_REPLICA_URLS": f"not a url {SECRET}"},
        {"FEED_DATABASE_URL": PRIMARY, "FEED_DATABASE_REPLICA_URLS": f"sqlite:///{SECRET}"},
        {
            "FEED_DATABASE_URL": PRIMARY,
            "FEED_DATABASE_PASSWORD": "x",
            "FEED_DATABASE_REPLICA_URLS": f"mysql+mysqldb://feed:{SECRET}@r1/feed",
        },
    ],
)
def test_bad_replica_urls_name_the_variable_and_hide_the_secret(environ):
    with pytest.raises(ConfigError, match="FEED_DATABASE_REPLICA_URLS") as raised:
        Config.from_env(environ)

    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEED_REPLICA_MAX_LAG_MS", "0"),
        # The lag is measured by a wait that must end before the read timeout (2 s) does.
        ("FEED_REPLICA_MAX_LAG_MS", "2000"),
        ("FEED_REPLICA_MAX_LAG_MS", "soon"),
        ("FEED_REPLICA_TOKEN_WAIT_MS", "-1"),
        ("FEED_REPLICA_TOKEN_WAIT_MS", "5000"),
    ],
)
def test_bad_replica_timing_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({"FEED_DATABASE_URL": PRIMARY, name: value})


def test_positions_are_mariadb_gtid_lists():
    assert parse_position("0-1-42") == {0: 42}
    assert parse_position("0-1-42,7-2-3") == {0: 42, 7: 3}
    assert parse_position(f"{2**32 - 1}-1-{2**64 - 1}") == {2**32 - 1: 2**64 - 1}


@pytest.mark.parametrize(
    "token", ["", "0-1", "0-1-x", "0-1-42,", " 0-1-42", f"{2**32}-1-1", f"0-1-{2**64}", "0-1-1\n"]
)
def test_anything_else_is_no_position(token):
    assert parse_position(token) is None


def test_a_position_is_reached_in_every_domain_it_names():
    assert reached({0: 42, 1: 5}, {0: 42})
    assert reached({0: 43}, {0: 42})
    assert not reached({0: 41}, {0: 42})
    assert not reached({0: 42}, {0: 42, 1: 1})
    assert reached({}, {})


def test_replicas_are_named_without_credentials():
    assert replica_label(f"mysql+mysqldb://feed:{SECRET}@r1.example/feed") == "r1.example:3306/feed"
