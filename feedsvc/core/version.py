"""The release: setup.cfg's version, read from the installed package's metadata, never repeated."""

from importlib.metadata import version


def release() -> str:
    """Read at each call: the gunicorn master keeps its modules across an upgrade's HUP."""
    return version("feedsvc")
