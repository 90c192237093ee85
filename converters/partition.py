"""Split a model across device -> edge -> cloud at the cheapest cuts (AI Flow; Neurosurgeon, ASPLOS
2017, for chains; DADS, INFOCOM 2019, for DAGs), and write one ONNX part per tier plus plan.json.

Cost model (docs/flow.md). Tiers are ordered; a node runs on one tier and data only flows forward,
so an assignment is monotone: a node's tier is >= the tiers of the nodes it reads from. The raw
input starts on the device, the outputs return to it. Between the tiers that run nodes (the
device always counts as the origin) each hop a -> b carries every tensor made at or before a and
read at or after b, once, and costs

    sum(wire bytes) * (1 / bandwidth + per-byte hop overhead) + rtt + hop overhead
    + encode time on a + decode time on b + returned outputs * (1 / bandwidth + per-byte hop overhead)

where a hop over a skipped tier uses the direct link if given, else both links in series (their
RTTs add; the hop overhead, the affine cost of handling one request, is paid once per hop). A
tier's compute is the sum of its nodes' profiled times plus the fixed cost of one session call
(divided by its speed factor, or taken from its own profile). Latency is the sum of all compute and hop times. Device energy is
``active_w * (device compute + device encoding) + idle_w * (the rest of the latency) +
radio_j_per_byte * (bytes over the device's hop, both ways)``.

Exact optimisation. Let D_j be the nodes on the first j tiers of a chain of used tiers: every
D_j is a down-set (ideal) of the DAG and D_1 <= D_2 <= ... The cost splits as a constant plus
sum_j F_j(D_j), where F_j depends only on D_j (compute differences and hop j's tensors, RTT and
returns), and the constraints (device memory, raw input kept on the device) depend on D_1 only.
Nodes that must share a tier (tied) form one group, and the D_j are the ideals of the DAG of groups.
So: enumerate the ideals once (breadth-first, as bit masks), evaluate every F_j on all of them
(NumPy over an ideals x nodes matrix), and run a DP over the ideal lattice with
G(D) = min(H(D), min over maximal m of G(D - m)), which gives the best nested D_{j-1} <= D_j
(strictly smaller when the tier between must run something). This is repeated for every chain
of used tiers (subsets of the tiers starting at the device; at most 2^(K-1)). Time
O(C * I * (n + sum of consumers)), memory O(I * n), for I ideals, n nodes, C chains; a chain
has I = n + 1 (the DP over a topological order), a DAG of width w has I = O(n^w).
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from edgekit.errors import InputError, ModelError
from edgekit.ir import live_nodes, read_graph

COMPRESSIONS = ("none", "fp16", "int8", "zstd")
MAX_IDEALS = 200_000
SHAPE_TO_DATA = ("ConstantOfShape", "Range", "EyeLike")  # read a shape, make data any part can be fed
INT8_SCALE_BYTES = 4
UNMADE = {"shape": [], "dtype": "float32", "bytes": 0, "zstd_bytes": 0, "codec_s": {}}  # a tensor never cut


@dataclass
class Tier:
    """A place that runs nodes: ``speed`` relative to the profiling machine, or its own profile."""

    name: str
    speed: float = 1.0
    profile: dict | None = None


@dataclass
class Link:
    """A network path between two tiers (either order)."""

    src: str
    dst: str
    bandwidth_bps: float
    rtt_s: float


@dataclass
class Power:
    """Device energy model: active and idle power, radio energy per byte sent or received."""

    active_w: float = 2.0
    idle_w: float = 0.3
    radio_j_per_byte: float = 4e-7


@dataclass
class Options:
    objective: str = "latency"  # latency | energy
    compression: str = "none"  # none | fp16 | int8 | zstd, applied to every transfer
    keep_input_on_device: bool = False  # every node reading a raw input runs on the device
    device_memory: int | None = None  # bytes: device weights + largest node working set
    power: Power = field(default_factory=Power)
    hop_overhead_s: float = 0.0  # fixed seconds per hop: handling one request (encode, HTTP, decode)
    hop_overhead_per_byte_s: float = 0.0  # plus seconds per byte on the wire (after compression) of that hop


@dataclass
class Problem:
    """The partitioning problem as data: nodes in topological order, per-tier costs, tensors.

    ``producer[t]`` is a node index or -1 for a raw input; ``consumers[t]`` node indices;
    ``outputs`` the tensor indices that are model outputs; ``times``, ``enc`` and ``dec`` have one
    row per tier (seconds); ``params`` lists constant tensors as (bytes, consumer nodes);
    ``work[v]`` is node v's activation bytes (inputs + outputs); ``overhead[k]`` the fixed seconds
    tier k spends per run when it runs any node (the session call around the node steps);
    ``tied`` pairs of nodes that must run on the same tier (a shape value and its reader: a part
    fed a shape at run time could not be planned ahead; a sequence and its reader; a tensor the
    runtime never makes and its reader).
    """

    nodes: list[str]
    times: np.ndarray
    tensors: list[str]
    producer: list[int]
    consumers: list[list[int]]
    bytes: np.ndarray
    wire: np.ndarray
    enc: np.ndarray
    dec: np.ndarray
    outputs: list[int]
    params: list[tuple[int, list[int]]] = field(default_factory=list)
    work: np.ndarray | None = None
    overhead: np.ndarray | None = None
    tied: list[tuple[int, int]] = field(default_factory=list)

    def fixed(self, k: int) -> float:
        """Tier k's fixed seconds per run (0 without ``overhead``)."""
        return 0.0 if self.overhead is None else float(self.overhead[k])


