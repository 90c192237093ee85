"""Op builders, one module per family; importing this package fills the registry."""
from . import (activation, binary, conv, elementwise, gemm, layout, lmu, norm, pool, ranking,  # noqa: F401  (registration)
               recurrent, reduce, scan, upsample)
from .registry import BUILDERS, supported_ops

__all__ = ["BUILDERS", "supported_ops"]
