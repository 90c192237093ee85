"""XNOR/popcount kernels for binary (+-1) convolutions and matrix products, dense or MST-reused.

Bits: a +-1 value is one bit, 1 for -1 and 0 for +1 (a float x becomes 1 iff x < 0). Packed
activations are uint64 (N, H, W, ceil(C/64)): channel c is bit c % 64 of word c // 64, and bits
past C are 0. A weight row holds T * words words, tap t = kh * KW + kw major, same bit order.
For a, w of K bits: dot = K - 2 * popcount(a XOR w); zero tail bits cancel in the XOR.

Padding: the input is copied into a zero-bordered buffer, so a padded position reads as +1. Each
output pixel has a border class (which taps fall outside); the builder precomputes
base[class, m] = K - (sum of channel m's +-1 weights over the class's outside taps), and then
exactly dot = base - 2 * pc, pc the popcount over all T * words words.

MST reuse: a child channel c with parent p and difference mask m = w_c XOR w_p (d = popcount(m))
has pc_c = pc_p - d + 2 * popcount((a XOR w_c) AND m), summed over the words where m != 0 only
(equivalently y_c = y_p + 2 * (d - 2 * popcount((a XOR w_c) AND m)) for dot products).

Compute: tiles of 8 output pixels, mostly of one border class (the builder groups pixels by
class where that costs few extra tiles; lanes of another class are fixed up one by one). A
tile's input words are gathered word-major into A (8 lanes; one vector copy per tap when the
lanes are adjacent words), so one <8 x i64> XOR + vpopcntq + add advances 8 pixels by one word.
Root channels run in blocks of 4 with their accumulators in registers; children follow in blocks
of 4 over the union of their nonzero mask words (a block never holds a child's parent, so
parents are always computed first). The epilogue writes packed bits (a compare and a masked OR
per channel, for the next binary layer), +-1 floats or scale * dot + bias (NCHW).

AMX: where the CPU has the int8 tile unit, a dense stride-1 conv with packed input of whole words
runs ``binary_conv_amx`` instead (exact int8 +-1 tile products, see the section at the end);
``set_amx(False)`` keeps such layers on the popcount kernel.

Threads: ``set_threads(n)`` before creating a session plans its binary layers with the prange
variant, the output tiles split into n chunks run by Numba's thread pool
(``numba.set_num_threads``); the default 1 uses the single-threaded kernel (and the AMX path).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from . import FASTMATH
from .simd import TARGET_FEATURES

TILE = 8
BLOCK = 4
PACKED, SIGN, FLOAT = 0, 1, 2
_THREADS = [1]
_USE_AMX = [True]
_BITS = np.uint64(1) << np.arange(64, dtype=np.uint64)  # bit b set (a table: the epilogue reads it as a broadcast)


def set_threads(n: int) -> None:
    """Threads for binary layers of sessions created from now on (1: the single-threaded kernel)."""
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    _THREADS[0] = int(n)


def threads() -> int:
    """The thread count binary layers are planned with."""
    return _THREADS[0]


def set_amx(on: bool) -> None:
    """Whether sessions created from now on may plan eligible layers on the AMX tile unit (default on)."""
    _USE_AMX[0] = bool(on)


def amx() -> bool:
    """Whether eligible layers are planned on the AMX tile unit: allowed and available."""
    return _USE_AMX[0] and amx_available()


# --- a minimal <8 x i64> vocabulary: Numba has no popcount and no explicit SIMD -------------------

_VEC = ir.VectorType(ir.IntType(64), TILE)


class _U64x8(types.Type):
    def __init__(self) -> None:
        super().__init__(name="u64x8")


u64x8 = _U64x8()


@register_model(_U64x8)
class _U64x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _splat(builder, x):
    v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), TILE), None))


def _ctpop(builder, v):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC]), "llvm.ctpop.v8i64")
    return builder.call(fn, [v])


def _vec_ptr(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [idx]), _VEC.as_pointer())


@intrinsic
def popcount(typingctx, x):
    """Number of set bits of an integer (LLVM ctpop: popcnt / vpopcntq)."""
    if not isinstance(x, types.Integer):
        return None
    return x(x), lambda context, builder, sig, args: builder.ctpop(args[0])


@intrinsic
def item(typingctx, arr, idx):
    """arr[idx] of a 1-D array, without the negative-index wraparound of Numba's indexing."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.load(builder.gep(data, [args[1]]))
    return arr.dtype(arr, idx), codegen