@dataclass
class Cost:
    """An assignment's predicted cost; hop keys are "a->b"."""

    objective: float
    latency_s: float
    energy_j: float
    compute_s: dict[str, float]
    transfer_s: dict[str, float]
    feasible: bool = True


@dataclass
class Result:
    """The chosen assignment (tier index per node) and its cost."""

    assignment: list[int]
    cost: Cost


# ---------------------------------------------------------------- ground-truth cost of an assignment

def hops(tiers: list[Tier], links: list[Link], used: list[int], overhead_s: float = 0.0,
         overhead_per_byte_s: float = 0.0) -> list[tuple[float, float]] | None:
    """(seconds per byte, fixed seconds) of each hop between consecutive used tiers: the per-byte part
    is 1 / bandwidth (of every link crossed) plus ``overhead_per_byte_s`` once, the fixed part the RTT
    (of every link crossed) plus ``overhead_s`` once; None when a hop has no path."""
    table = {}
    for lk in links:
        table[(lk.src, lk.dst)] = table[(lk.dst, lk.src)] = (1.0 / lk.bandwidth_bps * 8.0, lk.rtt_s)
    out = []
    for a, b in zip(used, used[1:]):
        direct = table.get((tiers[a].name, tiers[b].name))
        if direct is None:
            parts = [table.get((tiers[i].name, tiers[i + 1].name)) for i in range(a, b)]
            if b == a + 1 or any(p is None for p in parts):
                return None
            direct = (sum(p[0] for p in parts), sum(p[1] for p in parts))
        out.append((direct[0] + overhead_per_byte_s, direct[1] + overhead_s))
    return out


def device_memory(p: Problem, on_device: np.ndarray) -> float:
    """Weights read by device nodes plus the largest device node's activation bytes."""
    if not on_device.any():
        return 0.0
    weights = sum(b for b, users in p.params if on_device[users].any())
    return weights + (float(p.work[on_device].max()) if p.work is not None else 0.0)


def evaluate(p: Problem, assignment: list[int] | np.ndarray, tiers: list[Tier], links: list[Link], opts: Options) -> Cost:
    """Predicted latency, device energy and breakdown of a monotone ``assignment`` (see docstring)."""
    a = np.asarray(assignment, int)
    used = sorted(set(a.tolist()) | {0})
    path = hops(tiers, links, used, opts.hop_overhead_s, opts.hop_overhead_per_byte_s)
    compute = {tiers[k].name: float(p.times[k][a == k].sum()) + p.fixed(k) for k in used if (a == k).any()}
    if path is None:
        return Cost(np.inf, np.inf, np.inf, compute, {}, False)
    prod = [a[i] if i >= 0 else 0 for i in p.producer]
    last = [max(a[c]) if c else -1 for c in p.consumers]
    transfer, device_extra, radio_bytes = {}, 0.0, 0.0
    for (src, dst), (spb, fixed) in zip(zip(used, used[1:]), path):
        sent = [t for t in range(len(p.tensors)) if prod[t] <= src and last[t] >= dst]
        back = [t for t in p.outputs if p.producer[t] >= 0 and prod[t] >= dst]
        wire = sum(p.wire[t] for t in sent)
        enc = sum(p.enc[src][t] for t in sent)
        transfer[f"{tiers[src].name}->{tiers[dst].name}"] = (
            (wire + sum(p.bytes[t] for t in back)) * spb + fixed + enc + sum(p.dec[dst][t] for t in sent))
        if src == 0:
            device_extra = enc
            radio_bytes = wire + sum(p.bytes[t] for t in back)
    latency = sum(compute.values()) + sum(transfer.values())
    device_busy = compute.get(tiers[0].name, 0.0) + device_extra
    pw = opts.power
    energy = pw.active_w * device_busy + pw.idle_w * (latency - device_busy) + pw.radio_j_per_byte * radio_bytes
    feasible = _monotone(p, a) and _allowed(p, a == 0, opts) and all(a[u] == a[v] for u, v in p.tied)
    value = (latency if opts.objective == "latency" else energy) if feasible else np.inf
    return Cost(value, latency, energy, compute, transfer, feasible)


