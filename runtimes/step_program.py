"""Run a plan's bound steps with one compiled call instead of one call per step.

Every array the steps touch (buffers, constants, views) is moved into one byte arena, keeping its
place relative to the arrays it shares memory with and its alignment; each run of consecutive steps
whose kernel ``kernels.program`` knows becomes one program run by ``run_program``, and any other
step is called as before on arena views. Worth it where dispatch is a large share of a step: a
streaming hop whose layers compute a few columns each.
"""
from __future__ import annotations

import bisect
import functools
from typing import Any, Callable

import numpy as np
from numba import types
from numpy.lib.array_utils import byte_bounds

from .kernels import conv as kc
from .kernels import gemm as kg
from .kernels import layout as kl
from .kernels import pool as kp
from .kernels import program as kprog
from .kernels import reduce as kr
from .kernels.shift import WINDOW_POOL_INTO, shift_history
from .ops.registry import ALIGN, aligned_bytes

F32, I64 = np.dtype(np.float32), np.dtype(np.int64)
KIND = {"f": (F32, None), "f3": (F32, 3), "i": (I64, None), "i2": (I64, 2)}
KERNELS: dict[Any, tuple[int, tuple[str, ...], str | None]] = {
    kl.copy_blocks: (kprog.COPY_BLOCKS, ("f", "i2"), "f"),
    shift_history: (kprog.SHIFT_HISTORY, ("f3", "n", "n"), None),
    kp.WINDOW_POOL[kp.MAX]: (kprog.WINDOW_MAX, ("f3", "f3", "n", "n"), None),
    kp.WINDOW_POOL[kp.AVG]: (kprog.WINDOW_AVG, ("f3", "f3", "n", "n"), None),
    WINDOW_POOL_INTO[kp.MAX]: (kprog.WINDOW_MAX_INTO, ("f3", "f3", "f3", "n", "n", "n"), None),
    WINDOW_POOL_INTO[kp.AVG]: (kprog.WINDOW_AVG_INTO, ("f3", "f3", "f3", "n", "n", "n"), None),
    kr.REDUCE[kr.MEAN, kr.ROWS]: (kprog.MEAN_ROWS, ("f", "f", "n", "n", "n", "i", "i"), None),
    kg.gemm_kernel: (kprog.GEMM, ("f", "f", "f", "f", "f", "i", "f"), None),
    kg.gemm_dot_kernel: (kprog.GEMM_DOT, ("f", "f", "f", "f", "i", "f"), None),
}
"""Kernels the program interpreter calls: opcode, kinds of the leading arguments ("f"/"i": a
C-contiguous float32/int64 array of any rank, which the kernel only reads flat; "f3"/"i2": of that
rank; "n": an int) and the kind of any further arguments."""
CONV_ROWS = (kprog.CONV_ROWS, ("f3", "f3", "f", "f3", "f", "i", "f"), None)
"""The same for a single-row convolution's kernel (``kernels.conv.rows_flags`` names them)."""

Step = tuple[Callable[..., Any], tuple]