@intrinsic
def vload(typingctx, arr, idx):
    """The 8 words arr[idx:idx + 8] of a 1-D 64-bit integer array."""
    def codegen(context, builder, sig, args):
        return builder.load(_vec_ptr(context, builder, sig.args[0], args[0], args[1]), align=8)
    return u64x8(arr, idx), codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """arr[idx:idx + 8] = v."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], _vec_ptr(context, builder, sig.args[0], args[0], args[1]), align=8)
        return context.get_dummy_value()
    return types.void(arr, idx, v), codegen


@intrinsic
def vzero(typingctx):
    """Eight zero words."""
    return u64x8(), lambda context, builder, sig, args: ir.Constant(_VEC, None)


@intrinsic
def vxpc(typingctx, acc, a, w):
    """acc + popcount(a XOR w), w broadcast to all lanes."""
    def codegen(context, builder, sig, args):
        return builder.add(args[0], _ctpop(builder, builder.xor(args[1], _splat(builder, args[2]))))
    return u64x8(acc, a, w), codegen


@intrinsic
def vxpcm(typingctx, acc, a, w, m):
    """acc + popcount((a XOR w) AND m), w and m broadcast (one vpternlogq + vpopcntq + add)."""
    def codegen(context, builder, sig, args):
        x = builder.and_(builder.xor(args[1], _splat(builder, args[2])), _splat(builder, args[3]))
        return builder.add(args[0], _ctpop(builder, x))
    return u64x8(acc, a, w, m), codegen


@intrinsic
def vchild(typingctx, parent, q, d):
    """parent - d + 2 * q: a child's popcounts from its parent's and its masked popcount q."""
    def codegen(context, builder, sig, args):
        twice = builder.shl(args[1], _splat(builder, ir.Constant(ir.IntType(64), 1)))
        return builder.sub(builder.add(args[0], twice), _splat(builder, args[2]))
    return u64x8(parent, q, d), codegen


@intrinsic
def vor(typingctx, a, b):
    """a OR b."""
    return u64x8(a, b), lambda context, builder, sig, args: builder.or_(args[0], args[1])


@intrinsic
def vbitset(typingctx, word, v, s, one):
    """word OR one in the lanes where v > s (signed): a compare and a masked OR with a broadcast."""
    def codegen(context, builder, sig, args):
        gt = builder.icmp_signed(">", args[1], _splat(builder, args[2]))
        return builder.select(gt, builder.or_(args[0], _splat(builder, args[3])), args[0])
    return u64x8(word, v, s, one), codegen


# --- the plan tables a builder prepares once --------------------------------------------------------

# Header of the int64 table: geometry, then offsets of the sections that follow it.
(N, HIN, WIN, CIN, WD, PT, PL, HP, WP, T, M, WO, MODE, IN_FLOAT, NB, NK, NTILES, PLANE,
 O_ORDER, O_OFFS, O_RMAP, O_KIDS, O_KPTR, O_KIDX, O_TILES, O_PIN, O_POUT, O_PCLS, O_LIMH, O_BASE, O_ENTRY,
 HEADER) = range(32)


@dataclass
class ConvTables:
    """Everything a binary conv/gemm kernel needs besides its input and output arrays.

    Input: batch ``n``, ``hin`` x ``win`` pixels of ``cin`` float channels (packed into ``wd``
    words in the order ``order``: bit i <- channel order[i]) or of ``wd`` packed words; it is
    copied into the zero-bordered buffer (n, hp, wp, wd) at offset (pt, pl), and ``offs[t]`` is
    the word offset of tap t from a pixel's window origin. Output: ``m`` channels, ``plane`` =
    OH * OW pixels per image. Root blocks: ``roots`` (nb, K, 4) weights of channels ``rmap``
    (nb * 4; m marks an unused slot). Child blocks: ``kids`` (nk, 12) = 4 children, their 4
    parents, their 4 d; a block's entries ``kptr[j]:kptr[j+1]`` of ``kidx`` (word index) and
    ``kwords`` (per entry (mask, weight AND mask) of each of the 4 children; zero mask when that
    word of the child does not differ). Tiles: ``tiles`` (ntiles, 3) = first slot, valid lanes, main border class; slot s
    holds a pixel's window origin ``pin[s]`` in the buffer, its output offset ``pout[s]``
    (packed: pixel * words; float: n * m * plane + pixel in plane) and its class ``pcls[s]``. ``limh[class, m]``: output -1 iff
    pc > limh; ``base[class, m]``: dot = base - 2 * pc; float output scale * dot + bias.
    """

    n: int
    hin: int
    win: int
    cin: int
    wd: int
    pt: int
    pl: int
    hp: int
    wp: int
    m: int
    plane: int
    mode: int
    in_float: bool
    offs: np.ndarray
    order: np.ndarray
    roots: np.ndarray
    rmap: np.ndarray
    kids: np.ndarray
    kptr: np.ndarray
    kidx: np.ndarray
    kwords: np.ndarray
    tiles: np.ndarray
    pin: np.ndarray
    pout: np.ndarray
    pcls: np.ndarray
    limh: np.ndarray
    base: np.ndarray
    scale: np.ndarray
    bias: np.ndarray

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ints, words, floats): the three flat arrays the kernels read (few arguments = cheap calls)."""
        sections = [self.order, self.offs, self.rmap, self.kids.reshape(-1), self.kptr, self.kidx,
                    self.tiles.reshape(-1), self.pin, self.pout, self.pcls, self.limh.reshape(-1),
                    self.base.reshape(-1)]
        head = [self.n, self.hin, self.win, self.cin, self.wd, self.pt, self.pl, self.hp, self.wp, self.offs.size,
                self.m, (self.m + 63) // 64, self.mode, int(self.in_float), self.roots.shape[0], self.kids.shape[0],
                self.tiles.shape[0], self.plane]
        offsets, at = [], HEADER
        for sec in sections:
            offsets.append(at)
            at += sec.size
        offsets.append(self.roots.size)  # O_ENTRY: where the child entries start in ``words``
        ints = np.concatenate([np.array(head + offsets, np.int64)] + [np.asarray(x, np.int64) for x in sections])
        words = np.concatenate([self.roots.reshape(-1), self.kwords.reshape(-1)]).astype(np.uint64)
        floats = np.concatenate([self.scale, self.bias]).astype(np.float32)
        return ints, words, floats