def _monotone(p: Problem, a: np.ndarray) -> bool:
    return all(a[p.producer[t]] <= a[c] for t in range(len(p.tensors)) if p.producer[t] >= 0 for c in p.consumers[t])


def _allowed(p: Problem, on_device: np.ndarray, opts: Options) -> bool:
    if opts.keep_input_on_device and not all(on_device[c].all() for t, c in enumerate(p.consumers) if p.producer[t] < 0):
        return False
    return opts.device_memory is None or device_memory(p, on_device) <= opts.device_memory


# ---------------------------------------------------------------- exact optimisation over ideals

def ideals(p: Problem) -> tuple[np.ndarray, list[list[int]]]:
    """The down-sets that keep every tied pair together, as a bool matrix (ideals x nodes, by size),
    and per ideal the indices of the ideals one maximal group of tied nodes smaller."""
    edges = [(p.producer[t], c) for t, users in enumerate(p.consumers) if p.producer[t] >= 0 for c in users]
    return cut_lattice(len(p.nodes), edges, p.tied)


def cut_lattice(n: int, edges: list[tuple[int, int]],
                tied: list[tuple[int, int]]) -> tuple[np.ndarray, list[list[int]]]:
    """``ideals`` of the DAG on ``n`` nodes with ``edges`` (u before v). Tied nodes (a shape value and
    its readers, a tensor the runtime never makes and its readers) form one group, so the lattice is
    that of the DAG of groups: an exporter's Shape -> Gather -> Concat chains beside every Reshape are
    not parallel branches to cut between. Raises ModelError beyond MAX_IDEALS."""
    group = _groups(n, edges, tied)
    pred = [0] * (max(group) + 1)
    for u, v in edges:
        if group[u] != group[v]:
            pred[group[v]] |= 1 << group[u]
    index = {0: 0}
    order = [0]
    level = [0]
    while level:
        nxt = []
        for mask in level:
            for g, need in enumerate(pred):
                if not mask >> g & 1 and need & ~mask == 0:
                    m = mask | 1 << g
                    if m not in index:
                        index[m] = len(order)
                        order.append(m)
                        nxt.append(m)
            if len(order) > MAX_IDEALS:
                raise ModelError(f"the graph has more than {MAX_IDEALS} ways to cut it (too many parallel "
                                 "branches) for exact partitioning; simplify the model first (e.g. onnxsim, or "
                                 "the exporter's optimiser, folds the shape computations exporters spell as nodes), "
                                 "or partition a part of it (onnx.utils.extract_model)")
        level = nxt
    gbits = np.array([[m >> g & 1 for g in range(len(pred))] for m in order], bool).reshape(len(order), len(pred))
    subs = [[index[m & ~(1 << g)] for g in range(len(pred)) if m >> g & 1 and index.get(m & ~(1 << g)) is not None]
            for m in order]
    return gbits[:, group], subs


