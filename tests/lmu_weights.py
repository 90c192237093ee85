"""Random LMUFormer weights for the LMU tests (imported as ``from lmu_weights import random_weights``)."""
from __future__ import annotations

import numpy as np

from edgekit.converters.lmu import LMUFormerConfig, weight_shapes


def random_weights(c: LMUFormerConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """float32 weights of the right shapes; spiking models get a larger gain and positive biases in
    front of each LIF, so every LIF layer fires often (and not always)."""
    gain, drive = (3.0, 1.0) if c.spiking else (1.0, 0.0)
    out = {}
    for name, shape in weight_shapes(c).items():
        if name.endswith(("running_var", "bn.weight", "bn1.weight", "bn2.weight")):
            v = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("bn.bias", "bn1.bias", "bn2.bias", "lmu.h.bias")):  # biases in front of an act
            v = rng.normal(drive, 0.5, shape)
        elif name.endswith(("bias", "running_mean")):
            v = rng.normal(0.0, 0.3, shape)
        else:
            v = gain * rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        out[name] = v.astype(np.float32)
    return out
