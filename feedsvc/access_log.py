"""gunicorn's logger with access-log values escaped for JSON, so every line parses."""

from typing import Any

import orjson
from gunicorn.glogging import Logger, SafeAtoms


class JsonAtoms(SafeAtoms):
    """Atoms as the inside of a JSON string: quotes, backslashes and control characters escaped."""

    def __init__(self, atoms: dict[str, Any]) -> None:
        dict.__init__(self, {key: _json_text(value) for key, value in atoms.items()})


def _json_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return orjson.dumps(value)[1:-1].decode()


class JsonAccessLogger(Logger):
    """The stock gunicorn logger; only the escaping of access-log values differs."""

    atoms_wrapper_class = JsonAtoms