def _groups(n: int, edges: list[tuple[int, int]], tied: list[tuple[int, int]]) -> list[int]:
    """Group index per node: tied nodes share one, and so do groups on a cycle of the graph of groups
    (a node between two tied ones must run with them)."""
    parent = list(range(n))

    def find(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    merge = list(tied)
    while merge:
        for u, v in merge:
            parent[find(u)] = find(v)
        ancestors = {find(v): 0 for v in range(n)}
        changed = True
        while changed:  # transitive ancestors of every group, to a fixed point
            changed = False
            for u, v in edges:
                gu, gv = find(u), find(v)
                if gu != gv:
                    grown = ancestors[gv] | 1 << gu | ancestors[gu]
                    changed |= grown != ancestors[gv]
                    ancestors[gv] = grown
        merge = [(g, h) for g in ancestors for h in ancestors
                 if g < h and ancestors[g] >> h & 1 and ancestors[h] >> g & 1]
    roots = sorted({find(v) for v in range(n)})
    return [roots.index(find(v)) for v in range(n)]


def solve(p: Problem, tiers: list[Tier], links: list[Link], opts: Options) -> Result:
    """The assignment minimising the objective exactly (module docstring); raises InputError when
    no assignment meets the constraints."""
    if opts.objective not in ("latency", "energy"):
        raise InputError(f"objective must be 'latency' or 'energy', got {opts.objective!r}")
    if not opts.hop_overhead_s >= 0:
        raise InputError(f"the hop overhead must be >= 0 seconds, got {opts.hop_overhead_s!r}")
    if not opts.hop_overhead_per_byte_s >= 0:
        raise InputError(f"the hop overhead per byte must be >= 0 seconds, got {opts.hop_overhead_per_byte_s!r}")
    bits, subs = ideals(p)  # every D_j holds both nodes of a tied pair or neither
    allowed = np.array([0.0 if _allowed(p, row, opts) else np.inf for row in bits])  # on D_1
    best: tuple[float, list[int]] | None = None
    for r in range(len(tiers)):
        for rest in itertools.combinations(range(1, len(tiers)), r):
            chain = [0, *rest]
            path = hops(tiers, links, chain, opts.hop_overhead_s, opts.hop_overhead_per_byte_s)
            if path is None:
                continue
            value, assignment = _solve_chain(p, chain, path, bits, subs, allowed, opts)
            if assignment is not None and (best is None or value < best[0] - 1e-15):
                best = (value, assignment)
    if best is None:
        raise InputError("no assignment meets the constraints (device memory, raw input on the device) "
                         "with the given tiers and links")
    return Result(best[1], evaluate(p, best[1], tiers, links, opts))


def _weights(opts: Options) -> tuple[float, float, float]:
    """(device busy, everything else, per radio byte) weights of the objective."""
    if opts.objective == "latency":
        return 1.0, 1.0, 0.0
    return opts.power.active_w, opts.power.idle_w, opts.power.radio_j_per_byte


def _hop_cost(p: Problem, bits: np.ndarray, src: int, dst: int, spb: float, fixed: float, opts: Options) -> np.ndarray:
    """F_j without compute: every ideal's cost of the hop src -> dst when the ideal runs before it."""
    w_busy, w_wait, w_radio = _weights(opts)
    full = bits.all(axis=1)
    cost = np.where(full, 0.0, w_wait * fixed)  # RTT and hop overhead
    for t, users in enumerate(p.consumers):
        if not users:
            continue
        crosses = ~bits[:, users].all(axis=1)
        if p.producer[t] >= 0:
            crosses &= bits[:, p.producer[t]]
        per = (w_wait * (p.wire[t] * spb + p.dec[dst][t]) + (w_busy if src == 0 else w_wait) * p.enc[src][t]
               + (w_radio * p.wire[t] if src == 0 else 0.0))
        cost += crosses * per
    for t in p.outputs:
        if p.producer[t] >= 0:
            cost += ~bits[:, p.producer[t]] * (p.bytes[t] * (w_wait * spb + (w_radio if src == 0 else 0.0)))
    return cost


def _solve_chain(p: Problem, chain: list[int], path: list, bits: np.ndarray, subs: list, allowed: np.ndarray,
                 opts: Options):
    """Best assignment whose used tiers are within ``chain`` with every middle tier running a node;
    ``allowed`` is infinite on ideals D_1 may not be."""
    w_busy, w_wait, _ = _weights(opts)
    unary = [p.times[k] * (w_busy if k == 0 else w_wait) for k in chain]
    some_after, some_in = ~bits.all(axis=1), bits.any(axis=1)
    fixed = [p.fixed(k) * (w_busy if k == 0 else w_wait) for k in chain]  # middle tiers always run
    h, args = allowed, []
    for j, (spb, fixed_s) in enumerate(path):
        f = bits.astype(float) @ (unary[j] - unary[j + 1]) + _hop_cost(p, bits, chain[j], chain[j + 1], spb, fixed_s, opts)
        if j == len(path) - 1:
            f = f + fixed[-1] * some_after
        if j == 0:
            h = f + allowed + fixed[0] * some_in
        else:
            below, arg = _best_strictly_below(h, subs)
            args.append(arg)
            h = f + below
    if not path:  # device only
        h = np.where(bits.all(axis=1), fixed[0], np.inf) + allowed
    i = int(np.argmin(h))
    value = float(h[i] + unary[-1].sum() + sum(fixed[1:-1]))
    if not np.isfinite(value):
        return value, None
    cuts = [i]
    for arg in reversed(args):
        cuts.append(int(arg[cuts[-1]]))
    cuts.reverse()  # ideal index of D_1 .. D_m
    assignment = [chain[-1]] * len(p.nodes)
    for j in reversed(range(len(cuts))):
        for v in np.flatnonzero(bits[cuts[j]]):
            assignment[v] = chain[j]
    return value, assignment


def _best_strictly_below(h: np.ndarray, subs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """For every ideal, the least h over its proper sub-ideals and which ideal attains it."""
    g, garg = h.copy(), np.arange(len(h))
    below, barg = np.full(len(h), np.inf), np.zeros(len(h), int)
    for i, sub in enumerate(subs):  # ideals are ordered by size: subs come first
        for k in sub:
            if g[k] < below[i]:
                below[i], barg[i] = g[k], garg[k]
        if below[i] < g[i]:
            g[i], garg[i] = below[i], barg[i]
    return below, barg


# ---------------------------------------------------------------- from a model and its profile

@dataclass
class _Graph:
    """The model's nodes split into compute nodes (partitioned) and constant nodes (copied where used)."""

    model: onnx.ModelProto
    names: list[str]
    reads: list[list[str]]
    """What each node reads: its inputs, then the outer tensors its Loop/If bodies read."""
    compute: list[int]
    const_nodes: set[int]
    const_tensors: set[str]
    producer: dict[str, int]
    pos: dict[int, int]
    """Each compute node's position in ``compute`` (the index the Problem and the cut lattice use)."""


def _graph(model: onnx.ModelProto) -> _Graph:
    g = model.graph
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(g.node)]
    nodes = read_graph(model).nodes
    reads = [n.inputs for n in nodes]
    const = {t.name for t in g.initializer} | {""}
    producer = {o: i for i, n in enumerate(g.node) for o in n.output if o}
    const_nodes = set()
    for i, n in enumerate(g.node):
        if all(x in const for x in reads[i]) and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                        for a in n.attribute):
            const_nodes.add(i)
            const.update(n.output)
    live = {id(n) for n in live_nodes(nodes, [o.name for o in g.output])}
    compute = [i for i, n in enumerate(nodes) if id(n) in live and i not in const_nodes]
    if not compute:
        raise ModelError("the model has no node that depends on its inputs: nothing to partition")
    return _Graph(model, names, reads, compute, const_nodes, const - {""}, producer,
                  {v: k for k, v in enumerate(compute)})


