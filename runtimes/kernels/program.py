"""One compiled call that runs a sequence of kernel steps: an interpreter over a program of rows.

A plan calls one Numba kernel per step, and each call costs about half a microsecond of dispatch
(type checks of every argument) on top of the kernel: for a streaming step whose layers compute a
few columns each, dispatch is a third of the time. Here every array the steps touch lives in one
byte ``arena`` and each step is one int64 row of ``program``:

    [opcode, argument count, then ARG_SLOTS slots per argument: element offset in the arena (or
     the value of an int argument), element count, then up to three dimensions]

A FEED row (first, when present) copies the third argument of ``run_program``, a hop of pushed
samples as (N*C, W) rows, into its (N, C, W) destination in the arena after checking that every
value is finite. The call returns RAN, or before any row has run NOT_FINITE for a chunk with a NaN
or Inf and NOT_A_HOP for a chunk of another shape (so a caller needs no check of its own). When the
fourth argument, ``out``, is not empty, the call ends by copying the step's result (at the element
offset the FEED row names) into it. So pushing the samples, checking them, running the hop and
handing its result over take one call. An ``out`` of another shape than the row's raises TypeError
before anything is written, as arrays of another Numba type do.

``interpreter(rows, ...)`` gives the ``run_program`` for programs of those rows, with branches only
for their opcodes, the kernels out of line that some row needs, and the convolutions' tile families
(Numba prunes the rest before typing: a streaming step compiles only what it runs); it passes each array
argument as a flat view of the arena (these kernels flatten their arrays anyway; the pools and the
history shift, which read shapes, get 3-D views) that holds no reference, and it is compiled without
reference counting (as the kernels of its own families), so a whole sequence costs one dispatch
and a few nanoseconds per argument. The small steps' bodies (the history shift's flat move, the
pair sums of pools into shift buffers, the one-row and the dot-product Gemm) are inlined rather
than called: a call passes each array as 7 (11 when 3-D) words, 3-7 ns a step (the mean of rows is
called: it ran 1.5x slower inlined). The opcodes name the kernels it knows (``KERNELS`` in
``runtimes.step_program`` pairs them with their argument kinds); a step of any other kernel is run
by the caller between programs.

Numba's cache of an interpreter checks only this file's timestamp, not those of the kernels it
calls: after editing one of them in a checkout, delete ``__pycache__/program.*`` (a fresh install
compiles everything anew).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from . import FASTMATH
from .conv import rows_call
from .gemm import dot_rows, gemm_kernel, one_row, takes_one_row
from .simd import flat, vcopy
from .layout import copy_block
from .pool import AVG, MAX, WINDOW_POOL
from .reduce import mean_rows
from .shift import WINDOW_POOL_INTO, finite, moves_flat, pair_sums_into, shift_history, takes_pair_sums

(COPY_BLOCKS, SHIFT_HISTORY, CONV_ROWS, WINDOW_MAX, WINDOW_AVG, WINDOW_MAX_INTO, WINDOW_AVG_INTO, MEAN_ROWS, GEMM,
 GEMM_DOT, FEED) = range(11)
"""Opcodes: Concat/Slice-style block copies (destination, block table, sources), a shift buffer's
history moved to its first columns, the single-row convolution, the 1-D full-window max and average
pools, the same writing into a shift buffer's last columns, mean over rows (GlobalAveragePool),
Gemm, the dot-product Gemm, and the checked copy of pushed samples (destination (N, C, W) with
row strides: offset, size, N, C, W, then the element strides of N and C, and the element offset,
rows and columns of the result to copy into ``out`` as int arguments)."""
RAN, NOT_FINITE, NOT_A_HOP = 1, 0, -1
"""What ``run_program`` returns: the rows ran; or nothing ran because the FEED row's chunk holds a value
that is not finite, or is not of the row's (N*C, W) shape."""
HEAD = 2
ARG_SLOTS = 5
MAX_ARGS = 10
ROW = HEAD + ARG_SLOTS * MAX_ARGS

