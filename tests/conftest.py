"""Shared pytest wiring: each backing service's fixtures live in tests/support/<service>.py."""

pytest_plugins: list[str] = [
    "tests.support.api",
    "tests.support.processes",
    "tests.support.mysql",
    "tests.support.elastic",
    "tests.support.kafka",
    "tests.support.systemd",
    "tests.support.tmpfs",
    "tests.support.wheelhouse",
]