# --- kernels --------------------------------------------------------------------------------------

@njit(cache=True, fastmath=FASTMATH)
def _prepare(x, xp, g):
    """Write the input into the interior of the zero-bordered packed buffer xp (N, HP, WP, WD).

    Float input (N, CIN, HIN, WIN): bit i of a pixel = (x[order[i]] < 0). Packed input
    (N, HIN, WIN, WD): copied word for word.
    """
    n_, h_, w_, wd, hp, wp, pt, pl = g[N], g[HIN], g[WIN], g[WD], g[HP], g[WP], g[PT], g[PL]
    xs = x.reshape(-1)
    dst = xp.reshape(-1)
    if g[IN_FLOAT]:
        cin = g[CIN]
        order = g[g[O_ORDER]:g[O_ORDER] + cin]
        plane = h_ * w_
        bits = np.empty(plane, np.uint64)
        for n in range(n_):
            for k in range(wd):
                bits[:] = 0
                for b in range(min(64, cin - 64 * k)):
                    src = (n * cin + order[64 * k + b]) * plane
                    channel = xs[src:src + plane]
                    bit = np.uint64(b)
                    for i in range(plane):
                        bits[i] |= np.uint64(channel[i] < 0) << bit
                for h in range(h_):
                    at = ((n * hp + h + pt) * wp + pl) * wd + k
                    for w in range(w_):
                        dst[at + w * wd] = bits[h * w_ + w]
    else:
        for n in range(n_):
            for h in range(h_):
                src = (n * h_ + h) * w_ * wd
                at = ((n * hp + h + pt) * wp + pl) * wd
                for j in range(w_ * wd):
                    dst[at + j] = np.uint64(xs[src + j])