_max_pool, _avg_pool = WINDOW_POOL[MAX], WINDOW_POOL[AVG]  # module globals: Numba resolves them
_window_max_into, _window_avg_into = WINDOW_POOL_INTO[MAX], WINDOW_POOL_INTO[AVG]

# The interpreter is compiled without reference counting (``_nrt=False``, see kernels.gemm), and a
# kernel it calls inherits that unless it sets its own: the kernels of other families are called
# through these wrappers, which set it, so those kernels (which may allocate) compile as usual.


@njit(cache=True, fastmath=FASTMATH, _nrt=True)
def _copy_block(dst, src, row):
    """copy_block with reference counting (it may allocate)."""
    copy_block(dst, src, row)


@njit(cache=True, fastmath=FASTMATH, _nrt=True)
def _window_max(x, out, k, stride):
    """The max WINDOW_POOL with reference counting."""
    _max_pool(x, out, k, stride)


@njit(cache=True, fastmath=FASTMATH, _nrt=True)
def _window_avg(x, out, k, stride):
    """The average WINDOW_POOL with reference counting."""
    _avg_pool(x, out, k, stride)


@intrinsic
def _borrowed(typingctx, arena, start, shape):
    """The C-contiguous array of ``shape`` (a tuple of ints) at element ``start`` of the 1-D ``arena``,
    holding no reference to it: making and dropping a view of an array otherwise costs two atomic
    reference-count updates (about 20 ns), and a step passes several views per call. Only for
    arrays that live no longer than ``arena`` (here: one step of one call)."""
    if not isinstance(shape, types.UniTuple):
        return None
    rety = types.Array(arena.dtype, shape.count, "C")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        out = make_array(rety)(context, builder)
        dims = cgutils.unpack_tuple(builder, args[2], shape.count)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(rety.dtype)))
        strides = [itemsize]
        for d in dims[:0:-1]:
            strides.insert(0, builder.mul(strides[0], d))
        populate_array(out, data=builder.gep(src.data, [args[1]]), shape=dims, strides=strides, itemsize=itemsize,
                       meminfo=None)
        return out._getvalue()

    return rety(arena, start, shape), codegen


@intrinsic
def _words(typingctx, f32):
    """The 1-D float32 ``f32`` seen as int64 elements (the arena's second view), holding no reference."""
    rety = types.Array(types.int64, 1, "C")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        out = make_array(rety)(context, builder)
        itemsize = context.get_constant(types.intp, 8)
        data = builder.bitcast(src.data, context.get_data_type(types.int64).as_pointer())
        count = builder.sdiv(builder.extract_value(src.shape, 0), context.get_constant(types.intp, 2))
        populate_array(out, data=data, shape=[count], strides=[itemsize], itemsize=itemsize, meminfo=None)
        return out._getvalue()

    return rety(f32), codegen


@njit(inline="always")
def _flat(arena, r, j):
    """Argument j as a flat slice of ``arena`` (float32 or int64 elements)."""
    s = HEAD + ARG_SLOTS * j
    return _borrowed(arena, r[s], (r[s + 1],))


@njit(inline="always")
def _f3(f32, r, j):
    """Argument j as a 3-D float32 array (for kernels that read its shape)."""
    s = HEAD + ARG_SLOTS * j
    return _borrowed(f32, r[s], (r[s + 2], r[s + 3], r[s + 4]))


@njit(inline="always")
def _int(r, j):
    """Argument j, an int, as stored in its row."""
    return r[HEAD + ARG_SLOTS * j]


OUT_OF_LINE = (SHIFT_HISTORY, WINDOW_AVG_INTO, GEMM)
"""Opcodes whose usual rows run inlined code and the others a kernel out of line: a history moved
row by row, an average pool into a shift buffer that does not take pair sums, a Gemm that is not one
short row. ``interpreter`` compiles that kernel only for programs that have such a row."""


