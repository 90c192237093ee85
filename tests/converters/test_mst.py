"""MST compression: spanning forests under a depth bound, exactness of MST plans, the report.

Checked: the tree respects the depth bound (0 = all dense) and, unbounded on the paper's Hamming
graph, has the weight of scipy's minimum spanning tree; on small layers with many tied distances
it is, against brute force over every spanning tree, a cheapest tree of least depth (the paper's
minimum-depth MST), and under a depth bound it meets, the cheapest tree of that depth; models with MST plans give bit-identical
outputs to their dense form in edgekit and (exported to standard ops) in onnxruntime, including
plans that reorder input channels (of a float input, and of a packed producer's outputs); the
report's bit-ops, word-ops and stored bits equal a direct count from the written weights; the
cost model keeps dense for random weights and picks MST for near-duplicate channels, and the report
says per layer what was written and why; a negative depth bound is refused. The CLI on the bundled
BNN: `--mst` (auto) keeps layers the cost model predicts slower as MST dense and says so per layer
with the numbers and how to force it, `--mst-force` writes MST on every layer with outputs identical
to the dense model, depth bound 0 keeps every layer dense (`--report` is tested in
tests/test_cli_convert.py).
"""
import itertools
import math
import os
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.sparse.csgraph import minimum_spanning_tree

import edgekit
import edgekit.demos
from edgekit.cli import main
from edgekit.converters.binarize import binarize, pack_bits, to_float
from edgekit.converters.mst import compress, min_depth_forest, plan_layer, spanning_tree
from edgekit.errors import InputError
from edgekit.runtimes.ops import binary as _binary_ops  # noqa: F401  (registers the ops)
from oracle import ort_session


