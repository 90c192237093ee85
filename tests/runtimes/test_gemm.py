"""Gemm and MatMul against onnxruntime on random float32 inputs.

Gemm: every transA/transB pair, alpha and beta, C absent or of each shape that broadcasts to
(M, N), B and C constant or given at run time, one row (the batch-1 path; up to two vectors of
outputs by partial sums over alternate taps; its Relu applied in registers, NaN kept) and several (tiles of eight rows), few rows with
fewer outputs than a vector (the dot-product path, checked to be taken where it applies), fused
activations and the Gemm -> BatchNormalization -> Clip fusion. MatMul: 1-D
operands, 2-D, and N-D with batch broadcasting. Tolerance rtol 1e-4, atol 1e-5 (float32 sums of
up to a few hundred products, in a different order than onnxruntime's); the dot-product path sums
up to 2048 products: rtol 1e-4, atol 1e-4.
"""
import itertools

import numpy as np
import pytest
from onnx import helper

import edgekit
from edgekit.runtimes.kernels import activation as ka
from edgekit.runtimes.kernels import gemm as kg
from edgekit.runtimes.ops.gemm import DOT_MAX_ROWS
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-4, 1e-5
C_SHAPES = [None, (), (1,), ("n",), (1, "n"), ("m", 1), ("m", "n")]


def _gemm_case(m, k, n, trans_a, trans_b, c_shape, b_const, c_const, seed, **attrs):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    tensors = {"a": (a, False), "b": (b, b_const)}
    if c_shape is not None:
        shape = tuple({"m": m, "n": n}.get(d, d) for d in c_shape)
        tensors["c"] = (rng.standard_normal(shape).astype(np.float32), c_const)
    node = helper.make_node("Gemm", list(tensors), ["y"], transA=trans_a, transB=trans_b, **attrs)
    feeds = {name: v for name, (v, const) in tensors.items() if not const}
    inits = {name: v for name, (v, const) in tensors.items() if const}
    return make_model([node], {name: (v.shape, np.float32) for name, v in feeds.items()}, ["y"], inits), feeds


@pytest.mark.parametrize("c_shape", C_SHAPES, ids=str)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([0, 1], [0, 1])))
@pytest.mark.parametrize("m", [1, 11])
def test_gemm_matches_onnxruntime(m, trans_a, trans_b, c_shape):
    for b_const, c_const in ((True, True), (False, False)):
        model, feeds = _gemm_case(m, 37, 21, trans_a, trans_b, c_shape, b_const, c_const,
                                  seed=m + 3 * trans_a + trans_b, alpha=0.7, beta=-1.3)
        assert_matches_ort(model, feeds, RTOL, ATOL)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.5, 0.0), (0.0, 0.5)])
def test_gemm_alpha_beta(alpha, beta):
    model, feeds = _gemm_case(5, 9, 40, 0, 1, ("n",), True, True, seed=1, alpha=alpha, beta=beta)
    assert_matches_ort(model, feeds, RTOL, ATOL)


@pytest.mark.parametrize("m,k,n", [(1, 64, 256), (1, 256, 10), (3, 300, 129), (64, 33, 17)])
def test_gemm_shapes(m, k, n):
    model, feeds = _gemm_case(m, k, n, 0, 1, ("n",), True, True, seed=k)
    assert_matches_ort(model, feeds, RTOL, ATOL)


