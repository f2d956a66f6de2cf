"""The embedded backend's search tests, run unchanged on Elasticsearch: same data, same results.

Every test of tests/api/test_search.py is collected again here with the app's search on an
Elasticsearch-API server; the client waits after each post until the outbox has delivered it.
"""

import pytest

from tests.api.test_search import *  # noqa: F403 -- the tests themselves, collected again here


@pytest.fixture
def api_config(elastic_config):
    return elastic_config


@pytest.fixture
def client(elastic_indexed_client):
    return elastic_indexed_client