def _interpreter(used: tuple[bool, ...], general: tuple[bool, ...], conv: int):
    """run_program with branches only for the opcodes ``used`` names (a flag per opcode), the
    out-of-line kernels only where ``general`` (a flag per OUT_OF_LINE opcode) asks for them, and the
    convolutions on the rows kernel of the flags ``conv`` (``kernels.conv.rows_mask``) holds. Numba
    prunes the other branches before typing, so a program compiles only the kernels it uses (a
    closure over bools and ints keeps the cache key stable: one cache entry per such set)."""
    copies, shifts, convs, maxes, avgs, maxes_into, avgs_into, means, gemms, dots, _ = used
    shift_rows, avg_rows, gemm_rows = general

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def run_program(program, f32, chunk, out):
        """Run every row of ``program`` (see the module docstring) on slices of the arena, seen as
        float32 (``f32``) and as int64 elements; ``chunk`` (float32 rows) is read by a FEED row only,
        which also names the result copied into ``out`` (float32, C order) when that is not empty.
        RAN, or NOT_FINITE / NOT_A_HOP when a FEED row refused the chunk (then nothing has run)."""
        i64 = _words(f32)
        result = -1
        for i in range(program.shape[0]):
            r = program[i]
            op = r[0]
            if op == FEED:
                x = flat(chunk)
                s = HEAD
                n, c, w, s0, s1 = r[s + 2], r[s + 3], r[s + 4], _int(r, 1), _int(r, 2)
                if out.size and (out.shape[0], out.shape[1]) != (_int(r, 4), _int(r, 5)):
                    raise TypeError("out is not of the fed step's result shape")
                if chunk.shape[0] != n * c or chunk.shape[1] != w:
                    return NOT_A_HOP
                if not finite(x):
                    return NOT_FINITE
                result = _int(r, 3)
                for b in range(n):
                    for ch in range(c):
                        vcopy(f32, r[s] + b * s0 + ch * s1, x, (b * c + ch) * w, w)
            elif op == COPY_BLOCKS:  # destination, table, sources
                if copies:
                    dst = _flat(f32, r, 0)
                    s = HEAD + ARG_SLOTS
                    blocks = _borrowed(i64, r[s], (r[s + 2], r[s + 3]))
                    for b in range(blocks.shape[0]):
                        _copy_block(dst, _flat(f32, r, 2 + blocks[b, 0]), blocks[b])
            elif op == SHIFT_HISTORY:  # a flat move inlined
                if shifts:
                    s = HEAD
                    rows, w, keep, start = r[s + 2] * r[s + 3], r[s + 4], _int(r, 1), _int(r, 2)
                    if rows > 0 and moves_flat(rows, w, keep, start):
                        vcopy(f32, r[s], f32, r[s] + start, rows * w - start)
                    elif shift_rows:
                        shift_history(_f3(f32, r, 0), keep, start)
            elif op == CONV_ROWS:
                if convs:
                    rows_call(conv, _f3(f32, r, 0), _f3(f32, r, 1), _flat(f32, r, 2), _f3(f32, r, 3), _flat(f32, r, 4),
                              _flat(i64, r, 5), _flat(f32, r, 6))  # (the session's types)
            elif op == WINDOW_MAX:
                if maxes:
                    _window_max(_f3(f32, r, 0), _f3(f32, r, 1), _int(r, 2), _int(r, 3))
            elif op == WINDOW_AVG:
                if avgs:
                    _window_avg(_f3(f32, r, 0), _f3(f32, r, 1), _int(r, 2), _int(r, 3))
            elif op == WINDOW_MAX_INTO:
                if maxes_into:
                    _window_max_into(_f3(f32, r, 0), _f3(f32, r, 1), _f3(f32, r, 2), _int(r, 3), _int(r, 4),
                                     _int(r, 5))
            elif op == WINDOW_AVG_INTO:
                if avgs_into:  # the pair sums inlined (a call passing three 3-D arrays costs 5-7 ns)
                    s = HEAD
                    rows, n, w = r[s + 2] * r[s + 3], r[s + 4], r[s + 2 * ARG_SLOTS + 4]  # x (rows, n), buf (rows, w)
                    col, k = _int(r, 5), _int(r, 3)
                    if takes_pair_sums(AVG, k, _int(r, 4), n, w - col):
                        pair_sums_into(_flat(f32, r, 0), _flat(f32, r, 2), rows, n, w, col, k)
                    elif avg_rows:
                        _window_avg_into(_f3(f32, r, 0), _f3(f32, r, 1), _f3(f32, r, 2), k, _int(r, 4), col)
            elif op == MEAN_ROWS:
                if means:
                    mean_rows(_flat(f32, r, 0), _flat(f32, r, 1), _int(r, 2), _int(r, 3))
            elif op == GEMM:
                if gemms:
                    plan = _flat(i64, r, 5)
                    if takes_one_row(plan) and plan[7] == 0:  # B' stored row-major: the one-row path inlined
                        one_row(_flat(f32, r, 0), _flat(f32, r, 1), _flat(f32, r, 2), _flat(f32, r, 3), plan,
                                _flat(f32, r, 6))
                    elif gemm_rows:
                        gemm_kernel(_flat(f32, r, 0), _flat(f32, r, 1), _flat(f32, r, 2), _flat(f32, r, 3),
                                    _flat(f32, r, 4), plan, _flat(f32, r, 6))
            elif op == GEMM_DOT:
                if dots:
                    dot_rows(_flat(f32, r, 0), _flat(f32, r, 1), _flat(f32, r, 2), _flat(f32, r, 3), _flat(i64, r, 4),
                             _flat(f32, r, 5))
        if out.size and result >= 0:
            vcopy(flat(out), 0, f32, result, out.size)
        return RAN

    return run_program


