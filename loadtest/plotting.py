"""matplotlib (the optional `plot` extra) for the benchmark commands' PNGs, headless."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

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


def save_figure(plt: ModuleType, figure: Any, path: Path, title: str) -> str:
    """Title, lay out, write and close a benchmark's figure; returns the line that names it."""
    figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"plot: {path}"
