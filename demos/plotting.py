"""Figures for the demos: matplotlib on its file-only backend, saved and closed in one place."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def figure(path: str, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """Yield ``plt.subplots(*args, **kwargs)`` (figure, axes); on exit save it to ``path`` (100 dpi)
    and close it, so a demo run on a machine without a display leaves no figure open."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