_INTERPRETERS: dict[tuple, object] = {}


def interpreter(rows: np.ndarray, words: np.ndarray, conv: int):
    """The compiled ``run_program(program, f32, chunk, out)`` for programs made of ``rows`` (any FEED
    row added) over the arena whose int64 view is ``words``, their convolutions run on the rows kernel
    of ``conv`` (``kernels.conv.rows_mask`` of the union of their kernels' flags)."""
    opcodes = set(rows[:, 0].tolist())
    general = {int(r[0]) for r in rows if r[0] in OUT_OF_LINE and _out_of_line(r, words)}
    key = (tuple(op in opcodes for op in range(FEED + 1)), tuple(op in general for op in OUT_OF_LINE), conv)
    if key not in _INTERPRETERS:
        _INTERPRETERS[key] = _interpreter(*key)
    return _INTERPRETERS[key]


def _out_of_line(r: np.ndarray, words: np.ndarray) -> bool:
    """Whether ``run_program`` runs row ``r`` of an OUT_OF_LINE opcode by its kernel out of line (the
    conditions of its branches, evaluated once here)."""
    s, arg = HEAD, [int(r[HEAD + ARG_SLOTS * j]) for j in range(int(r[1]))]
    if r[0] == SHIFT_HISTORY:
        rows = r[s + 2] * r[s + 3]
        return not (rows > 0 and moves_flat.py_func(rows, r[s + 4], arg[1], arg[2]))
    if r[0] == WINDOW_AVG_INTO:
        n, w = r[s + 4], r[s + 2 * ARG_SLOTS + 4]
        return not takes_pair_sums.py_func(AVG, arg[3], arg[4], n, w - arg[5])
    plan = words[arg[5]:arg[5] + r[s + 5 * ARG_SLOTS + 1]]
    return not (takes_one_row.py_func(plan) and plan[7] == 0)
