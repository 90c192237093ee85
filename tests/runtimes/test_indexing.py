"""Indexing and rearrangement ops against onnxruntime on fresh random inputs.

GatherElements, GatherND (batch_dims 0-2), ScatterElements/Scatter and ScatterND (every
reduction at the opsets that have it, PyTorch's ``x[:, i] = v`` export), DepthToSpace (DCR, CRD),
SpaceToDepth (DCR, and CRD since opset 28), Trilu (upper/lower, k constant, absent or fed),
OneHot (axes, negative and out-of-range indices, fed values) must match exactly (rtol 0, atol 0;
scatter add/mul of float32 duplicates rtol 1e-6). Einsum sums float32 products in another order
than onnxruntime: rtol 1e-4, atol 1e-5 (batched-matmul forms, transposes, diagonals, traces, sums,
outer products, ellipses, implicit output). Indices are int32 and int64, negative ones included, fed or constant. Also: an index
fed out of range is an InputError naming the node, a constant one a ModelError, and the forms
edgekit refuses are UnsupportedOpErrors naming the node.
"""
import numpy as np
import pytest
from onnx import helper

import edgekit
import edgekit.runtimes.ops.indexing  # noqa: F401  (registration)
from edgekit.errors import InputError, ModelError, UnsupportedOpError
from oracle import assert_matches_ort, make_model

DTYPES = [np.float32, np.int32, np.int64]


def _rand(rng, shape, dtype=np.float32):
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-50, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _check(node, feeds, inits=None, opset=18, out_dtype=None, rtol=0.0, atol=0.0):
    """One node on ``feeds`` (name -> array) and constant ``inits`` in both engines."""
    out_dtype = out_dtype or next(iter(feeds.values())).dtype
    model = make_model([node], {n: (a.shape, a.dtype) for n, a in feeds.items()},
                       {node.output[0]: helper.np_dtype_to_tensor_dtype(np.dtype(out_dtype))}, inits, opset)
    return assert_matches_ort(model, feeds, rtol, atol)


def _indices(rng, n, shape, dtype, negative=True):
    """Random indices into an axis of size n, half of them written negative when allowed."""
    idx = rng.integers(0, n, shape)
    if negative:
        idx = np.where(rng.random(shape) < 0.5, idx - n, idx)
    return idx.astype(dtype)


# ---- GatherElements / ScatterElements -------------------------------------------------------


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype,idx_dtype", [(np.float32, np.int64), (np.bool_, np.int32)])
def test_gather_elements(opset, axis, dtype, idx_dtype):
    rng = np.random.default_rng(abs(axis) + opset)
    data = _rand(rng, (3, 5, 4), dtype)
    idx_shape = [2, 4, 3]
    idx_shape[axis] = 6
    idx = _indices(rng, data.shape[axis], idx_shape, idx_dtype)
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=axis)
    _check(node, {"x": data, "i": idx}, opset=opset)
    _check(node, {"x": data}, {"i": idx}, opset=opset)


def _scatter_elements_case(rng, dtype, axis, unique):
    data = _rand(rng, (4, 6, 5), dtype)
    shape = [3, 6, 2]
    shape[axis] = 3
    if unique:  # distinct targets per line: the result does not depend on the order of writes
        full = list(shape)
        full[axis] = data.shape[axis]
        idx = np.take(np.argsort(rng.random(full), axis=axis), np.arange(3), axis=axis)
    else:
        idx = rng.integers(0, data.shape[axis], shape)
    idx = np.where(rng.random(idx.shape) < 0.5, idx - data.shape[axis], idx).astype(np.int64)
    upd = _rand(rng, idx.shape, dtype)
    return data, idx, upd


@pytest.mark.parametrize("op,opset", [("Scatter", 9), ("Scatter", 10), ("ScatterElements", 11),
                                      ("ScatterElements", 13), ("ScatterElements", 18)])
@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_elements_overwrite(op, opset, axis, dtype):
    rng = np.random.default_rng(opset + axis)
    data, idx, upd = _scatter_elements_case(rng, dtype, axis, unique=True)
    if opset < 11:
        idx = idx % data.shape[axis]
    node = helper.make_node(op, ["x", "i", "u"], ["y"], axis=axis)
    _check(node, {"x": data, "i": idx, "u": upd}, opset=opset)
    if dtype == np.float32:
        _check(node, {"x": data, "u": upd}, {"i": idx.astype(np.int32)}, opset=opset)


