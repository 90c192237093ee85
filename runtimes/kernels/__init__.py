"""Numba kernels, one family per module. Every kernel is ``@njit(cache=True)`` on NumPy arrays.

FASTMATH allows reassociation and contraction (so loops vectorise) but keeps NaN and Inf
semantics, so NaN inputs propagate as they do in onnxruntime.
"""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


class KernelInputError(ValueError):
    """Raised inside a kernel when the values of a run break the op's rules (an index fed out of
    range, an integer divisor of 0, a sequence length past the sequence): the plan turns it into
    InputError naming the node. Other exceptions from kernels are bugs and pass through unchanged."""
