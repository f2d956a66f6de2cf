"""The connection to MariaDB breaks during COMMIT: the service checks the key before answering."""

import signal
import time

import pytest
import sqlalchemy as sa

from tests.support.commit_cutter import CommitCutter, Cut

KEY = '"0b5f6c1e-kill-during-commit"'
POST = {"subject": "at commit", "story": "the connection breaks while this commits"}
# Only there so that a broken recovery fails the test instead of hanging it.
RECOVERY_DEADLINE_S = 60.0


@pytest.fixture
def cutter(private_mariadb):
    proxy = CommitCutter(private_mariadb.port)
    yield proxy
    proxy.close()


@pytest.fixture
def service(gunicorn_server, cutter):
    gunicorn_server.start({"FEED_DATABASE_URL": cutter.url()}, workers=1)
    gunicorn_server.wait_ready(workers=1)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    bob = gunicorn_server.request("POST", "/participant", {"name": "Bob"}).json
    gunicorn_server.request("POST", f"{ada['link']}/friends", {"to": bob["link"]})
    return gunicorn_server, ada


def stored(private_mariadb):
    """(posts, inbound rows, keys) as the server holds them."""
    engine = sa.create_engine(private_mariadb.url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return tuple(
                conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one()
                for table in ("outbound", "inbound", "idempotency_key")
            )
    finally:
        engine.dispose()


def send(server, ada, key=KEY):
    headers = {"Idempotency-Key": key} if key else {}
    return server.request("POST", f"{ada['link']}/outbound", POST, headers)


def retry_until_answered(server, ada):
    """What a client told `retry_safe` does: the same request, same key, until not 503."""
    give_up = time.monotonic() + RECOVERY_DEADLINE_S
    while True:
        response = send(server, ada)
        if response.status != 503 or time.monotonic() > give_up:
            return response
        time.sleep(0.2)


def test_a_commit_whose_answer_is_lost_is_answered_from_the_key(service, cutter, private_mariadb):
    server, ada = service
    cutter.arm(Cut.AFTER_COMMIT)
    response = send(server, ada)
    assert cutter.cuts == 1
    assert response.status == 200, response.body
    assert response.json["story"] == POST["story"]
    assert stored(private_mariadb) == (1, 1, 1)
    again = send(server, ada)
    assert (again.status, again.body) == (200, response.body)
    assert stored(private_mariadb) == (1, 1, 1)


def test_without_a_key_the_503_says_a_retry_may_duplicate(service, cutter, private_mariadb):
    server, ada = service
    cutter.arm(Cut.AFTER_COMMIT)
    response = send(server, ada, key=None)
    assert cutter.cuts == 1
    assert response.status == 503, response.body
    assert response.json["retry_safe"] is False
    assert "Idempotency-Key" in response.json["description"]
    assert int(response.headers["Retry-After"]) >= 1
    assert stored(private_mariadb)[:2] == (1, 1)  # it was committed: a blind retry duplicates


@pytest.mark.parametrize("cut", [Cut.BEFORE_COMMIT, Cut.AFTER_COMMIT])
def test_mariadbd_killed_at_commit_then_the_retry_with_the_key_writes_once(
    service, cutter, private_mariadb, cut
):
    server, ada = service
    cutter.arm(cut, lambda: private_mariadb.stop(signal.SIGKILL))
    response = send(server, ada)
    assert cutter.cuts == 1
    assert response.status == 503, response.body
    assert response.json["retry_safe"] is True
    assert "same Idempotency-Key is safe" in response.json["description"]

    private_mariadb.start()
    answered = retry_until_answered(server, ada)
    assert answered.status == 200, answered.body
    assert answered.json["story"] == POST["story"]
    assert answered.headers.get("Idempotent-Replayed") == (
        "true" if cut is Cut.AFTER_COMMIT else None
    )
    # Once, with its whole fan-out, whichever side of the commit the server died on.
    assert stored(private_mariadb) == (1, 1, 1)