def _wire_bytes(tp: dict, compression: str) -> float:
    if compression == "zstd":
        return float(tp["zstd_bytes"])
    if compression in ("fp16", "int8") and tp["dtype"] == "float32":
        return tp["bytes"] / 2 if compression == "fp16" else tp["bytes"] / 4 + INT8_SCALE_BYTES
    return float(tp["bytes"])


def _wiring(gr: _Graph) -> tuple[list[str], dict[str, list[int]], list[tuple[int, int]], list[str], set[str]]:
    """The tensors a cut may carry (raw inputs, compute nodes' outputs that are read or are model
    outputs), the readers of every tensor read (positions in ``gr.compute``), the pairs tied by a shape
    or sequence value (its maker, each reader), the raw inputs and the model outputs."""
    g = gr.model.graph
    pos = gr.pos
    inits = {t.name for t in g.initializer}
    raw = [vi.name for vi in g.input if vi.name not in inits]
    made = [o for i in gr.compute for o in g.node[i].output if o]
    users: dict[str, list[int]] = {}
    for k, i in enumerate(gr.compute):
        for x in dict.fromkeys(gr.reads[i]):
            users.setdefault(x, []).append(k)
    outs = {o.name for o in g.output}
    tensors = [t for t in raw + made if users.get(t) or t in outs]
    shape_values: set[str] = set()  # made by Shape/Size, or from shape values and constants only
    for i in gr.compute:  # in graph order, which ONNX keeps topological
        node = g.node[i]
        read = [x for x in gr.reads[i] if x and x not in gr.const_tensors]
        if node.op_type in ("Shape", "Size") or (node.op_type not in SHAPE_TO_DATA and read
                                                 and all(x in shape_values for x in read)):
            shape_values.update(o for o in node.output if o)
    # a sequence (or optional) value runs with its readers too: parts pass tensors only
    kept = shape_values | {t for t in _non_tensor_values(gr.model) if gr.producer.get(t) in pos}
    tied = [(pos[gr.producer[t]], k) for t in sorted(kept) for k in users.get(t, [])]
    return tensors, users, tied, raw, outs


def _non_tensor_values(model: onnx.ModelProto) -> set[str]:
    """Names of the values shape inference types as sequences, optionals or maps."""
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # custom domains or partial models: no types to go by
        return set()
    return {v.name for v in list(g.value_info) + list(g.output)
            if v.type.WhichOneof("value") not in (None, "tensor_type")}


