"""MST compression of binary layers ("Compressing and Accelerating Binary Neural Networks with
Minimum Spanning Tree", ICCV 2023, arXiv 2308.13735).

In a binary layer, output channel c can be computed from another channel p's popcount plus a
correction over only the bits where their weights differ (m = w_c XOR w_p, d = popcount(m)):
y_c = y_p + 2 * (d - 2 * popcount((a XOR w_c) AND m)). Computing the channels along a spanning
tree of the Hamming graph over output channels cuts XNOR work and stored weights; the tree depth
is the dependency chain, so it is bounded. As in the paper, the tree is a minimum-depth MST: a
virtual root joins every channel at the cost of computing it densely, and among the spanning
trees of least total cost one with the shallowest deepest channel is found exactly (every tie
in Kruskal's order is tried, up to a budget; past it, a minimum spanning forest rooted at its
trees' centres). When that depth exceeds the depth bound, a depth-bounded Prim respects the bound
(the cheapest bounded tree, the hop-constrained MST, is NP-hard).

On a CPU the saving is in 64-bit words, not bits: a child costs one XNOR-popcount per word where
its mask is nonzero. So the edge weight is the predicted time of that work (``CostModel``), and
the input channels of a layer can be reordered (``input_order`` on a float input, or the
producing layer's output channels) so that the differences crowd into few words. Per layer, the
cost model keeps the MST plan only where it predicts less time than dense; the report gives bit
and word operations, stored bits and predicted (and, on request, measured) times both ways.

Storage count: dense M * K bits; MST: K bits per root, and per child its parent index
(ceil(log2 M) bits), its d (ceil(log2(K + 1)) bits) and its mask in an enumerative code,
ceil(log2 binomial(K, d)) bits (the fewest any code of a d-of-K mask can use).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import InputError, ModelError
from edgekit.model import ModelSource, check_model, load_model

from .binarize import BINARY_OPS, DOMAIN, dense_weights, pack_bits, unpack_bits

__all__ = ["CostModel", "LayerPlan", "MstReport", "compress", "fewer", "min_depth_forest", "plan_layer",
           "spanning_tree", "time_layers"]

TILE = 8  # output pixels per kernel step (kernels/binary.py)


@dataclass(frozen=True)
class CostModel:
    """Predicted kernel time per 8-pixel tile, in ns (fitted by `python -m benchmarks.binary
    --calibrate` here). dense: per word of a block of 4 root channels; entry: per word of a block
    of 4 children (the union of their nonzero mask words); block: fixed cost per child block."""

    dense: float = 2.4
    entry: float = 2.83
    block: float = 14.7

    def root(self, k_words: int) -> float:
        """Cost of one channel computed densely (a quarter of a block)."""
        return self.dense * k_words / 4

    def edge(self, nnz_words: np.ndarray) -> np.ndarray:
        """Cost of one child with ``nnz_words`` differing words, if its block shared them all."""
        return (self.entry * nnz_words + self.block) / 4


@dataclass
class LayerPlan:
    """Spanning forest over a layer's output channels, its child blocks and its counts (per output
    pixel). ``blocks``: the children in runs of 4 computed together (-1 = empty lane), in order."""

    parents: np.ndarray      # (M,), -1 for roots
    depth: np.ndarray        # (M,), 0 for roots
    diff_bits: np.ndarray    # (M,), d = popcount(mask) per child, K for roots
    blocks: list             # lists of up to 4 children
    union_words: np.ndarray  # (blocks,), words where some child of the block differs
    k_bits: int
    k_words: int
    input_order: np.ndarray | None = None  # bit position i holds input channel input_order[i]

    @property
    def roots(self) -> int:
        return int((self.parents < 0).sum())

    def order(self) -> list[int]:
        """The ``mst_order`` attribute: the blocks, each padded to 4 with -1."""
        return [c for b in self.blocks for c in b + [-1] * (4 - len(b))]

    def bit_ops(self) -> tuple[int, int]:
        """XNOR-popcount bit operations per output pixel (the paper's count), (dense, MST)."""
        return self.parents.size * self.k_bits, int(self.diff_bits.sum())

    def word_ops(self) -> tuple[int, int]:
        """64-bit XNOR-popcount word operations per output pixel the kernel runs, (dense, MST)."""
        return self.parents.size * self.k_words, self.roots * self.k_words + 4 * int(self.union_words.sum())

    def stored_bits(self) -> tuple[int, int]:
        """Weight storage in bits, (dense, MST) (encoding in the module docstring)."""
        m, k = self.parents.size, self.k_bits
        header = math.ceil(math.log2(m)) + math.ceil(math.log2(k + 1))
        masks = sum(math.ceil(math.log2(math.comb(k, int(d)))) + header for d in self.diff_bits[self.parents >= 0])
        return m * k, self.roots * k + masks

    def predicted_ns(self, cost: CostModel) -> tuple[float, float]:
        """Predicted kernel time per tile, (dense, MST)."""
        dense = math.ceil(self.parents.size / 4) * self.k_words * cost.dense
        mst = math.ceil(self.roots / 4) * self.k_words * cost.dense + \
            float(cost.entry * self.union_words.sum() + cost.block * len(self.blocks))
        return dense, mst


def _costs(w: np.ndarray, cost: CostModel, metric: str) -> tuple[np.ndarray, float]:
    """(edge, root): edge[i, j] the cost of computing row j from row i of packed ``w``, root the cost of
    computing a row densely. metric "time": predicted child cost (nonzero words) and dense cost;
    "bits": Hamming distance and K bits (the paper's graph). Bits break ties in the time metric."""
    m, k_words = w.shape
    k_bits = 64 * k_words
    bits = np.empty((m, m), np.int64)
    words = np.empty((m, m), np.int64)
    for i in range(m):
        x = w ^ w[i]
        bits[i], words[i] = np.bitwise_count(x).sum(axis=1), (x != 0).sum(axis=1)
    if metric == "time":
        return cost.edge(words) + bits * 1e-9, cost.root(k_words) + k_bits * 1e-9
    if metric == "bits":
        return bits.astype(np.float64), float(k_bits)
    raise ValueError(f"metric must be 'time' or 'bits', got {metric!r}")


def spanning_tree(w: np.ndarray, depth: int | None, cost: CostModel = CostModel(),
                  metric: str = "time", budget: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(parents, depth) of a spanning forest over the rows of packed ``w`` (edge costs: ``_costs``).

    The minimum-depth minimum spanning forest (``min_depth_forest``: exact, or past ``budget`` tied
    alternatives a minimum spanning forest rooted at its trees' centres) whenever its depth is
    within the bound ``depth``; it is then also the cheapest forest of that depth. Otherwise the
    bound binds, and a depth-bounded Prim gives a forest that respects it (the cheapest such forest
    is the hop-constrained MST, NP-hard).
    """
    if depth is not None and depth < 0:
        raise InputError(f"the MST depth bound must be >= 0 (0: every channel dense) or None, got {depth}")
    edge, root = _costs(w, cost, metric)
    tree = min_depth_forest(edge, root, budget)
    if tree is None:
        tree = _centred(_prim(edge, root, None)[0])
    if depth is None or tree[1].max(initial=0) <= depth:
        return tree
    return _prim(edge, root, depth)


def _prim(edge: np.ndarray, root: float, bound: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Prim's algorithm from a virtual root joined to every row at cost ``root``, where only rows
    above depth ``bound`` may take children: a minimum spanning forest when the bound is loose."""
    m = edge.shape[0]
    bound = m if bound is None else int(bound)
    key = np.full(m, root)
    parents = np.full(m, -1, np.int64)
    level = np.zeros(m, np.int64)
    done = np.zeros(m, bool)
    for _ in range(m):
        i = int(np.argmin(np.where(done, np.inf, key)))
        done[i] = True
        level[i] = 0 if parents[i] < 0 else level[parents[i]] + 1
        if level[i] >= bound:
            continue
        better = ~done & (edge[i] < key)
        key[better] = edge[i][better]
        parents[better] = i
    return parents, level


def min_depth_forest(edge: np.ndarray, root: float, budget: int = 2048) -> tuple[np.ndarray, np.ndarray] | None:
    """(parents, depth) of a minimum-depth minimum spanning forest, or None past ``budget``.

    The plans are the spanning trees of the rows plus a virtual root joined to each row at cost
    ``root`` (a row computed densely); this returns, among those of least total cost, one whose
    deepest row is shallowest (the paper's minimum-depth MST; with root >= every edge, one tree).
    Kruskal's view: a tree has least cost iff, for every cost class c < root in increasing order,
    its edges of cost c form a spanning forest of the graph those edges make between the components
    of the cheaper edges; edges costing more than ``root`` are never used, and edges costing exactly
    ``root`` are never better than a root edge. So each minimum forest is one choice per class, and
    each of its trees then hangs from the virtual root at its centre, the row whose farthest row is
    nearest. Every combination of choices is tried; None when there are more than ``budget``.
    """
    m = edge.shape[0]
    comp = np.arange(m)
    fixed: list[tuple[int, int]] = []
    options: list[list[list[tuple[int, int]]]] = []
    count, parts = 1.0, m
    iu, ju = np.triu_indices(m, 1)
    costs = edge[iu, ju]
    order = np.argsort(costs, kind="stable")
    order = order[costs[order] < root]
    iu, ju, costs = iu[order], ju[order], costs[order]
    for sel in np.split(np.arange(costs.size), np.flatnonzero(np.diff(costs)) + 1):
        if parts == 1:
            break
        a, b = comp[iu[sel]], comp[ju[sel]]
        keep = a != b
        if not keep.any():
            continue
        k = int(keep.sum())
        pairs = list(zip(iu[sel][keep].tolist(), ju[sel][keep].tolist()))
        labels, local = np.unique(np.concatenate([a[keep], b[keep]]), return_inverse=True)
        local_edges = list(zip(local[:k].tolist(), local[k:].tolist()))
        count *= _forest_count(labels.size, local_edges)
        if count > budget:
            return None
        forests = [[pairs[e] for e in f] for f in _forests(labels.size, local_edges)]
        if len(forests) == 1:
            fixed += forests[0]
        else:
            options.append(forests)
        for i, j in forests[0]:  # every choice joins the same components
            comp[comp == comp[j]] = comp[i]
        parts -= len(forests[0])
    best, best_height = None, m + 1
    for choice in itertools.product(*options):
        edges = fixed + [e for f in choice for e in f]
        height = _height(m, edges)
        if height < best_height:
            best, best_height = edges, height
    return _centred_edges(m, best)


def _forest_count(n: int, edges: list[tuple[int, int]]) -> float:
    """Number of spanning forests of the multigraph (n nodes, ``edges``): Kirchhoff's theorem per component."""
    lap = np.zeros((n, n))
    for a, b in edges:
        lap[a, a] += 1
        lap[b, b] += 1
        lap[a, b] -= 1
        lap[b, a] -= 1
    adj = _adjacency(n, edges)
    total, seen = 1.0, np.zeros(n, bool)
    for s in range(n):
        if seen[s]:
            continue
        part, _ = _bfs(adj, s)
        seen[part] = True
        if len(part) > 1:
            total *= round(np.linalg.det(lap[np.ix_(part[1:], part[1:])]))
    return total


def _forests(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Every spanning forest of the multigraph, as lists of edge indices: each edge in turn is taken
    (unless it closes a cycle) or left out (unless the later edges can no longer join its ends)."""
    out: list[list[int]] = []

    def joined(label: list[int], k: int, a: int, b: int) -> bool:
        group = list(label)
        for u, v in edges[k:]:
            gu, gv = group[u], group[v]
            if gu != gv:
                group = [gu if g == gv else g for g in group]
        return group[a] == group[b]

    def grow(k: int, label: list[int], chosen: list[int]) -> None:
        if k == len(edges):
            out.append(chosen)
            return
        a, b = label[edges[k][0]], label[edges[k][1]]
        if a == b:
            grow(k + 1, label, chosen)
            return
        grow(k + 1, [a if x == b else x for x in label], chosen + [k])
        if joined(label, k + 1, edges[k][0], edges[k][1]):
            grow(k + 1, label, chosen)

    grow(0, list(range(n)), [])
    return out


def _adjacency(n: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    return adj


def _bfs(adj: list[list[int]], s: int) -> tuple[list[int], dict[int, int]]:
    """Visit order and parent of every node reachable from s."""
    order, parent = [s], {s: -1}
    for u in order:
        for v in adj[u]:
            if v not in parent:
                parent[v] = u
                order.append(v)
    return order, parent


def _tree_centres(adj: list[list[int]]) -> list[tuple[int, int]]:
    """(centre, radius) of every tree of a forest: the middle of a longest path (two sweeps)."""
    seen, out = set(), []
    for s in range(len(adj)):
        if s in seen:
            continue
        order, _ = _bfs(adj, s)
        seen.update(order)
        far = order[-1]
        order, parent = _bfs(adj, far)
        path = [order[-1]]
        while parent[path[-1]] >= 0:
            path.append(parent[path[-1]])
        out.append((path[len(path) // 2], len(path) // 2))
    return out


def _height(m: int, edges: list[tuple[int, int]]) -> int:
    """Depth of the forest when every tree hangs from its centre: its largest radius."""
    return max(r for _, r in _tree_centres(_adjacency(m, edges)))


def _centred_edges(m: int, edges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(parents, depth) of the forest with every tree rooted at its centre."""
    adj = _adjacency(m, edges)
    parents, level = np.full(m, -1, np.int64), np.zeros(m, np.int64)
    for centre, _ in _tree_centres(adj):
        order, parent = _bfs(adj, centre)
        for v in order[1:]:
            parents[v], level[v] = parent[v], level[parent[v]] + 1
    return parents, level


def _centred(parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The forest of ``parents`` re-rooted at its trees' centres (same edges, least depth)."""
    return _centred_edges(parents.size, [(int(p), c) for c, p in enumerate(parents) if p >= 0])


def _blocks(w: np.ndarray, parents: np.ndarray, depth: np.ndarray) -> tuple[list, np.ndarray]:
    """Children in blocks of up to 4 from one depth level each (so parents come first), grown
    greedily to keep the union of their nonzero mask words small; and the union sizes."""
    kids = np.flatnonzero(parents >= 0)
    nonzero = (w[kids] ^ w[parents[kids]]) != 0
    blocks, unions = [], []
    for d in np.unique(depth[kids]):
        left = list(np.flatnonzero(depth[kids] == d))
        left.sort(key=lambda i: -int(nonzero[i].sum()))
        while left:
            block = [left.pop(0)]
            union = nonzero[block[0]].copy()
            while len(block) < 4 and left:
                grow = [(union | nonzero[i]).sum() for i in left]
                block.append(left.pop(int(np.argmin(grow))))
                union |= nonzero[block[-1]]
            blocks.append([int(kids[i]) for i in block])
            unions.append(int(union.sum()))
    return blocks, np.array(unions, np.int64)


def _plan(w: np.ndarray, parents: np.ndarray, depth: np.ndarray, k_bits: int, order=None) -> LayerPlan:
    diff = np.where(parents[:, None] >= 0, w ^ w[np.maximum(parents, 0)], 0)
    bits = np.where(parents < 0, k_bits, np.bitwise_count(diff).sum(axis=1)).astype(np.int64)
    blocks, unions = _blocks(w, parents, depth)
    return LayerPlan(parents, depth, bits, blocks, unions, k_bits, w.shape[1], order)


def _reorder(w: np.ndarray, parents: np.ndarray, channels: int, groups: int) -> np.ndarray:
    """Input-channel order putting the channels that differ most often along tree edges first."""
    kids = np.flatnonzero(parents >= 0)
    masks = unpack_bits((w[kids] ^ w[parents[kids]]).reshape(kids.size, groups, -1), channels)
    return np.argsort(-masks.sum(axis=(0, 1)), kind="stable")


def _permute_inputs(w: np.ndarray, order: np.ndarray, channels: int, groups: int) -> np.ndarray:
    bits = unpack_bits(w.reshape(w.shape[0], groups, -1), channels)
    return pack_bits(bits[:, :, order]).reshape(w.shape[0], -1)


def plan_layer(w: np.ndarray, channels: int, depth: int | None, cost: CostModel = CostModel(),
               reorder: bool = True, metric: str = "time") -> LayerPlan:
    """The MST plan of one layer's dense packed weights (M, groups * words); ``reorder`` tries an
    input-channel order that concentrates differences and keeps it when it predicts less time."""
    wd = (channels + 63) // 64
    groups = w.shape[1] // wd
    k_bits = groups * channels
    plan = _plan(w, *spanning_tree(w, depth, cost, metric), k_bits)
    if reorder and channels > 64 and plan.blocks:
        order = _reorder(w, plan.parents, channels, groups)
        w2 = _permute_inputs(w, order, channels, groups)
        alt = _plan(w2, *spanning_tree(w2, depth, cost, metric), k_bits, order)
        if alt.predicted_ns(cost)[1] < plan.predicted_ns(cost)[1]:
            plan = alt
    return plan


# --- model level ----------------------------------------------------------------------------------

@dataclass
class LayerReport:
    """One binary layer: its plan, ``chosen`` (what was written: "mst" or "dense") and ``preferred``
    (the cost model's pick: "mst" only where the plan has a child and predicts less time than dense)."""

    name: str
    op: str
    pixels: int
    plan: LayerPlan
    chosen: str
    preferred: str = "dense"
    measured_us: tuple[float, float] | None = None

    def choice(self) -> str:
        """``chosen``, marked "mst(forced)" where the cost model preferred dense."""
        return "mst(forced)" if self.chosen == "mst" and self.preferred == "dense" else self.chosen

    def predicted_us(self, cost: CostModel) -> tuple[float, float]:
        """Predicted time per call of the whole layer, (dense, MST)."""
        tiles = math.ceil(self.pixels / TILE)
        dense, mst = self.plan.predicted_ns(cost)
        return dense * tiles / 1000, mst * tiles / 1000

    def savings(self) -> str:
        """The plan's XNOR bit-op and stored-bit savings against dense, in percent."""
        (bd, bm), (sd, sm) = self.plan.bit_ops(), self.plan.stored_bits()
        return f"XNOR bit-ops {fewer(bd, bm)}, stored weight bits {fewer(sd, sm)}"


def fewer(dense: int, mst: int) -> str:
    """How much smaller ``mst`` is than ``dense``: "23% fewer" (or "4% more")."""
    return f"{(1 - mst / dense) * 100:.0f}% fewer" if mst <= dense else f"{(mst / dense - 1) * 100:.0f}% more"


@dataclass
class MstReport:
    """Per binary layer: op counts, storage, predicted times and the choice (dense, mst, or
    mst(forced) where the cost model predicted dense faster)."""

    depth: int | None
    cost: CostModel
    layers: list[LayerReport] = field(default_factory=list)

    def totals(self) -> dict[str, tuple[int, int]]:
        """Whole-model (dense, MST-as-chosen) XNOR bit-ops, word-ops and stored weight bits."""
        out = {"bit_ops": [0, 0], "word_ops": [0, 0], "stored_bits": [0, 0]}
        for l in self.layers:
            for key, fn, scale in (("bit_ops", l.plan.bit_ops, l.pixels), ("word_ops", l.plan.word_ops, l.pixels),
                                   ("stored_bits", l.plan.stored_bits, 1)):
                d, m = fn()
                out[key][0] += d * scale
                out[key][1] += (m if l.chosen == "mst" else d) * scale
        return {k: (v[0], v[1]) for k, v in out.items()}

    def format(self) -> str:
        bound = "none" if self.depth is None else str(self.depth)
        rows = [f"MST report (depth bound {bound}); ops per inference, times per call",
                f"{'layer':<22}{'M':>5}{'K':>6}{'roots':>6}{'depth':>6}{'bit-ops dense':>15}{'MST':>13}"
                f"{'words dense':>13}{'MST':>11}{'bits dense':>12}{'MST':>10}{'pred us d/m':>14}"
                f"{'meas us d/m':>15}  choice"]
        for l in self.layers:
            p = l.plan
            bd, bm = p.bit_ops()
            wdn, wm = p.word_ops()
            sd, sm = p.stored_bits()
            pd, pm = l.predicted_us(self.cost)
            meas = f"{l.measured_us[0]:.1f}/{l.measured_us[1]:.1f}" if l.measured_us else "-"
            rows.append(f"{l.name[:21]:<22}{p.parents.size:>5}{p.k_bits:>6}{p.roots:>6}{int(p.depth.max()):>6}"
                        f"{bd * l.pixels:>15,}{bm * l.pixels:>13,}{wdn * l.pixels:>13,}{wm * l.pixels:>11,}"
                        f"{sd:>12,}{sm:>10,}{f'{pd:.1f}/{pm:.1f}':>14}{meas:>15}  {l.choice()}")
        t = self.totals()
        rows.append("total (as chosen): " + ", ".join(
            f"{k.replace('_', ' ')} {d:,} -> {m:,} ({m / d:.2f}x)" for k, (d, m) in t.items() if d))
        return "\n".join(rows)

    def decisions(self, forced: MstReport | None = None) -> str:
        """One line per layer: what was written and why, with the cost model's predicted time per call;
        for a layer kept dense, what the plan of ``forced`` (the same layers, MST written on every one)
        would cost and save."""
        alt = {l.name: l for l in forced.layers} if forced else {}
        rows = []
        for l in self.layers:
            pd, pm = l.predicted_us(self.cost)
            shape = f"{l.plan.roots} root(s), depth {int(l.plan.depth.max())}"
            if l.chosen == "mst" and l.preferred == "mst":
                text = f"MST ({shape}): {pd:.1f} -> {pm:.1f} us; {l.savings()}"
            elif l.chosen == "mst":
                text = f"MST, forced ({shape}): {pd:.1f} -> {pm:.1f} us, slower; {l.savings()}"
            elif self.depth == 0:
                text = f"dense: depth bound 0 computes every channel on its own ({pd:.1f} us)"
            elif l.plan.roots == l.plan.parents.size:
                text = f"dense kept ({pd:.1f} us): no channel is predicted cheaper computed from another"
            else:
                text = f"dense kept ({pd:.1f} us): its cheapest MST plan ({shape}) predicts {pm:.1f} us"
            f = alt.get(l.name)
            if l.chosen == "dense" and f is not None and f.chosen == "mst":
                text += f"; forced MST: {f.predicted_us(forced.cost)[1]:.1f} us, {f.savings()}"
            rows.append(f"  {l.name:<16} {text}")
        return "\n".join(rows)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep + ([helper.make_attribute(name, value)] if value is not None else []))


def _pixels(node: onnx.NodeProto, shapes: dict) -> int:
    """Output pixels of a layer (batch rows for a gemm); 1 when its output shape is unknown."""
    shape = shapes.get(node.output[0])
    if shape is None or node.op_type == "BinaryGemm":
        return int(shape[0]) if shape else 1
    packed = _attr(node, "output", b"float") in (b"packed", "packed")
    return int(np.prod(shape[:-1] if packed else (shape[0],) + shape[2:]))


def compress(model: ModelSource, depth: int | None = None, apply: bool = True, cost: CostModel = CostModel(),
             force: bool = False, reorder: bool = True, metric: str = "time") -> tuple[onnx.ModelProto, MstReport]:
    """Plan every BinaryConv/BinaryGemm of a binarized model; write the plans the cost model prefers.

    ``apply`` False only reports; ``force`` writes MST plans even where dense predicts faster. A
    layer's input reordering is applied when its input is float (``input_order``) or the packed
    output of a binary layer read by it alone (that layer's output channels are permuted).
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model))
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    shapes = _shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info)}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    report = MstReport(depth, cost)
    for node in reversed([n for n in g.node if n.domain == DOMAIN and n.op_type in BINARY_OPS]):
        w_name = node.input[1]
        channels = int(_attr(node, "channels"))
        w = dense_weights(numpy_helper.to_array(inits[w_name]), list(_attr(node, "mst_parents", [])))
        src = producer.get(node.input[0])
        packed_src = src is not None and src.domain == DOMAIN and _attr(src, "output", b"") in (b"packed", "packed")
        packed_in = packed_src or types.get(node.input[0]) == onnx.TensorProto.UINT64
        can_permute = not packed_in or (packed_src and readers.get(node.input[0], 0) == 1)
        plan = plan_layer(w, channels, depth, cost, reorder and can_permute, metric)
        dense_ns, mst_ns = plan.predicted_ns(cost)
        has_child = plan.roots < w.shape[0]
        preferred = "mst" if has_child and mst_ns < dense_ns else "dense"
        chosen = "mst" if apply and has_child and (force or preferred == "mst") else "dense"
        report.layers.insert(0, LayerReport(node.name, node.op_type, _pixels(node, shapes), plan, chosen, preferred))
        if chosen == "dense":
            if _attr(node, "mst_parents"):
                _replace(inits, w_name, w)
                _set_attr(node, "mst_parents", None)
                _set_attr(node, "mst_order", None)
            continue
        if plan.input_order is not None:
            groups = w.shape[1] // ((channels + 63) // 64)
            w = _permute_inputs(w, plan.input_order, channels, groups)
            if packed_src:
                _permute_outputs(src, plan.input_order, inits)
            else:
                old = _attr(node, "input_order")
                order = np.asarray(old, np.int64)[plan.input_order] if old else plan.input_order
                _set_attr(node, "input_order", [int(i) for i in order])
        coded = np.where((plan.parents >= 0)[:, None], w ^ w[np.maximum(plan.parents, 0)], w)
        _replace(inits, w_name, coded.astype(np.uint64))
        _set_attr(node, "mst_parents", [int(p) for p in plan.parents])
        _set_attr(node, "mst_order", plan.order())
    check_model(proto)
    return proto, report


def _permute_outputs(node: onnx.NodeProto, order: np.ndarray, inits: dict) -> None:
    """Reorder a binary layer's output channels: new channel j is old channel order[j]."""
    if _attr(node, "mst_parents"):
        raise ModelError(f"node {node.name!r}: cannot permute the outputs of a layer that already has an MST plan")
    for i in node.input[1:]:
        if i:
            _replace(inits, i, numpy_helper.to_array(inits[i])[order])


def _replace(inits: dict, name: str, value: np.ndarray) -> None:
    inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))


def _shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Inferred tensor shapes with symbolic dims (a dynamic batch) taken as 1: counts are per item."""
    try:
        g = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:
        g = proto.graph
    out = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") or i == 0 for i, d in enumerate(t.shape.dim)):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim)
    return out


def time_layers(dense: onnx.ModelProto, mst: onnx.ModelProto, report: MstReport, run) -> None:
    """Fill ``measured_us`` of every report row: ``run(one_node_model, feeds) -> seconds`` times the
    layer alone, from ``dense`` (no plans) and ``mst`` (plans applied), on random inputs."""
    shapes = _shapes(dense)
    rng = np.random.default_rng(0)
    for row in report.layers:
        times = []
        for model in (dense, mst):
            node = next(n for n in model.graph.node if n.name == row.name)
            shape = shapes.get(node.input[0])
            if shape is None:
                break
            single, feed = _single(model, node, shape, rng)
            if single is None:
                break
            times.append(run(single, feed) * 1e6)
        if len(times) == 2:
            row.measured_us = (times[0], times[1])


def _single(model: onnx.ModelProto, node: onnx.NodeProto, shape: tuple, rng: np.random.Generator):
    """A model holding only ``node`` and a random feed for its input (packed: zero tail bits);
    (None, None) when the output's shape is unknown."""
    inits = [t for t in model.graph.initializer if t.name in node.input[1:]]
    vi = next((v for v in list(model.graph.value_info) + list(model.graph.input) if v.name == node.input[0]), None)
    packed = vi is not None and vi.type.tensor_type.elem_type == onnx.TensorProto.UINT64
    if packed:
        words = rng.integers(0, np.iinfo(np.uint64).max, shape, dtype=np.uint64, endpoint=True)
        channels = int(_attr(node, "channels"))
        if channels % 64:
            words[..., -1] &= np.uint64((1 << (channels % 64)) - 1)
        feed = words
    else:
        feed = rng.standard_normal(shape).astype(np.float32)
    elem = onnx.TensorProto.UINT64 if packed else onnx.TensorProto.FLOAT
    out = next((v for v in list(model.graph.value_info) + list(model.graph.output) if v.name == node.output[0]), None)
    if out is None:
        return None, None
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info(node.input[0], elem, list(shape))],
                              [out], inits)
    single = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return single, {node.input[0]: feed}
