"""/health, /ready, /metrics and X-Request-ID, in process on both databases."""

import re

import pytest

from tests.support.api import create_participant
from tests.support.prometheus import sample

REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def test_health_and_ready_answer_json(client):
    health = client.simulate_get("/health")
    ready = client.simulate_get("/ready")
    assert (health.status_code, health.json) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json) == (200, {"status": "ready"})


def test_a_safe_request_id_is_echoed(client):
    result = client.simulate_get("/health", headers={"X-Request-ID": "client-42.a:b_c"})
    assert result.headers["x-request-id"] == "client-42.a:b_c"


@pytest.mark.parametrize(
    "offered", [None, "", "has space", "x" * 129, "caf\u00e9", "a\r\nSet-Cookie: x=1"]
)
def test_a_missing_or_unsafe_request_id_is_replaced(client, offered):
    headers = {} if offered is None else {"X-Request-ID": offered}
    result = client.simulate_get("/health", headers=headers)
    assert REQUEST_ID.fullmatch(result.headers["x-request-id"])


def test_errors_carry_a_request_id_too(client):
    result = client.simulate_get("/participant/999999", headers={"X-Request-ID": "trace-1"})
    assert result.status_code == 404
    assert result.headers["x-request-id"] == "trace-1"


def test_metrics_count_requests_by_route_and_status(client):
    before = client.simulate_get("/metrics").text
    ada = create_participant(client)
    client.simulate_get(ada["link"])
    client.simulate_get("/participant/999999")
    client.simulate_get("/no/such/route")
    result = client.simulate_get("/metrics")

    assert result.status_code == 200
    assert result.headers["content-type"].startswith("text/plain")
    after = result.text

    def delta(route, status, method="GET"):
        labels = {"route": route, "method": method, "status": status}
        return sample(after, "feed_http_request_duration_seconds_count", **labels) - sample(
            before, "feed_http_request_duration_seconds_count", **labels
        )

    assert delta("/participant", 200, "POST") == 1
    assert delta("/participant/{participant_id}", 200) == 1
    assert delta("/participant/{participant_id}", 404) == 1
    assert delta("unmatched", 404) == 1
    slow = {
        "route": "/participant/{participant_id}",
        "method": "GET",
        "status": "200",
        "le": "+Inf",
    }
    bucket = "feed_http_request_duration_seconds_bucket"
    assert sample(after, bucket, **slow) - sample(before, bucket, **slow) == 1
    assert "feed_db_pool_checked_out" in after