@njit(cache=True, fastmath=FASTMATH)
def _tiles(t0, t1, xp, g, words, floats, out):
    """Output tiles [t0, t1) (see ``ConvTables`` and the module docstring)."""
    wd, m, wo, mode, plane = g[WD], g[M], g[WO], g[MODE], g[PLANE]
    nb, nk = g[NB], g[NK]
    k_ = g[T] * wd
    offs = g[g[O_OFFS]:g[O_OFFS] + g[T]]
    rmap = g[g[O_RMAP]:g[O_RMAP] + nb * BLOCK]
    kids = g[g[O_KIDS]:g[O_KIDS] + 12 * nk]
    kptr = g[g[O_KPTR]:g[O_KPTR] + nk + 1]
    kidx = g[g[O_KIDX]:]
    tiles = g[g[O_TILES]:g[O_TILES] + 3 * g[NTILES]]
    pin = g[g[O_PIN]:]
    pout = g[g[O_POUT]:]
    pcls = g[g[O_PCLS]:]
    limh = g[g[O_LIMH]:]
    base = g[g[O_BASE]:]
    entry = g[O_ENTRY]
    scale = floats[:m]
    bias = floats[m:]
    xs = xp.reshape(-1)
    of = out.reshape(-1)
    a = np.empty(k_ * TILE, np.uint64)
    pcs = np.zeros((m + 1) * TILE, np.int64)
    ob = np.empty(TILE * wo, np.uint64)
    for tile in range(t0, t1):
        s0, nv, cls = tiles[3 * tile], tiles[3 * tile + 1], tiles[3 * tile + 2]
        # 8 adjacent pixels: one vector per tap (a short tile repeats its last pixel, so its ends can lie 7 apart)
        if wd == 1 and nv == TILE and pin[s0 + TILE - 1] == pin[s0] + TILE - 1:
            for t in range(offs.size):
                vstore(a, t * TILE, vload(xs, pin[s0] + offs[t]))
        else:
            for t in range(offs.size):
                for k in range(wd):
                    o = offs[t] + k
                    for i in range(TILE):
                        a[(t * wd + k) * TILE + i] = item(xs, item(pin, s0 + i) + o)
        for blk in range(nb):
            w0 = blk * k_ * BLOCK
            acc0 = vzero()
            acc1 = vzero()
            acc2 = vzero()
            acc3 = vzero()
            for k in range(k_):
                v = vload(a, k * TILE)
                acc0 = vxpc(acc0, v, item(words, w0 + BLOCK * k))
                acc1 = vxpc(acc1, v, item(words, w0 + BLOCK * k + 1))
                acc2 = vxpc(acc2, v, item(words, w0 + BLOCK * k + 2))
                acc3 = vxpc(acc3, v, item(words, w0 + BLOCK * k + 3))
            vstore(pcs, rmap[BLOCK * blk] * TILE, acc0)
            vstore(pcs, rmap[BLOCK * blk + 1] * TILE, acc1)
            vstore(pcs, rmap[BLOCK * blk + 2] * TILE, acc2)
            vstore(pcs, rmap[BLOCK * blk + 3] * TILE, acc3)
        for j in range(nk):
            q0 = vzero()
            q1 = vzero()
            q2 = vzero()
            q3 = vzero()
            for e in range(kptr[j], kptr[j + 1]):
                v = vload(a, item(kidx, e) * TILE)
                e8 = entry + 8 * e
                q0 = vxpcm(q0, v, item(words, e8 + 1), item(words, e8))
                q1 = vxpcm(q1, v, item(words, e8 + 3), item(words, e8 + 2))
                q2 = vxpcm(q2, v, item(words, e8 + 5), item(words, e8 + 4))
                q3 = vxpcm(q3, v, item(words, e8 + 7), item(words, e8 + 6))
            kb = kids[12 * j:12 * j + 12]
            vstore(pcs, kb[0] * TILE, vchild(vload(pcs, kb[4] * TILE), q0, kb[8]))
            vstore(pcs, kb[1] * TILE, vchild(vload(pcs, kb[5] * TILE), q1, kb[9]))
            vstore(pcs, kb[2] * TILE, vchild(vload(pcs, kb[6] * TILE), q2, kb[10]))
            vstore(pcs, kb[3] * TILE, vchild(vload(pcs, kb[7] * TILE), q3, kb[11]))
        if mode == PACKED:
            lim = limh[cls * m:(cls + 1) * m]
            for wi in range(wo):  # four partial words: independent compare/OR chains
                c0 = 64 * wi
                nbits = min(64, m - c0)
                w0 = vzero()
                w1 = vzero()
                w2 = vzero()
                w3 = vzero()
                for b in range(0, nbits - 3, 4):
                    c = c0 + b
                    w0 = vbitset(w0, vload(pcs, c * TILE), item(lim, c), item(_BITS, b))
                    w1 = vbitset(w1, vload(pcs, (c + 1) * TILE), item(lim, c + 1), item(_BITS, b + 1))
                    w2 = vbitset(w2, vload(pcs, (c + 2) * TILE), item(lim, c + 2), item(_BITS, b + 2))
                    w3 = vbitset(w3, vload(pcs, (c + 3) * TILE), item(lim, c + 3), item(_BITS, b + 3))
                for b in range(nbits - nbits % 4, nbits):
                    w0 = vbitset(w0, vload(pcs, (c0 + b) * TILE), item(lim, c0 + b), item(_BITS, b))
                vstore(ob, wi * TILE, vor(vor(w0, w1), vor(w2, w3)))
            at = pout[s0]
            uniform = nv == TILE and pout[s0 + TILE - 1] == at + TILE - 1
            for i in range(nv):
                uniform &= pcls[s0 + i] == cls
            if wo == 1 and uniform:  # 8 adjacent one-word pixels of the tile's class: one vector store
                vstore(of, at, vload(ob, 0))
                continue
            for i in range(nv):
                if pcls[s0 + i] != cls:  # a lane of another border class: its own thresholds
                    lim = limh[pcls[s0 + i] * m:]
                    for wi in range(wo):
                        word = np.uint64(0)
                        for b in range(min(64, m - 64 * wi)):
                            c = 64 * wi + b
                            word |= np.uint64(pcs[c * TILE + i] > lim[c]) << np.uint64(b)
                        ob[wi * TILE + i] = word
                at = pout[s0 + i]
                for k in range(wo):
                    of[at + k] = ob[k * TILE + i]
        else:
            for i in range(nv):
                row = pcls[s0 + i] * m
                at = pout[s0 + i]
                for c in range(m):
                    pc = pcs[c * TILE + i]
                    if mode == SIGN:
                        of[at + c * plane] = np.float32(-1.0) if pc > limh[row + c] else np.float32(1.0)
                    else:
                        of[at + c * plane] = scale[c] * np.float32(base[row + c] - 2 * pc) + bias[c]


