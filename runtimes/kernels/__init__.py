"""Numba kernels, one family per module. Every kernel is ``@njit(cache=True)`` on NumPy arrays.

FASTMATH allows reassociation and contraction (so loops vectorise) but keeps NaN and Inf
semantics, so NaN inputs propagate as they do in onnxruntime.
"""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