@pytest.mark.parametrize("reduction,opset", [("add", 16), ("mul", 16), ("add", 18), ("mul", 18),
                                             ("max", 18), ("min", 18)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_elements_reduction(reduction, opset, dtype):
    rng = np.random.default_rng(len(reduction) + opset)
    data, idx, upd = _scatter_elements_case(rng, dtype, 1, unique=False)
    if reduction == "mul" and dtype != np.float32:
        upd = rng.integers(-2, 3, upd.shape).astype(dtype)
    node = helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1, reduction=reduction)
    _check(node, {"x": data, "i": idx, "u": upd}, opset=opset, rtol=1e-6)


# ---- GatherND / ScatterND -----------------------------------------------------------------


@pytest.mark.parametrize("opset", [11, 12, 13])
@pytest.mark.parametrize("batch,depth", [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_gather_nd(opset, batch, depth, dtype):
    if batch and opset < 12:
        pytest.skip("batch_dims arrived in opset 12")
    rng = np.random.default_rng(opset * 10 + batch * 3 + depth)
    data = _rand(rng, (3, 4, 5, 2), dtype)
    tuples = (2, 3)
    idx = np.stack([_indices(rng, data.shape[batch + c], data.shape[:batch] + tuples, np.int64)
                    for c in range(depth)], axis=-1)
    kw = {"batch_dims": batch} if opset >= 12 else {}
    node = helper.make_node("GatherND", ["x", "i"], ["y"], **kw)
    _check(node, {"x": data, "i": idx}, opset=opset)
    _check(node, {"x": data}, {"i": idx}, opset=opset)


@pytest.mark.parametrize("reduction,opset", [(None, 11), (None, 13), ("add", 16), ("mul", 16),
                                             ("max", 18), ("min", 18)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("depth", [1, 2])
def test_scatter_nd(reduction, opset, dtype, depth):
    rng = np.random.default_rng(opset + depth)
    data = _rand(rng, (5, 4, 3), dtype)
    if reduction is None:  # distinct tuples
        flat = rng.permutation(int(np.prod(data.shape[:depth])))[:3]
        idx = np.stack(np.unravel_index(flat, data.shape[:depth]), axis=-1)
    else:
        idx = np.stack([rng.integers(0, data.shape[c], 6) for c in range(depth)], axis=-1)
    idx = (idx - np.array(data.shape[:depth]) * (rng.random(idx.shape) < 0.5)).astype(np.int64)
    upd = _rand(rng, idx.shape[:-1] + data.shape[depth:], dtype)
    kw = {"reduction": reduction} if reduction else {}
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], **kw)
    _check(node, {"x": data, "i": idx, "u": upd}, opset=opset, rtol=1e-6)


def test_scatter_nd_pytorch_column_assignment():
    """``x[:, 2] = v`` exported by PyTorch: ScatterND with constant (B, 1, 2) index pairs (b, 2)."""
    rng = np.random.default_rng(7)
    x, v = _rand(rng, (4, 6, 3)), _rand(rng, (4, 3))
    idx = np.stack([np.arange(4), np.full(4, 2)], axis=-1).reshape(4, 2).astype(np.int64)
    node = helper.make_node("ScatterND", ["x", "i", "v"], ["y"])
    _check(node, {"x": x, "v": v}, {"i": idx}, opset=17)


# ---- DepthToSpace / SpaceToDepth ------------------------------------------------------------


@pytest.mark.parametrize("opset,mode", [(1, None), (11, "DCR"), (11, "CRD"), (13, "DCR"), (13, "CRD")])
@pytest.mark.parametrize("block", [1, 2, 3])
def test_depth_to_space(opset, mode, block):
    rng = np.random.default_rng(block + opset)
    x = _rand(rng, (2, 2 * block * block, 3, 5))
    kw = {"mode": mode} if mode else {}
    _check(helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=block, **kw), {"x": x}, opset=opset)


@pytest.mark.parametrize("opset,mode", [(1, None), (13, None), (28, "DCR"), (28, "CRD")])
@pytest.mark.parametrize("block", [1, 2, 4])
def test_space_to_depth(opset, mode, block):
    rng = np.random.default_rng(block + opset)
    x = _rand(rng, (2, 3, 4 * block, 2 * block))
    kw = {"mode": mode} if mode else {}
    _check(helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=block, **kw), {"x": x}, opset=opset)


def test_depth_to_space_inverts_space_to_depth_in_one_graph():
    """The pixel-shuffle round trip of super-resolution nets: CRD after SpaceToDepth regroups."""
    x = _rand(np.random.default_rng(1), (1, 4, 8, 6))
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["t"], blocksize=2),
             helper.make_node("DepthToSpace", ["t"], ["y"], blocksize=2, mode="DCR")]
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["y"], opset=13)
    (y,) = assert_matches_ort(model, {"x": x}, 0, 0)
    np.testing.assert_array_equal(y, x)


