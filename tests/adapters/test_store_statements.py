"""The store's compiled statements, run on the DB-API cursor, behave as SQLAlchemy's own would."""

from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from feedsvc.adapters.store import Store
from feedsvc.db import engines
from feedsvc.db.tables import outbound


@pytest.fixture
def engine(api_config):
    engine = engines.create_engine(api_config)
    yield engine
    engine.dispose()


def test_a_driver_error_is_raised_as_sqlalchemy_s_and_rolls_the_transaction_back(engine):
    store = Store(engine)
    with store.transaction() as conn:
        ada = store.insert_participant(conn, "Ada")
        bob = store.insert_participant(conn, "Bob")
    with pytest.raises(IntegrityError), store.transaction() as conn:
        store.insert_friendship(conn, ada.id, bob.id)
        store.insert_post(conn, ada.id, datetime(2026, 11, 30), None, "a story")  # NOT NULL
    assert store.friendship_id(ada.id, bob.id) is None


def test_a_datetime_is_stored_exactly_as_sqlalchemy_stores_it(engine):
    store = Store(engine)
    with store.transaction() as conn:
        sender = store.insert_participant(conn, "Ada")
    # A whole second: the driver's own adapter would drop the fraction that SQLAlchemy writes.
    occurred = datetime(2026, 11, 30, 5, 0, 0)
    with store.transaction() as conn:
        post = store.insert_post(conn, sender.id, occurred, "subject", "story")
    with engine.connect() as conn:
        through_sqlalchemy = conn.execute(sa.select(outbound.c.occurred)).scalar_one()
        stored = conn.execute(sa.text("SELECT occurred FROM outbound")).scalar_one()
        conn.execute(outbound.delete())
        conn.execute(
            outbound.insert().values(
                id=post.id, sender_id=sender.id, occurred=occurred, subject="subject", story="story"
            )
        )
        written_by_sqlalchemy = conn.execute(sa.text("SELECT occurred FROM outbound")).scalar_one()
        conn.rollback()
    assert through_sqlalchemy == occurred
    assert stored == written_by_sqlalchemy