def check_cuttable(model: onnx.ModelProto) -> None:
    """Raise the ModelError ``solve`` would raise for a graph with too many ways to cut it, from the
    graph alone: before the (slow) profiling."""
    gr = _graph(model)
    tensors, users, tied, _, _ = _wiring(gr)
    cut_lattice(len(gr.compute), [(gr.pos[gr.producer[t]], k) for t in tensors if t in gr.producer
                                  for k in users.get(t, [])], tied)


def build_problem(model: onnx.ModelProto, profile: dict, tiers: list[Tier], compression: str = "none") -> tuple[Problem, _Graph]:
    """The Problem for ``model`` from its profile (``Profile.to_dict()``) and the tiers' speeds or profiles."""
    if compression not in COMPRESSIONS:
        raise InputError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    gr = _graph(model)
    g = model.graph
    for prof in [profile] + [t.profile for t in tiers if t.profile]:
        names = [n["name"] for n in prof["nodes"]]
        if names != gr.names:
            raise InputError(f"profile of model {prof.get('model')!r} does not match this model's nodes; profile it again")
    tensors, users, tied, raw, outs = _wiring(gr)
    pos = gr.pos
    # a tensor the runtime never makes (a rewrite removed its node: the Shape chain that builds a
    # Loop's zero state when the Loop became a GRU) has no profiled size and is never cut: its
    # maker runs with its readers, so every part keeps the subgraph the rewrite needs whole
    unmade = [t for t in tensors if t not in profile["tensors"]]
    missing = [t for t in unmade if t in raw or t in outs]
    if missing:
        raise InputError(f"the profile has no size for the model's inputs or outputs {missing[:5]}: it was made "
                         "from another model; profile this one (without --profile)")
    tp = [profile["tensors"].get(t, UNMADE) for t in tensors]
    tied += [(pos[gr.producer[t]], k) for t in unmade for k in users.get(t, [])]
    if compression == "zstd" and any(x.get("zstd_bytes") is None for x in tp):
        raise InputError("the profile has no zstd sizes (profiled without the zstandard package); "
                         "pip install zstandard and profile again, or choose another compression")

    sources = [(tier.profile, 1.0) if tier.profile else (profile, 1.0 / tier.speed) for tier in tiers]
    times = np.array([[prof["nodes"][i]["time_s"] * scale for i in gr.compute] for prof, scale in sources])

    def codec(prof: dict, scale: float, t: str, side: int) -> float:
        s = prof["tensors"].get(t, {}).get("codec_s", {}).get(compression)
        return s[side] * scale if s and compression != "none" else 0.0

    enc, dec = (np.array([[codec(prof, scale, t, side) for t in tensors] for prof, scale in sources],
                         float).reshape(len(tiers), len(tensors)) for side in (0, 1))
    size = {t: tp_["bytes"] for t, tp_ in profile["tensors"].items()}
    params = [(int(size.get(c) or _init_bytes(g, c)), users[c]) for c in sorted(gr.const_tensors) if c in users]
    work = np.array([sum(size.get(x, 0) for x in set(gr.reads[i]) | set(g.node[i].output)
                         if x and x not in gr.const_tensors) for i in gr.compute], float)
    problem = Problem(
        [gr.names[i] for i in gr.compute], times, tensors,
        [pos[gr.producer[t]] if t in gr.producer else -1 for t in tensors],
        [users.get(t, []) for t in tensors],
        np.array([x["bytes"] for x in tp], float), np.array([_wire_bytes(x, compression) for x in tp], float),
        enc, dec, [k for k, t in enumerate(tensors) if t in outs], params, work,
        np.array([prof.get("overhead_s", 0.0) * scale for prof, scale in sources]), tied)
    return problem, gr


def _init_bytes(g: onnx.GraphProto, name: str) -> int:
    for t in g.initializer:
        if t.name == name:
            return int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return 0


# ---------------------------------------------------------------- the plan directory

@dataclass
class Partition:
    """A solved partitioning of a model: the problem, the choice and the baselines."""

    graph: _Graph
    problem: Problem
    tiers: list[Tier]
    links: list[Link]
    options: Options
    result: Result
    baselines: dict[str, Cost]
    profile: dict


def partition(model: onnx.ModelProto, profile: dict, tiers: list[Tier], links: list[Link],
              options: Options | None = None) -> Partition:
    """Choose the assignment of ``model``'s nodes to ``tiers`` (device first) for ``options``."""
    opts = options or Options()
    check_network(tiers, links)
    problem, gr = build_problem(model, profile, tiers, opts.compression)
    result = solve(problem, tiers, links, opts)
    n = len(problem.nodes)
    baselines = {"device_only": evaluate(problem, [0] * n, tiers, links, opts),
                 "cloud_only": evaluate(problem, [len(tiers) - 1] * n, tiers, links, opts)}
    return Partition(gr, problem, tiers, links, opts, result, baselines, profile)


