"""What the worker classes deliver: the largest response intact, own DB connections, fallback."""

import concurrent.futures
import time
from pathlib import Path

import orjson
import pytest
import sqlalchemy

from feedsvc.core.limits import MAX_LIMIT, STORY_MAX_CHARS, SUBJECT_MAX_CHARS
from loadtest.harness.gunicorn import START_DEADLINE_SECONDS, GunicornServer
from tests.support.processes import WORKER_APP, open_files
from tests.support.worker_app import WORKER_PID_HEADER

# orjson writes a control character as \\u00XX: 6 bytes per character, the most any takes.
WIDEST_CHARACTER = "\x01"
MYSQL_PORT = 3306


def test_largest_possible_response_arrives_intact_through_meinheld(gunicorn_server):
    gunicorn_server.start({"FEED_WORKER_CLASS": "meinheld"}, workers=2)
    gunicorn_server.wait_ready(workers=2)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    bob = gunicorn_server.request("POST", "/participant", {"name": "Bob"}).json
    gunicorn_server.request("POST", f"{ada['link']}/friends", {"to": bob["link"]})
    widest = {
        "subject": WIDEST_CHARACTER * SUBJECT_MAX_CHARS,
        "story": WIDEST_CHARACTER * STORY_MAX_CHARS,
    }

    def post(_: int) -> int:
        return gunicorn_server.request("POST", f"{ada['link']}/outbound", widest).status

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as clients:
        assert set(clients.map(post, range(MAX_LIMIT))) == {200}

    # The widest page of the widest items: a full inbound page (it also names the recipient).
    response = gunicorn_server.request("GET", f"{bob['link']}/inbound?limit={MAX_LIMIT}")

    assert response.status == 200
    assert len(response.body) == int(response.headers["Content-Length"])
    assert len(response.body) > MAX_LIMIT * 6 * (STORY_MAX_CHARS + SUBJECT_MAX_CHARS)
    page = orjson.loads(response.body)
    assert len(page) == MAX_LIMIT
    assert {(item["subject"], item["story"]) for item in page} == {
        (widest["subject"], widest["story"])
    }
    assert gunicorn_server.stop() == 0


def test_request_body_up_to_the_maximum_is_accepted_by_meinheld(gunicorn_server):
    max_body_bytes = 4 * 1024 * 1024
    gunicorn_server.start(
        {"FEED_WORKER_CLASS": "meinheld", "FEED_MAX_BODY_BYTES": str(max_body_bytes)}, workers=1
    )
    gunicorn_server.wait_ready(workers=1)
    name = {"name": "Ada", "padding": "x" * (max_body_bytes - 40)}
    assert len(orjson.dumps(name)) <= max_body_bytes

    assert gunicorn_server.request("POST", "/participant", name).status == 200
    too_big = {**name, "more": "x" * 100}
    rejected = gunicorn_server.request("POST", "/participant", too_big)
    assert rejected.status == 413
    assert rejected.json["title"]
    assert gunicorn_server.stop() == 0


def test_meinheld_missing_falls_back_to_gthread_and_says_so_once(gunicorn_server, tmp_path):
    hidden = tmp_path / "hide-meinheld" / "meinheld"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    gunicorn_server.start({"PYTHONPATH": str(hidden.parent)}, workers=2)
    gunicorn_server.wait_ready(workers=2)

    assert gunicorn_server.request("GET", "/openapi.json").status == 200
    log = gunicorn_server.log()
    assert "Using worker: feedsvc.server.workers.gthread_worker.ThreadWorker" in log
    assert log.count("meinheld is not installed") == 1
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", ["meinheld", "gthread"])
def test_workers_never_share_a_database_connection(gunicorn_server, mariadb_url, worker_class):
    gunicorn_server.start(
        {"FEED_WORKER_CLASS": worker_class, "FEED_DATABASE_URL": mariadb_url},
        workers=3,
        app=WORKER_APP,
    )
    gunicorn_server.wait_ready(workers=3)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json

    def read(_: int) -> str:
        return gunicorn_server.request("GET", ada["link"]).headers[WORKER_PID_HEADER]

    workers = gunicorn_server.worker_pids()
    served_by: set[str] = set()
    give_up = time.monotonic() + START_DEADLINE_SECONDS
    # Until every worker has used its pool (the kernel spreads connections unevenly).
    while served_by != {str(pid) for pid in workers} and time.monotonic() < give_up:
        with concurrent.futures.ThreadPoolExecutor(max_workers=9) as clients:
            served_by |= set(clients.map(read, range(90)))
    assert served_by == {str(pid) for pid in workers}

    ports = {pid: mysql_client_ports(pid) for pid in [gunicorn_server.pid, *workers]}
    assert ports.pop(gunicorn_server.pid) == set(), "the master holds a database connection"
    assert all(ports.values()), ports
    every_port = [port for owned in ports.values() for port in owned]
    assert len(every_port) == len(set(every_port)), f"a connection shared by workers: {ports}"
    engine = sqlalchemy.create_engine(mariadb_url)
    with engine.connect() as conn:
        hosts = conn.exec_driver_sql("SELECT host FROM information_schema.processlist").scalars()
        server_ports = {int(host.rsplit(":", 1)[1]) for host in hosts if ":" in host}
    engine.dispose()
    assert set(every_port) <= server_ports
    assert gunicorn_server.stop() == 0


def mysql_client_ports(pid: int) -> set[int]:
    """Local ports of the process's own TCP sockets connected to MySQL's port, from /proc."""
    inodes = {
        target[len("socket:[") : -1] for target in open_files(pid) if target.startswith("socket:[")
    }
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == MYSQL_PORT:
            ports.add(int(local.split(":")[1], 16))
    return ports


def test_server_instances_side_by_side_never_share_a_control_socket(tmp_path):
    servers = [GunicornServer(tmp_path / f"gunicorn-{n}.log") for n in range(2)]
    try:
        for server in servers:
            server.start({"FEED_DATA_DIR": str(tmp_path / "data")}, workers=1)
        for server in servers:
            server.wait_ready(workers=1)
            assert "Control socket" not in server.log()
    finally:
        for server in servers:
            server.kill()
