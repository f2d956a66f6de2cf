"""A real gunicorn with several workers: each worker publishes its own perf records and events."""

import time
from collections import Counter
from pathlib import Path

import orjson

from loadtest.harness.gunicorn import GunicornServer
from tests.support.kafka import TansuBroker

WORKERS = 2
BATCH = 40
DEADLINE_SECONDS = 90.0


def test_every_worker_publishes_perf_records_and_posts_become_events(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    perf_topic = running_kafka.create_topic("perf")
    events_topic = running_kafka.create_topic("events")
    gunicorn_server.start(
        {
            "FEED_DATA_DIR": str(tmp_path / "data"),
            "FEED_KAFKA_BOOTSTRAP": running_kafka.bootstrap,
            "FEED_KAFKA_PERF_TOPIC": perf_topic,
            "FEED_KAFKA_EVENTS_TOPIC": events_topic,
        },
        workers=WORKERS,
    )
    gunicorn_server.wait_ready(workers=WORKERS)
    workers = {str(pid).encode() for pid in gunicorn_server.worker_pids()}
    sender = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json["link"]
    requests = 1

    # New connections spread over the workers by the kernel; keep asking until every worker
    # has been seen (the records' `pid` header; the record value keeps its fixed format).
    posts = 0
    give_up = time.monotonic() + DEADLINE_SECONDS
    while True:
        for n in range(BATCH):
            if n % 4 == 0:
                body = {"subject": f"post {posts}", "story": "hello"}
                response = gunicorn_server.request("POST", f"{sender}/outbound", body)
                posts += 1
            else:
                response = gunicorn_server.request("GET", sender)
            assert response.status == 200, response.body
        requests += BATCH
        records = running_kafka.read_topic(perf_topic, at_least=requests)
        pids = Counter(dict(record.headers)["pid"] for record in records)
        if set(pids) == workers or time.monotonic() > give_up:
            break

    assert set(pids) == workers, f"records by pid {pids}, workers {workers}"
    # One record per API request (the readiness probe reads /ready: not an API request).
    assert len(records) == requests
    post_records = [r for r in records if r.value.split(b"|")[5:7] == [b"outbound", b"post"]]
    assert len(post_records) == posts

    events = running_kafka.read_topic(events_topic, at_least=posts)
    subjects = {orjson.loads(record.value)["subject"] for record in events}
    assert subjects == {f"post {n}" for n in range(posts)}
    # Workers stop their relay and publisher on exit without holding up the shutdown.
    assert gunicorn_server.stop() == 0


def test_workers_boot_and_serve_while_the_broker_is_down(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, tmp_path: Path
) -> None:
    events_topic = running_kafka.create_topic("events")
    running_kafka.stop()
    try:
        gunicorn_server.start(
            {
                "FEED_DATA_DIR": str(tmp_path / "data"),
                "FEED_KAFKA_BOOTSTRAP": running_kafka.bootstrap,
                "FEED_KAFKA_EVENTS_TOPIC": events_topic,
            },
            workers=WORKERS,
        )
        gunicorn_server.wait_ready(workers=WORKERS)
        sender = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json["link"]
        for n in range(BATCH):
            body = {"subject": f"post {n}", "story": "written while Kafka is down"}
            response = gunicorn_server.request("POST", f"{sender}/outbound", body)
            assert response.status == 200, response.body
            assert gunicorn_server.request("GET", f"{sender}/outbound?limit=1").status == 200
    finally:
        running_kafka.start()

    events = running_kafka.read_topic(events_topic, at_least=BATCH, deadline=DEADLINE_SECONDS)
    subjects = {orjson.loads(record.value)["subject"] for record in events}
    assert subjects == {f"post {n}" for n in range(BATCH)}
    assert gunicorn_server.stop() == 0