def check_network(tiers: list[Tier], links: list[Link]) -> None:
    """Tier names unique, links between known tiers, every tier reachable from the device: a typo
    in a link must not silently leave a tier out of the plan."""
    if not tiers:
        raise InputError("give at least one tier (the device)")
    names = [t.name for t in tiers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"tier names must be unique; {twice} given twice")
    for lk in links:
        unknown = [n for n in (lk.src, lk.dst) if n not in names]
        if unknown or lk.src == lk.dst:
            raise InputError(f"link {lk.src}-{lk.dst} must join two of the tiers {names}"
                             + (f"; unknown: {unknown}" if unknown else ""))
    cut_off = [names[k] for k in range(1, len(tiers)) if hops(tiers, links, [0, k]) is None]
    if cut_off:
        raise InputError(f"no link reaches tier(s) {cut_off} from {names[0]!r}: give a link to each tier, "
                         f"e.g. {names[0]}-{cut_off[0]}:100Mbps,10ms")


def write_plan(part: Partition, out_dir: str | os.PathLike, name: str = "model") -> dict:
    """Write one checked ONNX part per tier that runs nodes and plan.json (edgekit.flow/1) to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    p, g, tiers = part.problem, part.graph.model.graph, part.tiers
    a = part.result.assignment
    prod = [a[i] if i >= 0 else -1 for i in p.producer]
    last = [max(a[c] for c in users) if users else -1 for users in p.consumers]
    used = sorted(set(a))
    types = _value_types(part.graph.model)
    sizes = part.profile["tensors"]
    chain = used if used[0] == 0 else [0, *used]
    # model outputs no compute node makes (constants) come back with the last part; raw inputs
    # that are outputs too stay with the caller (FlowSession returns them from its feed)
    constant_outputs = [o.name for o in g.output if o.name in part.graph.const_tensors]
    parts, transfers = [], []
    for sender, k in zip([None, *chain], chain):
        arriving = [t for t in range(len(p.tensors)) if prod[t] < k <= last[t]]
        inputs = [p.tensors[t] for t in arriving]
        if sender is not None:
            transfers.append({"from": tiers[sender].name, "to": tiers[k].name, "tensors": [
                {"name": t, "shape": sizes[t]["shape"], "dtype": sizes[t]["dtype"], "bytes": sizes[t]["bytes"]}
                for t in inputs], "compression": part.options.compression,
                "wire_bytes": float(sum(p.wire[t] for t in arriving))})
        if k not in used:
            continue
        later = [p.tensors[t] for t in range(len(p.tensors)) if prod[t] <= k < last[t]]
        held = [p.tensors[t] for t in p.outputs if prod[t] == k and p.tensors[t] not in later]
        if k == used[-1]:
            held += [o for o in constant_outputs if o not in held]
        nodes = [i for i, tier in zip(part.graph.compute, a) if tier == k]
        model = _part_model(part.graph, nodes, inputs, later + held, types, sizes)
        onnx.save(model, os.path.join(out_dir, f"{tiers[k].name}.onnx"))
        parts.append({"tier": tiers[k].name, "file": f"{tiers[k].name}.onnx", "inputs": inputs, "outputs": later + held})
    cost, base = part.result.cost, part.baselines
    inits = {t.name for t in g.initializer}
    plan = {
        "format": "edgekit.flow/1", "model": name,
        "inputs": [vi.name for vi in g.input if vi.name not in inits],
        "outputs": [o.name for o in g.output],
        "tiers": [{"name": t.name, "speed": _speed(t, part)} for t in tiers],
        "links": [{"from": lk.src, "to": lk.dst, "bandwidth_bps": lk.bandwidth_bps, "rtt_s": lk.rtt_s} for lk in part.links],
        "hop_overhead_s": part.options.hop_overhead_s,
        "hop_overhead_per_byte_s": part.options.hop_overhead_per_byte_s,
        "parts": parts, "transfers": transfers,
        "predicted": {"total_s": cost.latency_s, "compute_s": cost.compute_s, "transfer_s": cost.transfer_s,
                      "objective": part.options.objective, "energy_j": cost.energy_j},
        "baselines": {"device_only_s": _finite(base["device_only"].latency_s),
                      "cloud_only_s": _finite(base["cloud_only"].latency_s),
                      "device_only_j": _finite(base["device_only"].energy_j),
                      "cloud_only_j": _finite(base["cloud_only"].energy_j)},
        "assignment": {tiers[k].name: [n for n, t in zip(p.nodes, a) if t == k] for k in used},
    }
    with open(os.path.join(out_dir, "plan.json"), "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=1)
    return plan


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _speed(tier: Tier, part: Partition) -> float:
    """The speed factor, or for a tier with its own profile its measured speed-up over the profiling machine."""
    if tier.profile:
        return float(sum(n["time_s"] for n in part.profile["nodes"]) / sum(n["time_s"] for n in tier.profile["nodes"]))
    return float(tier.speed)


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Typed value infos of the model's tensors from shape inference (what it can infer)."""
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # custom domains or partial models: fall back to the profile's shapes
        g = model.graph
    inits = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer]
    return {v.name: v for v in inits + list(g.value_info) + list(g.input) + list(g.output)
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}


