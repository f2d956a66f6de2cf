"""Perf records: the exact pipe format, and which request produces which entity/operation."""

import calendar
from datetime import datetime
from pathlib import Path

import falcon.testing
import pytest

from feedsvc.adapters.kafka.perf_channel import ROUTES
from feedsvc.adapters.kafka.perf_records import PerfRecord, parse_perf_line, perf_line
from feedsvc.api.request_timing import RequestTiming
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config

# 2026-03-04 05:06:59.900 UTC
STARTED = calendar.timegm((2026, 3, 4, 5, 6, 59)) + 0.9


def test_line_is_the_pipe_format_in_utc_with_whole_milliseconds() -> None:
    assert perf_line(STARTED, "outbound", "post", 0.0123456) == b"2026|03|04|05|06|outbound|post|12"


def test_durations_round_to_the_nearest_millisecond() -> None:
    assert perf_line(STARTED, "friends", "get", 0.0004).endswith(b"|0")
    assert perf_line(STARTED, "friends", "get", 0.0015).endswith(b"|2")
    assert perf_line(STARTED, "friends", "get", 2.5).endswith(b"|2500")


def test_a_line_parses_back_to_its_minute() -> None:
    line = perf_line(STARTED, "inbound", "get", 0.007)
    assert parse_perf_line(line) == PerfRecord(datetime(2026, 3, 4, 5, 6), "inbound", "get", 7)


@pytest.mark.parametrize(
    "line",
    [
        b"2026|03|04|05|06|inbound|get",
        b"2026|03|04|05|06|inbound|get|7|extra",
        b"2026|03|04|05|06|people|get|7",
        b"2026|03|04|05|06|inbound|delete|7",
        b"2026|03|04|05|xx|inbound|get|7",
        b"2026|03|04|05|06|inbound|get|-7",
        b"2026|13|04|05|06|inbound|get|7",
        b"\xff",
    ],
)
def test_anything_else_is_rejected(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_perf_line(line)


class Recorded:
    """Test double for the perf channel: keeps what the middleware submits."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, float, float]] = []

    def submit(self, started: float, route: int, duration: float) -> None:
        self.records.append((*ROUTES[route], started, duration))


@pytest.fixture
def timed(tmp_path: Path) -> tuple[falcon.testing.TestClient, Recorded]:
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path)})
    init_db(config)
    recorded = Recorded()
    service = build_service(config, middleware=[RequestTiming(recorded)], start_relay=False)
    yield falcon.testing.TestClient(service.app), recorded
    service.close()


def test_every_api_request_yields_its_entity_and_operation(timed) -> None:
    client, recorded = timed
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json["link"]
    bob = client.simulate_post("/participant", json={"name": "Bob"}).json["link"]
    client.simulate_get(ada)
    client.simulate_post(f"{ada}/friends", json={"to": bob})
    client.simulate_get(f"{ada}/friends")
    client.simulate_post(f"{ada}/outbound", json={"subject": "s", "story": "hello"})
    client.simulate_get(f"{ada}/outbound")
    client.simulate_get(f"{bob}/inbound")
    client.simulate_get("/outbound", params={"keywords": "hello"})

    assert [(entity, operation) for entity, operation, *_ in recorded.records] == [
        ("participant", "post"),
        ("participant", "post"),
        ("participant", "get"),
        ("friends", "post"),
        ("friends", "get"),
        ("outbound", "post"),
        ("outbound", "get"),
        ("inbound", "get"),
        ("outbound", "search"),
    ]
    assert all(duration >= 0 for *_, duration in recorded.records)


def test_failed_api_requests_are_timed_too(timed) -> None:
    client, recorded = timed
    assert client.simulate_get("/participant/999").status_code == 404
    assert client.simulate_post("/participant", json={"name": ""}).status_code == 400
    assert [(e, o) for e, o, *_ in recorded.records] == [
        ("participant", "get"),
        ("participant", "post"),
    ]


def test_requests_outside_the_api_yield_nothing(timed) -> None:
    client, recorded = timed
    assert client.simulate_get("/openapi.json").status_code == 200
    assert client.simulate_get("/nowhere").status_code == 404
    assert client.simulate_delete("/participant/1").status_code == 405
    assert recorded.records == []
