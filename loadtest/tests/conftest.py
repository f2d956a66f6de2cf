"""Fixtures of the load-test tests; they take nothing from tests/ (loadtest stands alone)."""

import os

import pytest

from loadtest.harness.mariadb import mariadb_installed


@pytest.fixture
def needs_mariadbd() -> None:
    """CI must have mariadbd, so there its absence fails; elsewhere it skips and says why."""
    if mariadb_installed():
        return
    reason = "mariadbd is not installed; run scripts/ensure-mariadb"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
