"""Figures for the demos: matplotlib on its file-only backend, saved and closed in one place."""
from __future__ import annotations

import argparse
import os
from contextlib import contextmanager
from typing import Any, Iterator


def add_plot_options(parser: argparse.ArgumentParser, default: str) -> None:
    """A demo's --out (the plot's path) and --no-plot (print only)."""
    parser.add_argument("--out", default=default, help=f"where to write the plot (default ./{default})")
    parser.add_argument("--no-plot", action="store_true", help="print only, write no plot")


def check_plot_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse --out before the run, and only when a plot will be written."""
    if not args.no_plot:
        try:
            output_path(args.out)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument --out: {exc}")


def output_path(path: str) -> str:
    """An argparse type for a demo's --out: refused at once when its directory does not exist,
    rather than after the whole run."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"no such directory: {folder}")
    return path


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
