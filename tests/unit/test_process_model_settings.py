"""Unit tests of the process-model settings: defaults, pool sizing and clear errors."""

from pathlib import Path

import pytest

from feedsvc.core import config
from feedsvc.core.config import Config, ConfigError


def test_worker_class_defaults_to_meinheld_when_it_loads(monkeypatch):
    monkeypatch.setattr(config, "meinheld_available", lambda: True)

    loaded = Config.from_env({})

    assert loaded.worker_class == "meinheld"
    assert not loaded.worker_class_fell_back


def test_worker_class_falls_back_to_gthread_without_meinheld(monkeypatch):
    monkeypatch.setattr(config, "meinheld_available", lambda: False)

    loaded = Config.from_env({})

    assert loaded.worker_class == "gthread"
    assert loaded.worker_class_fell_back


def test_chosen_worker_class_is_no_fallback(monkeypatch):
    monkeypatch.setattr(config, "meinheld_available", lambda: False)

    assert not Config.from_env({"FEED_WORKER_CLASS": "gthread"}).worker_class_fell_back


def test_asking_for_meinheld_without_it_is_an_error(monkeypatch):
    monkeypatch.setattr(config, "meinheld_available", lambda: False)

    with pytest.raises(ConfigError, match="FEED_WORKER_CLASS"):
        Config.from_env({"FEED_WORKER_CLASS": "meinheld"})


@pytest.mark.parametrize(
    ("environ", "pool_size"),
    [
        ({"FEED_WORKER_CLASS": "sync"}, 1),
        ({"FEED_WORKER_CLASS": "gthread", "FEED_THREADS": "8"}, 8),
        ({"FEED_WORKER_CLASS": "sync", "FEED_SEARCH_URL": "http://es:9200"}, 2),
        (
            {
                "FEED_WORKER_CLASS": "gthread",
                "FEED_THREADS": "3",
                "FEED_SEARCH_URL": "http://es:9200",
                "FEED_KAFKA_BOOTSTRAP": "kafka:9092",
            },
            5,
        ),
        ({"FEED_WORKER_CLASS": "gthread", "FEED_DB_POOL_SIZE": "2"}, 2),
    ],
)
def test_pool_size_follows_worker_concurrency_plus_relay_threads(environ, pool_size):
    assert Config.from_env(environ).db_pool_size == pool_size


def test_control_socket_is_off_unless_systemd_gives_a_runtime_directory():
    assert Config.from_env({}).control_socket is None
    under_systemd = {"RUNTIME_DIRECTORY": "/run/feed"}
    assert Config.from_env(under_systemd).control_socket == Path("/run/feed/gunicorn.ctl")
    off = {**under_systemd, "FEED_CONTROL_SOCKET": "off"}
    assert Config.from_env(off).control_socket is None
    chosen = {"FEED_CONTROL_SOCKET": "/tmp/feed.ctl"}
    assert Config.from_env(chosen).control_socket == Path("/tmp/feed.ctl")


def test_metrics_dir_prefers_the_runtime_directory():
    user = {"FEED_DATA_DIR": "/srv/feed", "XDG_RUNTIME_DIR": "/run/user/7"}
    in_user_runtime = Config.from_env(user).metrics_dir
    assert in_user_runtime.parent.parent == Path("/run/user/7")
    assert in_user_runtime.name == "metrics"
    other_instance = Config.from_env({**user, "FEED_DATA_DIR": "/srv/other"}).metrics_dir
    assert other_instance != in_user_runtime
    on_shared_memory = Config.from_env({"FEED_DATA_DIR": "/srv/feed"}).metrics_dir
    assert on_shared_memory.parts[:3] == ("/", "dev", "shm")
    assert on_shared_memory.parent.name == in_user_runtime.parent.name
    under_systemd = {"FEED_DATA_DIR": "/srv/feed", "RUNTIME_DIRECTORY": "/run/feed"}
    assert Config.from_env(under_systemd).metrics_dir == Path("/run/feed/metrics")
    chosen = {**under_systemd, "FEED_METRICS_DIR": "/tmp/m"}
    assert Config.from_env(chosen).metrics_dir == Path("/tmp/m")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEED_WORKER_CLASS", "eventlet"),
        ("FEED_THREADS", "0"),
        ("FEED_BACKLOG", "many"),
        ("FEED_KEEPALIVE", "0"),
        ("FEED_TIMEOUT", "1"),
        ("FEED_GRACEFUL_TIMEOUT", "0"),
        ("FEED_MAX_REQUESTS", "-1"),
        ("FEED_MAX_REQUESTS_JITTER", "x"),
        ("FEED_DB_POOL_SIZE", "0"),
    ],
)
def test_bad_process_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [("", 3), ("mysql+mysqldb://feed@db.internal:3306/feed", 7)],
    ids=["sqlite: one per core", "mysql: 2 x cores + 1"],
)
def test_default_worker_count_follows_the_cores_and_the_database(
    monkeypatch, database_url, expected
):
    monkeypatch.setattr(config.os, "cpu_count", lambda: 3)

    assert Config.from_env({"FEED_DATABASE_URL": database_url}).workers == expected
    assert Config.from_env({"FEED_DATABASE_URL": database_url, "FEED_WORKERS": "2"}).workers == 2
