"""Schema set-up (`feedsvc init-db`, and the gunicorn master on SQLite): tables and search."""

from feedsvc.compose.search import create_search
from feedsvc.core.config import Config
from feedsvc.db import migrations
from feedsvc.db.engines import create_engine, writer


def init_db(config: Config) -> None:
    """Upgrade the schema to the newest revision, create the search structures if missing;
    safe to run again, and on a database full of data."""
    if config.is_sqlite:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(config)
    try:
        # Under SQLite's write lock: two instances starting on one data directory take turns.
        with writer(engine).begin() as conn:
            migrations.upgrade(conn)
        search = create_search(config, engine)
        try:
            search.create_schema()
        finally:
            search.close()
    finally:
        engine.dispose()
