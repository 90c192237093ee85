"""Argument types shared by the CLI verbs (kept apart from cli.py, which imports every verb module)."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def name_value(text: str) -> tuple[str, str]:
    """argparse type: ``NAME=VALUE`` with both parts non-empty."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


MAX_DIM = 2**32
"""The largest dynamic dimension a verb accepts: more elements than any plan's memory cap holds, and far
from int64 overflow in the size arithmetic of shapes."""


def dim(text: str) -> tuple[str, int]:
    """argparse type: ``NAME=VALUE``, the value (1 to MAX_DIM) of a dynamic input dimension."""
    name, value = name_value(text)
    try:
        n = positive_int(value)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"dimension {name!r}: {exc}") from None
    if n > MAX_DIM:
        raise argparse.ArgumentTypeError(f"dimension {name!r}: {n} is larger than {MAX_DIM}")
    return name, n