# ---- Trilu / OneHot -----------------------------------------------------------------------


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7, 9])
@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 4, 6), (3, 7, 2)])
def test_trilu_constant_k(upper, k, shape):
    x = _rand(np.random.default_rng(len(shape)), shape)
    inputs, inits = (["x"], None) if k is None else (["x", "k"], {"k": np.array(k, np.int64)})
    _check(helper.make_node("Trilu", inputs, ["y"], upper=upper), {"x": x}, inits, opset=14)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_trilu_fed_k_causal_mask(dtype):
    """A causal mask with k fed at run time (the diagonal offset of cached decoding)."""
    x = _rand(np.random.default_rng(3), (2, 6, 6), dtype)
    node = helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)
    for k in (-2, 0, 3):
        _check(node, {"x": x, "k": np.array(k, np.int64)}, opset=14)


@pytest.mark.parametrize("opset", [9, 11])
@pytest.mark.parametrize("axis", [-1, 0, 1, -3])
@pytest.mark.parametrize("idx_dtype,depth_dtype,val_dtype", [
    (np.int64, np.int64, np.float32), (np.int64, np.int64, np.int64), (np.int32, np.float32, np.float32),
    (np.float32, np.float32, np.float32)])
def test_one_hot(opset, axis, idx_dtype, depth_dtype, val_dtype):
    """(indices, depth, values) types as onnxruntime's kernels take them."""
    rng = np.random.default_rng(opset + axis)
    depth = 7
    idx = rng.integers(-depth - 2 if opset >= 11 else 0, depth + 2, (3, 4)).astype(idx_dtype)
    values = np.array([-1, 5], val_dtype)
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=axis)
    _check(node, {"i": idx}, {"d": np.array(depth, depth_dtype), "v": values}, opset=opset, out_dtype=val_dtype)
    _check(node, {"i": idx, "v": values}, {"d": np.array([depth], depth_dtype)}, opset=opset, out_dtype=val_dtype)


# ---- Einsum -------------------------------------------------------------------------------


EINSUM = [
    ("bij,bjk->bik", [(3, 4, 5), (3, 5, 6)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 7, 8), (2, 3, 5, 8)]),
    ("bhqk,bhkd->bhqd", [(2, 3, 7, 5), (2, 3, 5, 8)]),
    ("ij,jk", [(4, 5), (5, 3)]),
    ("ij,kj->ik", [(4, 5), (3, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4, 5), (2, 3, 5, 2)]),
    ("bij,bjk->bki", [(2, 4, 5), (2, 5, 3)]),
    ("i,j->ij", [(4,), (6,)]),
    ("i,i->", [(9,), (9,)]),
    ("bi,bi->b", [(3, 9), (3, 9)]),
    ("ij->ji", [(4, 5)]),
    ("ii->", [(5, 5)]),
    ("ii->i", [(5, 5)]),
    ("bii->b", [(3, 4, 4)]),
    ("ijk->", [(2, 3, 4)]),
    ("bij->bj", [(2, 3, 4)]),
    ("ij,jk->k", [(3, 4), (4, 5)]),
    ("...ij,...j->...i", [(2, 3, 4, 6), (2, 1, 6)]),
    ("bn,anm,bm->ba", None),
]


@pytest.mark.parametrize("equation,shapes", [e for e in EINSUM if e[1]])
def test_einsum(equation, shapes):
    rng = np.random.default_rng(len(equation))
    names = "ab"[:len(shapes)]
    feeds = {n: _rand(rng, s) for n, s in zip(names, shapes)}
    _check(helper.make_node("Einsum", list(names), ["y"], equation=equation), feeds, opset=12, rtol=1e-4, atol=1e-5)


def test_einsum_int64_and_constant_operand():
    rng = np.random.default_rng(5)
    a, w = _rand(rng, (3, 4), np.int64), _rand(rng, (4, 2), np.int64)
    _check(helper.make_node("Einsum", ["a", "w"], ["y"], equation="ij,jk->ik"), {"a": a}, {"w": w}, opset=12)
    a, w = _rand(rng, (2, 3, 4)), _rand(rng, (2, 5, 4))
    _check(helper.make_node("Einsum", ["a", "w"], ["y"], equation="bij,bkj->bik"), {"a": a}, {"w": w}, opset=12,
           rtol=1e-4, atol=1e-5)


def test_einsum_of_three_operands_is_unsupported_naming_equation():
    shapes = {"a": (2, 3), "b": (4, 3, 5), "c": (2, 5)}
    node = helper.make_node("Einsum", list(shapes), ["y"], equation="bn,anm,bm->ba", name="bilinear")
    model = make_model([node], {n: (s, np.float32) for n, s in shapes.items()}, ["y"], opset=12)
    with pytest.raises(UnsupportedOpError, match="bilinear.*bn,anm,bm->ba"):
        edgekit.InferenceSession(model)


# ---- errors -------------------------------------------------------------------------------


