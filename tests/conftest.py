"""Suite-wide hooks: the order in which pytest-xdist hands out test files.

The README's command runs ``pytest -n auto --dist loadfile``: each file goes whole to one worker, and
the workers share Numba's on-disk cache, so a kernel one worker compiled loads from the cache in the
other. On a cold cache most of the suite's time is compilation, and two workers that need the same
kernels at the same time both compile them. onnx's backend node tests (``test_backend.py``) reach every
op family's kernels; the files listed in ``FIRST`` run first, so that while one worker runs the backend
tests the other compiles kernels the backend tests do not use (convolution paths, streaming programs,
the fused residual blocks, the exported models, the portable build in its own cache), and the per-op
files that follow find most of their kernels cached. The longest files also go first, so no long file
starts last while the other worker idles. xdist otherwise orders files by their number of tests.
"""
from __future__ import annotations

import pytest

FIRST = (
    "tests/test_backend.py",
    "tests/test_portable_build.py",
    "tests/runtimes/test_conv.py",
    "tests/runtimes/test_stream_session.py",
    "tests/runtimes/test_step_program.py",
    "tests/runtimes/test_residual_fusion.py",
    "tests/test_exported_models.py",
    "tests/converters/test_partition.py",
    "tests/converters/test_lmu.py",
)
"""Files in the order they start; the others follow in collection order."""


def pytest_configure(config: pytest.Config) -> None:
    """Keep the collection order below for xdist's file scheduling (its default sorts by test count)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of the ``FIRST`` files to the front, in that order (a stable sort)."""
    rank = {path: i for i, path in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(FIRST)))