def two_layers(rng, w1: np.ndarray, w2: np.ndarray, hw: int = 10) -> onnx.ModelProto:
    """Sign -> conv w1 (pad 1) -> BN -> Sign -> conv w2 (stride 2, pad 1) -> BN -> Sign."""
    inits = {"w1": w1.astype(np.float32), "w2": w2.astype(np.float32)}
    for name, n in (("bn1", w1.shape[0]), ("bn2", w2.shape[0])):
        inits.update({f"{name}_g": rng.standard_normal(n).astype(np.float32),
                      f"{name}_b": rng.standard_normal(n).astype(np.float32),
                      f"{name}_m": (rng.standard_normal(n) * 3).astype(np.float32),
                      f"{name}_v": (rng.random(n) + 0.5).astype(np.float32)})
    nodes = [helper.make_node("Sign", ["x"], ["a0"]),
             helper.make_node("Conv", ["a0", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "bn1_g", "bn1_b", "bn1_m", "bn1_v"], ["b1"]),
             helper.make_node("Sign", ["b1"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
             helper.make_node("BatchNormalization", ["c2", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["b2"]),
             helper.make_node("Sign", ["b2"], ["y"])]
    out = (hw + 1) // 2
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w1.shape[1], hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w2.shape[0], out, out])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def similar(rng, m, c, flip_channels, p=0.5):
    """(m, c, 3, 3) +-1 weights: each channel a copy of an earlier one, flipped only at some input
    channels (``flip_channels``, each position there with probability p)."""
    w = signs(rng, (m, c, 3, 3))
    mask = np.zeros((c, 3, 3), bool)
    mask[flip_channels] = True
    for i in range(1, m):
        parent = w[rng.integers(0, i)]
        w[i] = np.where(mask & (rng.random((c, 3, 3)) < p), -parent, parent)
    return w


def outputs(model, x):
    return edgekit.InferenceSession(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("metric", ["bits", "time"])
@pytest.mark.parametrize("depth", [0, 1, 2, 4, None])
def test_depth_bound_holds(metric, depth):
    rng = np.random.default_rng(1)
    w = rng.integers(0, np.iinfo(np.uint64).max, (40, 5), dtype=np.uint64, endpoint=True)
    w[20:] = w[:20] ^ (np.uint64(1) << rng.integers(0, 64, (20, 5)).astype(np.uint64))  # near copies
    parents, level = spanning_tree(w, depth, metric=metric)
    direct = np.zeros(40, np.int64)
    for c in range(40):
        p, d = parents[c], 0
        while p >= 0:
            p, d = parents[p], d + 1
            assert d <= 40, "cycle"
        direct[c] = d
    np.testing.assert_array_equal(direct, level)
    assert level.max() <= (40 if depth is None else depth)
    if depth == 0:
        assert (parents < 0).all()


def test_negative_depth_bound_is_refused():
    rng = np.random.default_rng(2)
    dense = binarize(two_layers(rng, signs(rng, (8, 5, 3, 3)), signs(rng, (8, 8, 3, 3))))
    with pytest.raises(InputError, match="depth bound must be >= 0"):
        compress(dense, depth=-1)


def test_unbounded_tree_is_a_minimum_spanning_tree_of_the_hamming_graph():
    rng = np.random.default_rng(2)
    w = rng.integers(0, np.iinfo(np.uint64).max, (30, 3), dtype=np.uint64, endpoint=True)
    parents, _ = spanning_tree(w, None, metric="bits")
    dist = np.array([[np.bitwise_count(a ^ b).sum() for b in w] for a in w], float)
    graph = np.zeros((31, 31))
    graph[:30, :30] = dist
    graph[30, :30] = graph[:30, 30] = 64 * 3  # the virtual root: a channel computed densely
    graph[graph == 0] = 1e-9  # scipy reads 0 as "no edge"; identical rows are 0 apart
    np.fill_diagonal(graph, 0)
    best = minimum_spanning_tree(graph).sum()
    ours = sum(dist[c, p] if p >= 0 else 64 * 3 for c, p in enumerate(parents))
    assert math.isclose(ours, round(best), abs_tol=1e-6)



def all_trees(n: int):
    """Parent arrays of every spanning tree of the complete graph on n nodes, rooted at node n - 1
    (Pruefer sequences: n ** (n - 2) trees)."""
    for seq in itertools.product(range(n), repeat=n - 2):
        degree = [1] * n
        for v in seq:
            degree[v] += 1
        edges = []
        for v in seq:
            leaf = min(u for u in range(n) if degree[u] == 1)
            edges.append((leaf, v))
            degree[leaf] -= 1
            degree[v] -= 1
        edges.append(tuple(u for u in range(n) if degree[u] == 1))
        adj = {u: [] for u in range(n)}
        for a, b in edges:
            adj[a].append(b)
            adj[b].append(a)
        parent, order = {n - 1: -1}, [n - 1]
        for u in order:
            for v in adj[u]:
                if v not in parent:
                    parent[v] = u
                    order.append(v)
        yield [parent[u] for u in range(n - 1)]


def cost_and_depth(parents, edge: np.ndarray, root: float) -> tuple[float, int]:
    """Total cost and deepest channel of a plan given as parents (-1 or the virtual root = a root)."""
    m = edge.shape[0]
    parents = [-1 if p in (-1, m) else p for p in parents]
    depth = []
    for c in range(m):
        p, d = parents[c], 0
        while p >= 0:
            p, d = parents[p], d + 1
        depth.append(d)
    return sum(root if p < 0 else edge[p, c] for c, p in enumerate(parents)), max(depth)


def brute_force(edge: np.ndarray, root: float) -> list[tuple[float, int]]:
    """(cost, depth) of every plan; min() of it is the least cost with the least depth among those."""
    return [(round(c, 9), d) for c, d in (cost_and_depth(p, edge, root) for p in all_trees(edge.shape[0] + 1))]


@pytest.mark.parametrize("seed", range(6))
def test_minimum_depth_mst_matches_brute_force_on_hamming_graphs(seed):
    """Six channels whose weights differ in only 4 bits: distances 0..4, many tied MSTs and roots."""
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 16, (6, 1)).astype(np.uint64) | np.uint64(0xF0F0 << 8)
    edge = np.array([[np.bitwise_count(a ^ b).sum() for b in w] for a in w], float)
    plans = brute_force(edge, 64.0)
    best = min(plans)
    assert sum(c == best[0] for c, _ in plans) > 1  # several minimum spanning trees to choose from
    for depth in (None, best[1], best[1] + 1):
        assert cost_and_depth(spanning_tree(w, depth, metric="bits")[0], edge, 64.0) == best
    for depth in range(best[1]):  # the bound binds: it holds (the cheapest bounded tree is NP-hard to find)
        cost, d = cost_and_depth(spanning_tree(w, depth, metric="bits")[0], edge, 64.0)
        assert d <= depth and cost >= min(c for c, dd in plans if dd <= depth)


@pytest.mark.parametrize("seed", range(6))
def test_minimum_depth_forest_matches_brute_force_on_general_costs(seed):
    """Random integer costs with ties and a root cost inside their range: forests of several trees."""
    rng = np.random.default_rng(10 + seed)
    m = 6
    edge = rng.integers(1, 5, (m, m)).astype(float)
    edge = np.minimum(edge, edge.T)
    root = float(rng.integers(2, 5))
    parents, depth = min_depth_forest(edge, root)
    assert cost_and_depth(parents, edge, root) == min(brute_force(edge, root))


def test_past_the_budget_the_tree_is_still_minimum_and_centred():
    rng = np.random.default_rng(3)
    w = rng.integers(0, np.iinfo(np.uint64).max, (128, 2), dtype=np.uint64, endpoint=True)
    edge = np.array([[np.bitwise_count(a ^ b).sum() for b in w] for a in w], float)
    exact = spanning_tree(w, None, metric="bits")
    cheap = spanning_tree(w, None, metric="bits", budget=0)
    assert cost_and_depth(cheap[0], edge, 128.0)[0] == cost_and_depth(exact[0], edge, 128.0)[0]
    assert exact[1].max() <= cheap[1].max()


@pytest.mark.parametrize("depth", [1, 3, None])
def test_mst_plans_reproduce_dense_results_exactly(depth):
    rng = np.random.default_rng(3)
    model = two_layers(rng, signs(rng, (70, 5, 3, 3)), signs(rng, (37, 70, 3, 3)))
    dense = binarize(model)
    planned, report = compress(dense, depth=depth, force=True, metric="bits")
    assert all(l.chosen == "mst" for l in report.layers)
    assert all(l.plan.depth.max() <= (depth or 99) for l in report.layers)
    x = rng.standard_normal((1, 5, 10, 10)).astype(np.float32)
    expected = ort_session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(outputs(planned, x), outputs(dense, x))
    np.testing.assert_array_equal(outputs(planned, x), expected)
    np.testing.assert_array_equal(ort_session(to_float(planned)).run(None, {"x": x})[0], expected)


def direct_counts(model: onnx.ModelProto, name: str) -> tuple[int, int, int]:
    """(bit-ops, word-ops, stored bits) per output pixel of node ``name``, counted from its tensors."""
    node = next(n for n in model.graph.node if n.name == name)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    coded = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == node.input[1])
    parents = list(attrs.get("mst_parents", [-1] * coded.shape[0]))
    m, k_words = coded.shape
    k_bits = attrs["kernel_shape"][0] * attrs["kernel_shape"][1] * attrs["channels"]
    roots = [c for c in range(m) if parents[c] < 0]
    bits = len(roots) * k_bits + sum(int(np.bitwise_count(coded[c]).sum()) for c in range(m) if parents[c] >= 0)
    order = list(attrs.get("mst_order", []))
    unions = sum(int(np.any(coded[[c for c in order[i:i + 4] if c >= 0]] != 0, axis=0).sum())
                 for i in range(0, len(order), 4))
    words = len(roots) * k_words + 4 * unions
    per_child = [math.ceil(math.log2(math.comb(k_bits, int(np.bitwise_count(coded[c]).sum()))))
                 + math.ceil(math.log2(m)) + math.ceil(math.log2(k_bits + 1)) for c in range(m) if parents[c] >= 0]
    return bits, words, len(roots) * k_bits + sum(per_child)


