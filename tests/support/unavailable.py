"""The one rule for a backing service a test needs but cannot have: under CI=true the test fails
(CI must have it), elsewhere it skips and says why."""

import os
from typing import NoReturn

import pytest


def unavailable(service: str, reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{service} required in CI: {reason}", pytrace=False)
    pytest.skip(f"{service} not available: {reason}")