def _part_model(gr: _Graph, nodes: list[int], inputs: list[str], outputs: list[str],
                types: dict[str, onnx.ValueInfoProto], sizes: dict) -> onnx.ModelProto:
    """The sub-model running ``nodes`` (plus the constant nodes they read) from ``inputs`` to
    ``outputs``; a tensor in both is passed on unchanged (a graph output that is a graph input)."""
    g = gr.model.graph
    keep, todo = set(nodes), [x for i in nodes for x in gr.reads[i]] + list(outputs)
    while todo:
        x = todo.pop()
        i = gr.producer.get(x)
        if i is not None and i in gr.const_nodes and i not in keep:
            keep.add(i)
            todo.extend(gr.reads[i])
    read = {x for i in keep for x in gr.reads[i]} | set(outputs)  # an output may be an initializer
    graph = helper.make_graph(
        [g.node[i] for i in sorted(keep)], f"{g.name}_part",
        [_typed(x, types, sizes) for x in inputs], [_typed(x, types, sizes) for x in outputs],
        [t for t in g.initializer if t.name in read])
    model = helper.make_model(graph, opset_imports=list(gr.model.opset_import), producer_name="edgekit.partition")
    model.ir_version = gr.model.ir_version
    model.functions.extend(gr.model.functions)
    onnx.checker.check_model(model)
    return model


def _typed(name: str, types: dict, sizes: dict) -> onnx.ValueInfoProto:
    if name in types:
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(types[name])
        return vi
    tp = sizes[name]  # shape inference could not type it (after a custom op): the profiled rank, dims
    # left unknown, as the profile's sizes hold only for the profiled input dims
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(tp["dtype"])),
                                         [None] * len(tp["shape"]))


def summary(plan: dict) -> str:
    """A readable account of a plan.json: nodes per tier, predicted times, baselines."""
    ms = lambda s: "n/a" if s is None else f"{s * 1e3:.3f} ms"  # noqa: E731
    pred = plan["predicted"]
    first, last = plan["tiers"][0]["name"], plan["tiers"][-1]["name"]  # the baselines' tiers
    lines = [f"plan for {plan['model']} ({pred['objective']} objective):"]
    for tier, names in plan["assignment"].items():
        span = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
        lines.append(f"  {tier:16s} {ms(pred['compute_s'].get(tier, 0.0)):>12s}  runs {len(names)} node(s): {span}")
    for tr in plan["transfers"]:
        key = f"{tr['from']}->{tr['to']}"
        names = ", ".join(f"{t['name']} {t['bytes']} B" for t in tr["tensors"])
        lines.append(f"  {key:16s} {ms(pred['transfer_s'].get(key)):>12s}  sends {names} "
                     f"({tr['compression']}: {tr['wire_bytes']:.0f} B on the wire)")
    base = plan["baselines"]
    if plan.get("hop_overhead_s") or plan.get("hop_overhead_per_byte_s"):
        lines.append(f"  every transfer includes {ms(plan.get('hop_overhead_s', 0.0))} + "
                     f"{plan.get('hop_overhead_per_byte_s', 0.0) * 1e9:.3f} us/KB of request handling (hop overhead)")
    lines.append(f"  predicted total {ms(pred['total_s'])} (device energy {pred['energy_j'] * 1e3:.3f} mJ); "
                 f"{first} only {ms(base['device_only_s'])}, {last} only {ms(base['cloud_only_s'])}")
    if pred["objective"] == "energy":
        mj = lambda j: "n/a" if j is None else f"{j * 1e3:.3f} mJ"  # noqa: E731
        lines.append(f"  device energy: {first} only {mj(base['device_only_j'])}, {last} only {mj(base['cloud_only_j'])}")
    return "\n".join(lines)