def test_report_counts_match_a_direct_count():
    rng = np.random.default_rng(4)
    model = two_layers(rng, signs(rng, (70, 5, 3, 3)), signs(rng, (37, 70, 3, 3)))
    planned, report = compress(binarize(model), depth=3, force=True, metric="bits")
    pixels = {"conv1": 100, "conv2": 25}
    total_bits = 0
    for row in report.layers:
        bits, words, stored = direct_counts(planned, row.name)
        assert row.pixels == pixels[row.name]
        assert row.plan.bit_ops()[1] == bits
        assert row.plan.word_ops()[1] == words
        assert row.plan.stored_bits()[1] == stored
        assert row.plan.bit_ops()[0] == row.plan.parents.size * row.plan.k_bits
        total_bits += bits * row.pixels
    assert report.totals()["bit_ops"][1] == total_bits
    assert "conv2" in report.format()


def test_cost_model_keeps_dense_for_random_weights_and_picks_mst_for_near_copies():
    rng = np.random.default_rng(5)
    random_model = binarize(two_layers(rng, signs(rng, (70, 5, 3, 3)), signs(rng, (128, 70, 3, 3))))
    _, report = compress(random_model)
    assert [l.chosen for l in report.layers] == ["dense", "dense"]
    assert [l.preferred for l in report.layers] == ["dense", "dense"]
    assert all("dense kept" in line for line in report.decisions().splitlines())
    near = similar(rng, 128, 70, [3, 40, 66], p=0.3)
    model = two_layers(rng, signs(rng, (70, 5, 3, 3)), near)
    planned, report = compress(binarize(model))
    row = report.layers[1]
    assert row.chosen == row.preferred == "mst" and row.plan.input_order is not None  # differences in one word
    dense_ns, mst_ns = row.plan.predicted_ns(report.cost)
    assert mst_ns < dense_ns
    line = report.decisions().splitlines()[1]
    dense_us, mst_us = row.predicted_us(report.cost)
    assert line.split()[:2] == ["conv2", "MST"] and f"{dense_us:.1f} -> {mst_us:.1f} us" in line
    assert "XNOR bit-ops" in line and "stored weight bits" in line
    x = rng.standard_normal((1, 5, 10, 10)).astype(np.float32)
    expected = ort_session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(outputs(planned, x), expected)  # the producer's outputs were permuted
    np.testing.assert_array_equal(ort_session(to_float(planned)).run(None, {"x": x})[0], expected)


