"""Op builders, one module per family; importing this package fills the registry."""
from . import activation, binary, conv, elementwise, gemm, layout, lmu, norm, pool, reduce, scan  # noqa: F401  (registration)
from .registry import BUILDERS, supported_ops

__all__ = ["BUILDERS", "supported_ops"]
