"""The search backend the settings ask for. A module of its own: the gunicorn master runs init-db
through it, and must import no metric (feedsvc.adapters.metrics_files), so none of the app."""

from sqlalchemy.engine import Engine

from feedsvc.core.config import Config
from feedsvc.core.protocols import SearchBackend


def create_search(config: Config, engine: Engine) -> SearchBackend:
    """The search backend this configuration asks for; only the chosen one is imported."""
    if config.search_urls:
        from feedsvc.adapters.search.elastic import ElasticsearchSearch, create_client

        return ElasticsearchSearch(create_client(config.search_urls), config.search_index)
    if config.is_sqlite:
        from feedsvc.adapters.search.embedded import EmbeddedSearch

        return EmbeddedSearch(engine, config.sqlite_synchronous)
    from feedsvc.adapters.search.mysql_fulltext import FulltextSearch

    return FulltextSearch(engine)