@pytest.mark.parametrize("k", [1, 3, 4, 32, 37])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 32, 33])
def test_gemm_one_short_row(n, k):
    """One row of at most two vectors of outputs (the two-vector, four-sum path; 33 takes the tiles),
    with C of every broadcast shape, B given at run time or constant, then a fused Relu."""
    for i, (c_shape, b_const) in enumerate(itertools.product(C_SHAPES, (True, False))):
        model, feeds = _gemm_case(1, k, n, 0, i % 2, c_shape, b_const, b_const, seed=i + n + k, alpha=0.7, beta=-1.3)
        assert_matches_ort(model, feeds, RTOL, ATOL)
    rng = np.random.default_rng(n + k)
    x = rng.standard_normal((1, k)).astype(np.float32)
    inits = {"w": rng.standard_normal((n, k)).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1), helper.make_node("Relu", ["y"], ["z"])]
    assert_matches_ort(make_model(nodes, {"x": (x.shape, np.float32)}, ["z"], inits), {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu", "Sigmoid"])
def test_gemm_one_short_row_activation_keeps_nan(activation):
    """The short row's fused activation (Relu in registers, others after the store), a NaN input
    giving NaN outputs as onnxruntime's."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 32)).astype(np.float32)
    x[1, 5] = np.nan
    inits = {"w": rng.standard_normal((20, 32)).astype(np.float32), "b": rng.standard_normal(20).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1), helper.make_node(activation, ["y"], ["z"])]
    model = make_model(nodes, {"x": ((1, 32), np.float32)}, ["z"], inits)
    session = edgekit.InferenceSession(model)
    code = {"Relu": ka.RELU, "LeakyRelu": ka.LEAKY_RELU, "Sigmoid": ka.SIGMOID}[activation]
    assert [fn for fn, _ in session.plan(((1, 32),)).steps] == [kg.gemm_kernels(code)[0]]  # the activation fused
    assert (kg.gemm_kernels(code)[0] is kg.gemm_kernel) == (activation == "Relu")  # compiled for its activation
    for row in x:
        assert_matches_ort(model, {"x": row[None]}, RTOL, ATOL, session=session)


@pytest.mark.parametrize("m,k,n", [(1, 2048, 2), (1, 64, 1), (3, 300, 5), (4, 17, 7), (5, 33, 3)])
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([0, 1], [0, 1])))
def test_gemm_few_outputs(m, k, n, trans_a, trans_b):
    """The dot-product path (M <= DOT_MAX_ROWS, N < LANES, rows of A' and of B'^T read in place) and
    the tiled path where it does not apply; C of every broadcast shape, B constant or not, a fused Relu."""
    for i, (c_shape, b_const) in enumerate(itertools.product(C_SHAPES, (True, False))):
        model, feeds = _gemm_case(m, k, n, trans_a, trans_b, c_shape, b_const, b_const, seed=i, alpha=0.7, beta=-1.3)
        session = edgekit.InferenceSession(model)
        assert_matches_ort(model, feeds, 1e-4, 1e-4, session=session)
        (fn, _), = next(iter(session._plans.values())).steps
        dot = m <= DOT_MAX_ROWS and (m == 1 or not trans_a) and (b_const or trans_b)
        assert (fn is kg.gemm_dot_kernel) == dot
    rng = np.random.default_rng(5)
    x = rng.standard_normal((m, k)).astype(np.float32)
    inits = {"w": rng.standard_normal((n, k)).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1), helper.make_node("Relu", ["y"], ["z"])]
    assert_matches_ort(make_model(nodes, {"x": (x.shape, np.float32)}, ["z"], inits), {"x": x}, 1e-4, 1e-4)


@pytest.mark.parametrize("activation", [
    helper.make_node("Relu", ["y"], ["z"]),
    helper.make_node("LeakyRelu", ["y"], ["z"], alpha=0.1),
    helper.make_node("Tanh", ["y"], ["z"]),
    helper.make_node("HardSwish", ["y"], ["z"]),
], ids=lambda n: n.op_type)
@pytest.mark.parametrize("m", [1, 9])
def test_gemm_fused_activation(m, activation):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((m, 30)).astype(np.float32)
    inits = {"w": rng.standard_normal((50, 30)).astype(np.float32), "b": rng.standard_normal(50).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1), activation]
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["z"], inits)
    session = edgekit.InferenceSession(model)
    assert len(next(iter(session._plans.values())).steps) == 1
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


def test_gemm_batchnorm_clip_fuse_into_one_step():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 24)).astype(np.float32)
    n = 16
    inits = {"w": rng.standard_normal((n, 24)), "b": rng.standard_normal(n), "gamma": rng.uniform(0.5, 2, n),
             "beta": rng.standard_normal(n), "mean": rng.standard_normal(n), "var": rng.uniform(0.5, 2, n),
             "lo": np.float32(0.0), "hi": np.float32(6.0)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5),
             helper.make_node("BatchNormalization", ["y", "gamma", "beta", "mean", "var"], ["n"]),
             helper.make_node("Clip", ["n", "lo", "hi"], ["z"])]
    inits = {name: np.asarray(v, np.float32) for name, v in inits.items()}
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["z"], inits)
    session = edgekit.InferenceSession(model)
    assert len(next(iter(session._plans.values())).steps) < len(nodes)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


@pytest.mark.parametrize("a_shape,b_shape", [
    ((7,), (7,)), ((7,), (7, 5)), ((4, 7), (7,)), ((1, 40), (40, 300)), ((19, 7), (7, 33)),
    ((3, 2, 7), (7, 5)), ((2, 1, 3, 7), (4, 7, 2)), ((1, 7), (2, 3, 7, 6)), ((2, 3, 9), (2, 9, 17)), ((5,), (3, 5, 4)),
], ids=str)
def test_matmul_matches_onnxruntime(a_shape, b_shape):
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    feeds = {"a": rng.standard_normal(a_shape).astype(np.float32), "b": rng.standard_normal(b_shape).astype(np.float32)}
    inputs = {name: (v.shape, np.float32) for name, v in feeds.items()}
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, ["y"])
    assert_matches_ort(model, feeds, RTOL, ATOL)


def test_matmul_with_constant_weights():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 64)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": (x.shape, np.float32)}, ["y"],
                       {"w": rng.standard_normal((64, 48)).astype(np.float32)})
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)
