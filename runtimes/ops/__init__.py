"""Op builders, one module per family; importing this package fills the registry."""
from . import (activation, binary, conv, elementwise, gemm, indexing, layout, lmu, norm, pool,  # noqa: F401 (registration)
               qlinear, quantize, ranking, recurrent, reduce, scan, spectral, upsample)
from . import control  # noqa: F401 (registration: Loop and If)
from .registry import BUILDERS, supported_ops

__all__ = ["BUILDERS", "supported_ops"]