@njit(cache=True, fastmath=FASTMATH)
def binary_conv(x, xp, g, words, floats, out):
    """Binary conv / gemm on one thread: out = f(XNOR-popcount(x, weights)), see the module docstring.

    x: float32 (N, C, H, W) / (N, K) or packed uint64 (N, H, W, words) / (N, ..., words); xp: the
    zero-bordered scratch (N, HP, WP, WD), border zero; g, words, floats: ``ConvTables.arrays()``;
    out: packed uint64 (N, OH, OW, ceil(M/64)) / (N, ceil(M/64)) or float32 (N, M, OH, OW) / (N, M).
    """
    _prepare(x, xp, g)
    _tiles(0, g[NTILES], xp, g, words, floats, out)


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def binary_conv_mt(x, xp, g, words, floats, out, nthreads):
    """``binary_conv`` with the output tiles split over ``nthreads`` chunks run by Numba's threads."""
    _prepare(x, xp, g)
    ntiles = g[NTILES]
    for c in prange(nthreads):
        _tiles(c * ntiles // nthreads, (c + 1) * ntiles // nthreads, xp, g, words, floats, out)


# --- AMX: exact +-1 dot products as int8 tile matrix products (16 pixels x 16 channels x 64 per op) --
#
# A dense conv with packed input, C % 64 == 0 and stride 1 runs as an implicit GEMM on the AMX tile
# unit where the CPU has one (amx_int8): the input is expanded to int8 +-1 in a zero-bordered buffer
# (a padded position is 0, so padding is exact without border classes), and output "pixels" are the
# flat positions q = y * WP + x of the padded grid (x >= OW are computed and dropped), so tap t of
# 16 consecutive q is 16 rows of stride C bytes at q + offs[t]. Weights are prepacked in the VNNI
# layout of the tile unit: wb[pair of 16-channel blocks][tap][64-channel chunk][2][16][16][4].
# Tiles 0-3 accumulate 32 q x 32 channels (2 x 2 blocks of 16), tiles 4-5 hold the input rows and
# 6-7 the weight blocks. A sweep over all weights covers QB rows of q (one 32-row block when the
# weights fit the L2 cache, else as many as the dots scratch holds, so large weights stream once).

# Header of the AMX int64 table.
(A_N, A_H, A_W, A_WD, A_WP, A_PT, A_PL, A_OH, A_OW, A_M, A_MP, A_T, A_Q, A_ROWS, A_MODE, A_PLANE, A_QB, A_OFFS,
 A_HEADER) = range(19)
_I8 = ir.IntType(8)
_PTR = _I8.as_pointer()
_AMX = []


def amx_available() -> bool:
    """Whether this CPU has AMX int8, the kernels are compiled for it and Linux lets this process use the
    tile registers (asked once)."""
    if not _AMX:
        ok = False
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split() for line in f if line.startswith("flags")), [])
            if "amx_int8" in flags and "amx_tile" in flags and {"amx-int8", "amx-tile"} <= TARGET_FEATURES:
                import ctypes
                libc = ctypes.CDLL(None, use_errno=True)
                ok = libc.syscall(158, 0x1023, 18) == 0  # arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)
        except OSError:
            ok = False
        _AMX.append(ok)
    return _AMX[0]