def test_reordering_a_float_input():
    rng = np.random.default_rng(6)
    near = similar(rng, 64, 150, [2, 70, 140], p=0.3)
    words = pack_bits(near.transpose(0, 2, 3, 1) < 0).reshape(64, -1)
    plain = plan_layer(words, 150, None, reorder=False)
    reordered = plan_layer(words, 150, None, reorder=True)
    assert reordered.input_order is not None
    assert reordered.word_ops()[1] < plain.word_ops()[1]
    graph = helper.make_graph(
        [helper.make_node("Sign", ["x"], ["s"]), helper.make_node("Conv", ["s", "w"], ["c"], pads=[1, 1, 1, 1], name="c"),
         helper.make_node("Sign", ["c"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 150, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 6, 6])],
        [numpy_helper.from_array(near.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.warns(UserWarning):  # 1350 inputs: a sum of exactly 0 is reachable
        dense = binarize(model)
    planned, report = compress(dense, force=True)
    node = planned.graph.node[0]
    assert any(a.name == "input_order" for a in node.attribute)
    x = rng.standard_normal((1, 150, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(outputs(planned, x), outputs(dense, x))



BNN = os.path.join(os.path.dirname(edgekit.demos.__file__), "models", "bnn_fashion.onnx")
LAYERS = ("/3/Conv", "/6/Conv", "/10/MatMul")


def layer_lines(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.startswith("  /")}


def mst_nodes(path) -> list[bool]:
    return [any(a.name == "mst_parents" for a in n.attribute) for n in onnx.load(path).graph.node
            if n.op_type.startswith("Binary")]


def test_cli_mst_auto_says_per_layer_why_dense_is_kept(tmp_path, capsys):
    """On the bundled BNN the masks touch nearly every 64-bit word, so the cost model keeps every layer
    dense: the CLI says so with the predicted times and what forcing would cost and save."""
    out = tmp_path / "auto.onnx"
    assert main(["convert", BNN, "--binarize", "--mst", "--mst-depth", "3", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MST (--mst, depth bound 3): applied to 0 of 3 binary layer(s)" in text
    lines = layer_lines(text)
    assert sorted(lines) == sorted(LAYERS)
    for line in lines.values():
        assert "dense kept (" in line and re.search(r"forced MST: [\d.]+ us, XNOR bit-ops \d+% fewer, "
                                                     r"stored weight bits \d+% fewer", line)
    assert "--mst-force" in text and "size does not shrink" in text
    assert mst_nodes(out) == [False] * 3


def test_cli_mst_force_writes_every_layer_exactly(tmp_path, capsys):
    dense, forced = tmp_path / "dense.onnx", tmp_path / "forced.onnx"
    assert main(["convert", BNN, "--binarize", "-o", str(dense)]) == 0
    assert main(["convert", BNN, "--binarize", "--mst-force", "--mst-depth", "2", "-o", str(forced)]) == 0
    text = capsys.readouterr().out
    assert "MST (--mst-force, depth bound 2): applied to 3 of 3 binary layer(s)" in text
    lines = layer_lines(text)
    assert all(re.search(r"MST(, forced)? \(\d+ root\(s\), depth [12]\): [\d.]+ -> [\d.]+ us", lines[name])
               for name in LAYERS)
    assert "--mst-force writes" not in text  # no hint when already forced
    assert mst_nodes(forced) == [True] * 3
    from edgekit.demos.bnn import load_images

    images, _ = load_images(100)
    (want,) = edgekit.InferenceSession(str(dense)).run(None, {"image": images})
    (got,) = edgekit.InferenceSession(str(forced)).run(None, {"image": images})
    np.testing.assert_array_equal(got, want)  # same integer sums, same float last layer


def test_cli_mst_depth_zero_and_flag_order(tmp_path, capsys):
    out = tmp_path / "zero.onnx"
    for mode in ("--mst", "--mst-force"):
        assert main(["convert", BNN, "--binarize", mode, "--mst-depth", "0", "-o", str(out)]) == 0
        text = capsys.readouterr().out
        assert all("depth bound 0 computes every channel" in line for line in layer_lines(text).values())
        assert "--mst-force writes" not in text and mst_nodes(out) == [False] * 3
    assert main(["convert", "--binarize", "--mst", BNN, "-o", str(out)]) == 0  # (the flags before the model)
    capsys.readouterr()
    assert main(["convert", BNN, "--paramfree", "max", "--mst-force", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--mst, --mst-force and --mst-depth go with --binarize" in capsys.readouterr().err
