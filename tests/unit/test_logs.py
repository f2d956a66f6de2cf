"""JSON log records and the access log settings, in process."""

import logging
import sys

import orjson
import pytest

from feedsvc.core.config import Config, ConfigError
from feedsvc.core.logs import REQUEST_ID, JsonFormatter


def formatted(message: str, *, with_traceback: bool = False) -> dict[str, object]:
    exc_info = None
    if with_traceback:
        try:
            raise ValueError("broken\nacross lines")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("feedsvc.test", logging.ERROR, __file__, 1, message, (), exc_info)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return orjson.loads(line)


def test_a_record_is_one_json_line_with_the_current_request_id() -> None:
    token = REQUEST_ID.set("trace-7")
    try:
        inside = formatted('says "hi"\nthen more')
    finally:
        REQUEST_ID.reset(token)
    outside = formatted("later")

    assert inside["message"] == 'says "hi"\nthen more'
    assert (inside["level"], inside["logger"], inside["request_id"]) == (
        "error",
        "feedsvc.test",
        "trace-7",
    )
    assert isinstance(inside["pid"], int)
    assert str(inside["time"]).endswith("+00:00")
    assert outside["request_id"] is None


def test_a_traceback_is_one_field() -> None:
    line = formatted("failed", with_traceback=True)
    assert line["message"] == "failed"
    assert str(line["traceback"]).startswith("Traceback (most recent call last):")
    assert str(line["traceback"]).endswith("ValueError: broken\nacross lines")


def test_access_log_defaults_to_every_request() -> None:
    config = Config.from_env({})
    assert (config.access_log, config.slow_request_ms) == ("all", 1000)


@pytest.mark.parametrize(
    ("name", "value"),
    [("FEED_ACCESS_LOG", "some"), ("FEED_SLOW_REQUEST_MS", "0"), ("FEED_SLOW_REQUEST_MS", "fast")],
)
def test_bad_access_log_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})