class StepProgram:
    """The steps of a plan over one arena: ``run()`` executes them, ``view(a)`` is the arena's copy of
    any array the steps or ``also`` reference (read and write through it from then on)."""

    def __init__(self, steps: list[Step], also: list[np.ndarray] = ()) -> None:
        arrays = [a for _, args in steps for a in _arrays(args)] + list(also)
        self._regions, size = _regions(arrays)
        self._starts = [r[0] for r in self._regions]  # for bisect in ``view``
        size += (-size) % 8
        self.arena = aligned_bytes(size)
        self.arena.fill(0)
        for a in arrays:
            self.view(a)[...] = a
        parts: list[Any] = []
        self._conv_flags: list[tuple[bool, ...]] = []  # of the convolutions in programs
        for fn, args in steps:
            row = self._encode(fn, args)
            if row is None:
                parts.append((fn, tuple(_remap(args, self.view))))
            elif parts and isinstance(parts[-1], list):
                parts[-1].append(row)
            else:
                parts.append([row])
        f32 = self.arena.view(np.float32)
        rows = np.array([row for p in parts if isinstance(p, list) for row in p], np.int64).reshape(-1, kprog.ROW)
        conv = kc.rows_mask(tuple(map(any, zip(*self._conv_flags)))) if self._conv_flags else 0
        run_program = _sealed(kprog.interpreter(rows, self.arena.view(np.int64), conv))
        self._parts = [(run_program, (np.array(p, np.int64), f32, NO_ROWS, NO_ROWS)) if isinstance(p, list) else p
                       for p in parts]
        self._run_program = run_program
        self.programs = sum(isinstance(p, list) for p in parts)
        self.calls = len(self._parts)
        if len(self._parts) == 1:
            fn, args = self._parts[0]
            self.run: Callable[[], None] = functools.partial(fn, *args)
        else:
            self.run = self._run_parts

    def _run_parts(self) -> None:
        for fn, args in self._parts:
            fn(*args)

    def feeder(self, dst: np.ndarray, result: np.ndarray | None = None
               ) -> Callable[[np.ndarray, np.ndarray], int] | None:
        """``feed(chunk, out)``: when ``chunk`` is float32 (N*C, W) rows in C order for ``dst`` (an
        array ``view`` gives: (N, C, W), unit last stride) and every value is finite, write it into
        ``dst``, run the steps, copy ``result`` (a C-contiguous 2-D float32 array ``view`` gives) into
        ``out`` unless ``out`` is empty (else float32, C order, result's shape), and return
        ``kernels.program.RAN``; else return NOT_FINITE or NOT_A_HOP with nothing written or run.
        TypeError, with nothing written or run, for arrays whose Numba types are not the call's (see
        ``_sealed``): read-only, not native float32, not 2-D C-contiguous, possibly not aligned. A
        FEED row at the head of the first program does it, so a single program stays one compiled
        call. None when no step is in a program, or ``dst`` or ``result`` is not of that form;
        without ``result``, ``out`` must be empty."""
        if not self.programs or dst.dtype != F32 or dst.ndim != 3 or dst.strides[2] != 4:
            return None
        start, end, base = (v - self.arena.ctypes.data for v in (*byte_bounds(dst), dst.ctypes.data))
        if not 0 <= start <= end <= self.arena.size or any(v % 4 for v in (base, *dst.strides)):
            return None
        if result is not None and not self.hands_over(result):
            return None
        at, (rows, cols) = ((-4, (0, 0)) if result is None
                            else (result.ctypes.data - self.arena.ctypes.data, result.shape))
        ints = [s // 4 for s in dst.strides[:2]] + [at // 4, rows, cols]
        row = [kprog.FEED, 6, base // 4, dst.size, *dst.shape] + [v for i in ints for v in (i, 0, 0, 0, 0)]
        fed = np.array([row + [0] * (kprog.ROW - len(row))], np.int64)
        fn, args = self._parts[0]
        rest = self._parts
        if fn is self._run_program:
            fed, rest = np.concatenate([fed, args[0]]), self._parts[1:]
        first = functools.partial(self._run_program, fed, self.arena.view(np.float32))
        if not rest:
            return first

        def feed(chunk: np.ndarray, out: np.ndarray) -> int:
            if out.size and (out.dtype != F32 or not out.flags.writeable or result is None or out.shape != result.shape):
                raise TypeError("out is not a writeable float32 array of the result's shape")  # (nothing has run)
            ran = first(chunk, NO_ROWS)  # (a TypeError here is the call refusing the chunk: nothing has run)
            if ran != kprog.RAN:
                return ran
            try:
                for fn, args in rest:
                    fn(*args)
            except TypeError as exc:  # not a refusal: the hop has run, the caller must not push it again
                raise RuntimeError(f"a step after the fed program failed: {exc}") from exc
            if out.size:
                out[...] = result
            return kprog.RAN

        return feed

    def hands_over(self, result: np.ndarray) -> bool:
        """Whether ``feeder``'s call can copy ``result`` out: a C-contiguous 2-D float32 array
        within the arena, on a 4-byte boundary."""
        at = result.ctypes.data - self.arena.ctypes.data
        return (result.dtype == F32 and result.ndim == 2 and result.flags.c_contiguous and at % 4 == 0
                and 0 <= at <= at + result.nbytes <= self.arena.size)

    def view(self, a: np.ndarray) -> np.ndarray:
        """The arena's array at the place of ``a`` (same shape, dtype and strides)."""
        if a.size == 0:
            return np.ndarray(a.shape, a.dtype, buffer=self.arena, offset=0)
        p = a.__array_interface__["data"][0]
        lo, hi = byte_bounds(a)
        start, end, new = self._regions[bisect.bisect_right(self._starts, lo) - 1]
        if not start <= lo <= hi <= end:
            raise ValueError("the array is not one the steps or ``also`` referenced")
        return np.ndarray(a.shape, a.dtype, buffer=self.arena, offset=new + p - start, strides=a.strides)

    def _encode(self, fn: Any, args: tuple) -> list[int] | None:
        """The program row of a step, or None when the interpreter does not know its kernel or arguments."""
        flags = kc.rows_flags(fn)
        known = CONV_ROWS if flags is not None else KERNELS.get(fn)
        if known is None:
            return None
        op, kinds, rest = known
        if len(args) < len(kinds) or (len(args) > len(kinds) and rest is None) or len(args) > kprog.MAX_ARGS:
            return None
        row = [op, len(args)]
        for j, a in enumerate(args):
            kind = kinds[j] if j < len(kinds) else rest
            if kind == "n":
                if type(a) is not int:
                    return None
                slots = [a]
            else:
                dtype, ndim = KIND[kind]
                if (not isinstance(a, np.ndarray) or a.dtype != dtype or ndim not in (None, a.ndim)
                        or not a.flags.c_contiguous):
                    return None
                offset = self.view(a).__array_interface__["data"][0] - self.arena.ctypes.data
                if offset % a.itemsize:
                    return None
                slots = [offset // a.itemsize, a.size, *(a.shape if ndim else ())]
            row += slots + [0] * (kprog.ARG_SLOTS - len(slots))
        if flags is not None:
            self._conv_flags.append(flags)
        return row + [0] * (kprog.ROW - len(row))


PROGRAM_TYPES = (types.int64[:, ::1], types.float32[::1], types.float32[:, ::1], types.float32[:, ::1])
"""The interpreter's one signature: program rows, the arena as float32, a pushed chunk as rows, the
array the result is copied into."""
NO_ROWS = np.zeros((0, 0), np.float32)
"""No chunk, no result wanted."""


def _sealed(run_program: Any) -> Any:
    """The interpreter compiled for ``PROGRAM_TYPES`` and for nothing else: called with any other
    types (a read-only, float64 or big-endian chunk) it raises TypeError instead of compiling again
    for seconds, so ``feed`` takes any array and the caller falls back on that error."""
    if run_program not in _SEALED:
        run_program.compile(PROGRAM_TYPES)
        run_program.disable_compile()
        _SEALED.add(run_program)
    return run_program


_SEALED: set[Any] = set()


def _arrays(args: Any):
    """Every array among ``args``, nested tuples included."""
    for a in args:
        if isinstance(a, np.ndarray):
            yield a
        elif isinstance(a, tuple):
            yield from _arrays(a)


def _remap(args: tuple, view: Callable[[np.ndarray], np.ndarray]) -> list:
    """``args`` with every array (nested tuples included) replaced by ``view(array)``."""
    return [view(a) if isinstance(a, np.ndarray) else tuple(_remap(a, view)) if isinstance(a, tuple) else a
            for a in args]


def _regions(arrays: list[np.ndarray]) -> tuple[list[tuple[int, int, int]], int]:
    """Disjoint memory ranges (start, end, arena offset) covering ``arrays``, each placed at an arena
    offset congruent to its start modulo ALIGN (so every array keeps its alignment); and the arena size."""
    spans = sorted(byte_bounds(a) for a in arrays if a.size)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    regions, size = [], 0
    for lo, hi in merged:
        size += (lo - size) % ALIGN
        regions.append((lo, hi, size))
        size += hi - lo
    return regions, size