def _byte_ptr(context, builder, arrty, arr, idx):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [idx]), _PTR)


def _void_call(builder, name, argtys, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), argtys), name)
    builder.call(fn, args)


def _tile_ids(*ts):
    return [t.literal_value for t in ts] if all(isinstance(t, types.IntegerLiteral) for t in ts) else None


@intrinsic
def tile_config(typingctx, cfg):
    """Load the 64-byte tile configuration cfg (uint8)."""
    def codegen(context, builder, sig, args):
        _void_call(builder, "llvm.x86.ldtilecfg", [_PTR], [_byte_ptr(context, builder, sig.args[0], args[0],
                                                                       ir.Constant(ir.IntType(64), 0))])
        return context.get_dummy_value()
    return types.void(cfg), codegen


@intrinsic
def tile_release(typingctx):
    """Release the tile registers."""
    def codegen(context, builder, sig, args):
        _void_call(builder, "llvm.x86.tilerelease", [], [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def tile_zero(typingctx, t):
    """Tile register t (a literal) = 0."""
    ids = _tile_ids(t)
    if ids is None:
        return None

    def codegen(context, builder, sig, args):
        _void_call(builder, "llvm.x86.tilezero", [_I8], [ir.Constant(_I8, ids[0])])
        return context.get_dummy_value()
    return types.void(t), codegen


def _tile_move(name):
    def typer(typingctx, t, arr, idx, stride):
        ids = _tile_ids(t)
        if ids is None:
            return None

        def codegen(context, builder, sig, args):
            ptr = _byte_ptr(context, builder, sig.args[1], args[1], args[2])
            _void_call(builder, name, [_I8, _PTR, ir.IntType(64)], [ir.Constant(_I8, ids[0]), ptr, args[3]])
            return context.get_dummy_value()
        return types.void(t, arr, idx, stride), codegen
    return typer


tile_load = intrinsic(_tile_move("llvm.x86.tileloadd64"))
tile_load.__doc__ = "Tile register t = rows of arr from element idx, ``stride`` bytes apart."
tile_store = intrinsic(_tile_move("llvm.x86.tilestored64"))
tile_store.__doc__ = "Rows of tile register t to arr from element idx, ``stride`` bytes apart."


@intrinsic
def tile_dot(typingctx, c, a, b):
    """Tile c += a (int8 rows) x b (int8, VNNI layout), int32 sums (tdpbssd)."""
    ids = _tile_ids(c, a, b)
    if ids is None:
        return None

    def codegen(context, builder, sig, args):
        _void_call(builder, "llvm.x86.tdpbssd", [_I8, _I8, _I8], [ir.Constant(_I8, v) for v in ids])
        return context.get_dummy_value()
    return types.void(c, a, b), codegen


@intrinsic
def expand_word(typingctx, dst, idx, word):
    """dst[idx:idx + 64] (int8) = -1 where bit i of word is set, else +1."""
    def codegen(context, builder, sig, args):
        vec = ir.VectorType(_I8, 64)
        bits = builder.bitcast(args[2], ir.VectorType(ir.IntType(1), 64))
        val = builder.select(bits, ir.Constant(vec, [-1] * 64), ir.Constant(vec, [1] * 64))
        builder.store(val, builder.bitcast(_byte_ptr(context, builder, sig.args[0], args[0], args[1]),
                                           vec.as_pointer()), align=1)
        return context.get_dummy_value()
    return types.void(dst, idx, word), codegen


@intrinsic
def below64(typingctx, dots, idx, thr, tidx):
    """Bit i set iff dots[idx + i] < thr[tidx + i], i < 64 (int32 arrays): four compares to one word."""
    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.IntType(32), 64)
        d = builder.load(builder.bitcast(_byte_ptr(context, builder, sig.args[0], args[0], args[1]), vec.as_pointer()),
                         align=4)
        t = builder.load(builder.bitcast(_byte_ptr(context, builder, sig.args[2], args[2], args[3]), vec.as_pointer()),
                         align=4)
        return builder.bitcast(builder.icmp_signed("<", d, t), ir.IntType(64))
    return types.uint64(dots, idx, thr, tidx), codegen


@njit(cache=True, fastmath=FASTMATH)
def binary_conv_amx(x, xi, g, cfg, wb, thr, floats, dots, out):
    """Dense binary conv on the AMX tile unit (see above): x packed uint64 (N, H, W, WD); xi int8
    (N, ROWS, 64 * WD) zero-bordered scratch; g the AMX table; cfg the tile configuration; wb the
    VNNI weights; thr int32 (MP) thresholds (padded channels never fire); floats scale, bias; dots
    int32 (QB, MP) scratch. out: packed uint64 (N, OH, OW, ceil(M/64)) with bit c set iff dot < thr[c],
    or float32 (N, M, OH, OW): -1/+1 (sign) or scale * dot + bias."""
    n_, h_, w_, wd, wp, pt, pl = g[A_N], g[A_H], g[A_W], g[A_WD], g[A_WP], g[A_PT], g[A_PL]
    oh, ow, m, mp, t_, q_, rows, mode, plane = g[A_OH], g[A_OW], g[A_M], g[A_MP], g[A_T], g[A_Q], g[A_ROWS], \
        g[A_MODE], g[A_PLANE]
    qb = g[A_QB]
    offs = g[A_OFFS:A_OFFS + t_]
    c = 64 * wd
    xs = x.reshape(-1)
    xb = xi.reshape(-1)
    of = out.reshape(-1)
    ds = dots.reshape(-1)
    wo = (m + 63) // 64
    tile_config(cfg)
    for n in range(n_):
        img = n * rows * c
        for h in range(h_):
            src = (n * h_ + h) * w_ * wd
            at = img + ((h + pt) * wp + pl) * c
            for j in range(w_ * wd):
                expand_word(xb, at + 64 * j, np.uint64(xs[src + j]))
        for q0 in range(0, q_, qb):
            q1 = min(q0 + qb, q_)
            for pair in range(mp // 32):
                for qt in range(q0, q1, 32):
                    tile_zero(0)
                    tile_zero(1)
                    tile_zero(2)
                    tile_zero(3)
                    for t in range(t_):
                        row = img + (qt + offs[t]) * c
                        for kc in range(wd):
                            wq = ((pair * t_ + t) * wd + kc) * 2048
                            tile_load(4, xb, row + 64 * kc, c)
                            tile_load(6, wb, wq, 64)
                            tile_dot(0, 4, 6)
                            tile_load(5, xb, row + 16 * c + 64 * kc, c)
                            tile_dot(2, 5, 6)
                            tile_load(7, wb, wq + 1024, 64)
                            tile_dot(1, 4, 7)
                            tile_dot(3, 5, 7)
                    d = (qt - q0) * mp + 32 * pair
                    tile_store(0, ds, d, 4 * mp)
                    tile_store(1, ds, d + 16, 4 * mp)
                    tile_store(2, ds, d + 16 * mp, 4 * mp)
                    tile_store(3, ds, d + 16 * mp + 16, 4 * mp)
            y = q0 // wp
            xo = q0 - y * wp - 1
            for r in range(q1 - q0):
                xo += 1
                if xo == wp:
                    y += 1
                    xo = 0
                if y >= oh or xo >= ow:
                    continue
                q = r * mp
                if mode == PACKED:
                    at = ((n * oh + y) * ow + xo) * wo
                    for wi in range(wo):
                        of[at + wi] = below64(ds, q + 64 * wi, thr, 64 * wi)
                elif mode == SIGN:
                    for ch in range(m):
                        of[(n * m + ch) * plane + y * ow + xo] = np.float32(-1.0) if ds[q + ch] < thr[ch] \
                            else np.float32(1.0)
                else:
                    for ch in range(m):
                        of[(n * m + ch) * plane + y * ow + xo] = floats[ch] * np.float32(ds[q + ch]) + floats[m + ch]
    tile_release()
