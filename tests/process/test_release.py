"""One version, from the package metadata: the CLI, the OpenAPI document, /metrics and the log."""

import subprocess
from importlib.metadata import version

import orjson

from loadtest.harness.gunicorn import FEEDSVC, REPO_ROOT, GunicornServer
from tests.support.prometheus import sample

SETUP_CFG = REPO_ROOT / "setup.cfg"


def declared_version() -> str:
    """setup.cfg's version line: the one place a release is named."""
    lines = SETUP_CFG.read_text().splitlines()
    return next(line.split("=", 1)[1].strip() for line in lines if line.startswith("version ="))


def test_the_installed_metadata_is_setup_cfgs_version() -> None:
    assert version("feedsvc") == declared_version()


def test_cli_prints_the_version() -> None:
    result = subprocess.run(
        [str(FEEDSVC), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == f"feedsvc {declared_version()}"


def test_openapi_info_version_is_the_release(client) -> None:
    assert client.simulate_get("/openapi.json").json["info"]["version"] == declared_version()


def test_metrics_and_start_up_line_name_the_release(gunicorn_server: GunicornServer) -> None:
    gunicorn_server.start({}, workers=2)
    gunicorn_server.wait_ready(workers=2)
    metrics = gunicorn_server.request("GET", "/metrics").body.decode()
    assert gunicorn_server.stop() == 0

    release = declared_version()
    assert sample(metrics, "feed_build_info", version=release) == 1.0
    # Both workers set it; livemax reports one series, not one per worker.
    assert [line for line in metrics.splitlines() if line.startswith("feed_build_info{")] == [
        f'feed_build_info{{version="{release}"}} 1.0'
    ]
    lines = gunicorn_server.log().splitlines()
    messages = [orjson.loads(line).get("message", "") for line in lines]
    assert any(message.startswith(f"feedsvc {release} starting") for message in messages)
