"""Arrays a caller hands in, taken as plain ndarrays by the runtime and the converters alike."""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a plain ndarray (an ``np.matrix`` or ``np.memmap`` seen as one). A masked array with
    masked entries is refused: the values under its mask are not data, and kernels would read them."""
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        raise InputError(f"{what} is a masked array with masked entries: fill them first (.filled(value))")
    return np.asarray(value)