CASES = {  # op -> (node inputs, attrs, data shape, index shape, updates shape, bad index)
    "GatherElements": (["x", "i"], {"axis": 1}, (2, 4), (2, 3), None, 4),
    "ScatterElements": (["x", "i", "u"], {"axis": 1}, (2, 4), (2, 3), (2, 3), -5),
    "GatherND": (["x", "i"], {}, (3, 4), (2, 2), None, 4),
    "ScatterND": (["x", "i", "u"], {}, (3, 4), (2, 1), (2, 4), -4),
}


@pytest.mark.parametrize("op", list(CASES))
def test_index_out_of_range(op):
    """Fed out of range: InputError naming the node; constant out of range: ModelError naming it."""
    inputs, attrs, shape, idx_shape, upd_shape, bad = CASES[op]
    rng = np.random.default_rng(0)
    idx = np.zeros(idx_shape, np.int64)
    idx.flat[-1] = bad
    feeds = {"x": _rand(rng, shape)}
    if upd_shape:
        feeds["u"] = _rand(rng, upd_shape)
    node = helper.make_node(op, inputs, ["y"], name="pick", **attrs)
    model = make_model([node], {**{n: (a.shape, a.dtype) for n, a in feeds.items()}, "i": (idx_shape, np.int64)},
                       ["y"], opset=18)
    session = edgekit.InferenceSession(model)
    with pytest.raises(InputError, match=f"'pick' \\({op}\\)"):
        session.run(None, {**feeds, "i": idx})
    idx.flat[-1] = 0
    session.run(None, {**feeds, "i": idx})  # the session still works after a refused run
    idx.flat[-1] = bad
    model = make_model([node], {n: (a.shape, a.dtype) for n, a in feeds.items()}, ["y"], {"i": idx}, opset=18)
    with pytest.raises(ModelError, match="'pick'"):
        edgekit.InferenceSession(model)


def test_one_hot_with_fed_depth_is_unsupported():
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"], name="hot")
    model = make_model([node], {"i": ((3,), np.int64), "d": ((), np.int64)}, ["y"], {"v": np.array([0, 1], np.float32)},
                       opset=11)
    with pytest.raises(UnsupportedOpError, match="hot.*depth"):
        edgekit.InferenceSession(model)


def test_float16_data_is_unsupported():
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], name="g16")
    model = make_model([node], {"x": ((2, 3), np.float16)}, {"y": 10}, {"i": np.zeros((2, 3), np.int64)}, opset=13)
    with pytest.raises(UnsupportedOpError, match="g16.*float16"):
        edgekit.InferenceSession(model)


def test_bool_scatter_reduction_and_bool_einsum_are_unsupported():
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="mask_or", reduction="add")
    model = make_model([node], {"x": ((4,), np.bool_), "u": ((1,), np.bool_)}, {"y": 9},
                       {"i": np.array([[1]], np.int64)}, opset=16)
    with pytest.raises(UnsupportedOpError, match="mask_or.*bool"):
        edgekit.InferenceSession(model)
    node = helper.make_node("Einsum", ["x"], ["y"], name="bsum", equation="ij->i")
    model = make_model([node], {"x": ((2, 3), np.bool_)}, {"y": 9}, opset=12)
    with pytest.raises(UnsupportedOpError, match="bsum.*ij->i"):
        edgekit.InferenceSession(model)


def test_dynamic_sequence_length_causal_attention_scores():
    """Scores q.k^T by Einsum, a causal mask by Trilu and a GatherElements pick, with batch and
    sequence length dynamic: one session runs several shapes (one plan each)."""
    nodes = [helper.make_node("Einsum", ["q", "k"], ["s"], equation="bhqd,bhkd->bhqk"),
             helper.make_node("Trilu", ["s"], ["m"], upper=0),
             helper.make_node("GatherElements", ["m", "i"], ["y"], axis=3)]
    model = make_model(nodes, {"q": (("B", 2, "T", 8), np.float32), "k": (("B", 2, "T", 8), np.float32),
                               "i": (("B", 2, "T", 1), np.int64)}, ["y"], opset=14)
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(11)
    for b, t in ((1, 5), (3, 9), (1, 5)):
        feeds = {"q": _rand(rng, (b, 2, t, 8)), "k": _rand(rng, (b, 2, t, 8)),
                 "i": _indices(rng, t, (b, 2, t, 1), np.int64)}
        assert_matches_ort(model, feeds, 1e-4, 1e-5, session=session)


def test_nd_indices_of_depth_zero_take_whole_slices():
    """Index tuples of length 0 address all of data: GatherND repeats it, ScatterND replaces it."""
    rng = np.random.default_rng(2)
    x = _rand(rng, (3, 4))
    _check(helper.make_node("GatherND", ["x", "i"], ["y"]), {"x": x}, {"i": np.zeros((2, 0), np.int64)}, opset=13)
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["y"])
    _check(node, {"x": x, "u": _rand(rng, (3, 4))}, {"i": np.zeros((0,), np.int64)}, opset=13)
