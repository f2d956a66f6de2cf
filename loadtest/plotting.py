"""matplotlib (the optional `plot` extra) for the benchmark commands' PNGs, headless."""

from __future__ import annotations

from types import ModuleType

NOT_INSTALLED = "matplotlib is not installed (pip install -e '.[plot]'): no plot drawn"


def pyplot() -> ModuleType | None:
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
