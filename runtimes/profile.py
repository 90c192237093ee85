"""Per-node latency and tensor sizes of a model on edgekit's runtime, the data of the flow partitioner.

Each node of the ONNX graph gets the median time of its plan step over ``repeat`` runs (or the
fastest, ``statistic="min"``: the undisturbed time, robust to other load on the machine). Nodes the
plan fused away (BatchNormalization and activations folded into a Conv/Gemm/pool) cost 0 and name
the surviving node, which carries the fused time; a node a rewrite made (the GRU a Loop over a GRU
cell runs as) gives its time to the original node whose output it computes (the Loop); reshapes
that became views, nodes folded into constants, dead nodes and nodes a rewrite removed cost 0
(the tensors of the last two are never made, so they have no profile). Every tensor gets its shape, dtype and byte size, its zstd size
on the profiled data, and the time to encode and decode it with each transfer codec (fp16, int8
with one float32 scale, zstd level 3), and the model gets the fixed time an ``InferenceSession.run``
call adds to its nodes (input and output copies). A ``Profile`` round-trips through JSON, the form
``converters/partition.py`` reads (``Profile.to_dict()``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from edgekit.errors import InputError
from edgekit.ir import read_graph
from edgekit.model import ModelSource, load_model
from edgekit.stats import concrete_shape

from .flow.client import compress_tensors, restore_tensors
from .session import InferenceSession

FORMAT = "edgekit.profile/1"
ZSTD_LEVEL = 3
CODEC_REPEAT = 5
STATISTICS = {"median": np.median, "min": np.min}


def _tensor_codec(codec: str) -> Callable:
    """fp16 or symmetric per-tensor int8 exactly as the flow's sender and receiver apply them."""
    def encode(a: np.ndarray) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        sent, params = compress_tensors({"t": a}, codec)
        return sent["t"], lambda: restore_tensors(sent, params, {"t": a.dtype})["t"]
    return encode


def _zstd(a: np.ndarray) -> tuple[bytes, Callable[[], np.ndarray]]:
    import zstandard

    blob = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(np.ascontiguousarray(a).tobytes())
    return blob, lambda: np.frombuffer(zstandard.ZstdDecompressor().decompress(blob), a.dtype).reshape(a.shape)


HAVE_ZSTD = importlib.util.find_spec("zstandard") is not None  # optional: zstd sizes need it

# codec -> encode(a) returning (payload, decode); fp16 and int8 apply to float32 tensors only.
CODECS: dict[str, Callable] = {"fp16": _tensor_codec("fp16"), "int8": _tensor_codec("int8"), "zstd": _zstd}


def codec_round_trip(a: np.ndarray, codec: str) -> np.ndarray:
    """What the receiver gets when ``a`` is sent with ``codec`` (lossy for fp16 and int8)."""
    if codec == "none" or (codec in ("fp16", "int8") and a.dtype != np.float32):
        return a
    return CODECS[codec](a)[1]()


@dataclass
class NodeProfile:
    """One ONNX node: ``kind`` is kernel (timed), fused (into ``fused_into``), free (view or
    folded constant) or dead (reaches no output, or a rewrite removed it)."""

    name: str
    op_type: str
    time_s: float
    kind: str
    fused_into: str | None = None


@dataclass
class TensorProfile:
    """Shape, dtype and bytes of a tensor; zstd size and codec (encode, decode) seconds measured here."""

    shape: list[int]
    dtype: str
    bytes: int
    zstd_bytes: int | None = None
    codec_s: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Profile:
    """What the partitioner needs to know about a model on the profiling machine: ``plan_s`` is the
    median of whole plan runs, ``overhead_s`` what an ``InferenceSession.run`` call adds to one."""

    model: str
    machine: str
    repeat: int
    inputs: dict[str, list[int]]
    outputs: list[str]
    plan_s: float
    nodes: list[NodeProfile]
    tensors: dict[str, TensorProfile]
    overhead_s: float = 0.0
    statistic: str = "median"  # of the repeats, for node times and plan_s: median or min
    format: str = FORMAT

    @property
    def input_bytes(self) -> int:
        """Size of the raw input (all graph inputs)."""
        return sum(self.tensors[n].bytes for n in self.inputs)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        if d.get("format") != FORMAT:
            raise InputError(f"not an edgekit profile (format {d.get('format')!r}, expected {FORMAT!r})")
        return cls(d["model"], d["machine"], d["repeat"], d["inputs"], d["outputs"], d["plan_s"],
                   [NodeProfile(**n) for n in d["nodes"]],
                   {k: TensorProfile(**t) for k, t in d["tensors"].items()}, d.get("overhead_s", 0.0),
                   d.get("statistic", "median"), d["format"])

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read profile {os.fspath(path)!r}: {exc}") from None


def profile_model(model: ModelSource, dims: dict[str, int] | None = None, repeat: int = 20, warmup: int = 2,
                  seed: int = 0, name: str | None = None, statistic: str = "median") -> Profile:
    """Profile ``model`` on this machine (dynamic input dims from ``dims``, default 1) on seeded
    standard-normal float inputs; ``statistic`` of the repeats: median or min (see module docstring)."""
    if statistic not in STATISTICS:
        raise InputError(f"statistic must be one of {sorted(STATISTICS)}, got {statistic!r}")
    stat = STATISTICS[statistic]
    proto = load_model(model)
    original = read_graph(proto)  # the session fuses a graph of its own: ``original`` stays intact
    shapes = {vi.name: concrete_shape(vi, dims or {}) for vi in original.inputs}
    session = InferenceSession(proto)
    plan = session.plan(tuple(shapes.values()))  # the plan the session's run uses: compiled once
    prep = session.prepared  # the fused nodes that plan.step_nodes are
    rng = np.random.default_rng(seed)
    for vi in original.inputs:
        buf = plan.input_buffers[vi.name]
        buf[...] = rng.standard_normal(buf.shape) if buf.dtype.kind == "f" else rng.integers(0, 10, buf.shape)

    values = _capture(plan, prep.nodes)
    for _ in range(warmup):
        plan.execute()
    times = np.empty((repeat, len(plan.steps)))
    clock = time.perf_counter_ns
    for r in range(repeat):
        for i, (fn, args) in enumerate(plan.steps):
            t0 = clock()
            fn(*args)
            times[r, i] = clock() - t0
    step_s = {id(n): float(t) * 1e-9 for n, t in zip(plan.step_nodes, stat(times, axis=0))}
    feeds = {k: v.copy() for k, v in plan.input_buffers.items()}
    for _ in range(warmup):
        session.run(None, feeds)
    whole, calls = [], []
    for _ in range(repeat):
        t0 = clock()
        plan.execute()
        t1 = clock()
        session.run(None, feeds)
        whole.append(t1 - t0)
        calls.append(clock() - t1)
    overhead = max(0.0, (min(calls) - min(whole)) * 1e-9)  # minima: robust to other load on the machine

    nodes, survivor_of = _attribute(original, prep.nodes, plan.step_nodes, step_s)
    tensors = {}
    for tname in [vi.name for vi in original.inputs] + [o for n in original.nodes for o in n.outputs if o]:
        a = values.get(tname)
        if a is None and tname in survivor_of:  # fused away: same shape and dtype as the fused output
            a = values.get(survivor_of[tname])
        if a is not None:
            tensors[tname] = _tensor_profile(a)
    return Profile(name or proto.graph.name or "model", f"{platform.machine()} {platform.processor()}".strip(),
                   repeat, {k: list(v) for k, v in shapes.items()}, [o.name for o in original.outputs],
                   float(stat(whole)) * 1e-9, nodes, tensors, overhead, statistic)


def _capture(plan, prepared_nodes: list) -> dict[str, np.ndarray]:
    """Copies of every tensor's value, taken step by step (buffers are reused by liveness)."""
    values = {k: v.copy() for k, v in plan.input_buffers.items()}
    stepped = {id(n) for n in plan.step_nodes}
    steps = iter(zip(plan.step_nodes, plan.steps))
    for node in prepared_nodes:
        if id(node) in stepped:
            _, (fn, args) = next(steps)
            fn(*args)
        for o in node.outputs:
            if o and o in plan.tensors and o not in values:
                values[o] = plan.tensors[o].copy()
    return values


def _attribute(original, prepared: list, step_nodes: list, step_s: dict) -> tuple[list[NodeProfile], dict[str, str]]:
    """Per original node: its step's time, or 0 when fused, free or dead; and fused tensor -> fused output."""
    producer = {o: i for i, n in enumerate(original.nodes) for o in n.outputs if o}
    by_name = {n.name: i for i, n in enumerate(original.nodes) if n.name}
    step_s = _carry_forward(prepared, producer, by_name, step_s)
    live = {producer[o] for p in prepared for o in p.outputs if o in producer}
    by_index: dict[int, NodeProfile] = {}
    survivor_of: dict[str, str] = {}
    renamed = {o for p in prepared for o in p.outputs if o and o not in producer}
    for p in prepared:
        out = next(o for o in p.outputs if o)
        if p.inputs and p.inputs[0] in renamed and p.name in by_name:  # the moved Squeeze: its own node
            by_index[by_name[p.name]] = NodeProfile(p.name, p.op_type, step_s.get(id(p), 0.0),
                                                    "kernel" if id(p) in step_s else "free")
            continue
        if out not in producer:  # a tensor a rewrite named: a Squeeze moved after the Conv chain it followed
            _attribute_renamed(original, p, next((q for q in prepared if out in q.inputs), None), step_s, by_name,
                               by_index, survivor_of)
            live.update(by_index)
            continue
        chain = [producer[out]]
        residuals = set(p.inputs[3:]) if p.op_type == "Conv" else set()  # Adds fused into the Conv
        while not _is_head(original.nodes[chain[-1]], p, residuals):
            # back along the first input that is not a fused residual (Add(R, conv) lists R first);
            # no head within 8 nodes: p is not a fusion (a rewrite's last node, such as the Squeeze
            # after a Loop made a GRU), and only the node making its output is p's
            prev = next((x for x in original.nodes[chain[-1]].inputs if x not in residuals), "")
            if prev not in producer or len(chain) == 8:
                chain = chain[:1]
                break
            chain.append(producer[prev])
        head = original.nodes[chain[-1]]
        timed = id(p) in step_s
        by_index[chain[-1]] = NodeProfile(head.name, head.op_type, step_s.get(id(p), 0.0), "kernel" if timed else "free")
        for i in chain[:-1]:
            live.add(i)
            by_index[i] = NodeProfile(original.nodes[i].name, original.nodes[i].op_type, 0.0, "fused", head.name)
        for i in chain[1:]:
            for o in original.nodes[i].outputs:
                survivor_of[o] = out
    nodes = [by_index.get(i) or NodeProfile(n.name, n.op_type, 0.0, "dead") for i, n in enumerate(original.nodes)]
    return nodes, survivor_of


def _carry_forward(prepared: list, producer: dict, by_name: dict, step_s: dict) -> dict:
    """Step times with the time of every node a rewrite made (it makes no original tensor and has no
    original name, such as the GRU a Loop over a GRU cell becomes) moved on to the node reading its
    output, until a node that makes an original tensor carries it (the Squeeze making the Loop's output)."""
    carried = dict(step_s)
    for k, p in enumerate(prepared):
        made = [o for o in p.outputs if o]
        if id(p) not in carried or any(o in producer for o in made) or any(s in by_name for s in p.name.split("+")):
            continue
        reader = next((q for q in prepared[k + 1:] if set(made) & set(q.inputs)), None)
        if reader is not None:
            carried[id(reader)] = carried.get(id(reader), 0.0) + carried.pop(id(p))
    return carried


def _attribute_renamed(original, p, moved, step_s: dict, by_name: dict, by_index: dict, survivor_of: dict) -> None:
    """Attribute prepared node ``p`` whose output a rewrite named, read by ``moved`` (the Squeeze it
    precedes now): ``p``'s name joins the original names it replaces, head first, and their tensors
    (the Squeeze's old input and output among them) survive as ``moved``'s output, of their size."""
    chain = [by_name[s] for s in reversed(p.name.split("+")) if s in by_name]
    if not chain:
        return
    head = original.nodes[chain[-1]]
    by_index[chain[-1]] = NodeProfile(head.name, head.op_type, step_s.get(id(p), 0.0),
                                      "kernel" if id(p) in step_s else "free")
    for i in chain[:-1]:
        by_index[i] = NodeProfile(original.nodes[i].name, original.nodes[i].op_type, 0.0, "fused", head.name)
    if moved is not None:
        final = moved.outputs[0]
        squeeze = [by_name[moved.name]] if moved.name in by_name else []
        for i in chain + squeeze:
            survivor_of.update({o: final for o in original.nodes[i].outputs if o and o != final})


def _is_head(node, p, residuals: set[str]) -> bool:
    """Whether original ``node`` is the head of prepared node ``p``: the same first input (and, with a
    fused residual, the same op: Add(x, Conv(x)) reads the Conv's input too)."""
    return node.inputs[:1] == p.inputs[:1] and (not residuals or node.op_type == p.op_type)


def _tensor_profile(a: np.ndarray) -> TensorProfile:
    tp = TensorProfile(list(a.shape), a.dtype.name, int(a.nbytes))
    for codec, encode in CODECS.items():
        if (codec != "zstd" and a.dtype != np.float32) or (codec == "zstd" and not HAVE_ZSTD):
            continue
        enc, dec = [], []
        for _ in range(CODEC_REPEAT):
            t0 = time.perf_counter()
            payload, decode = encode(a)
            t1 = time.perf_counter()
            decode()
            dec.append(time.perf_counter() - t1)
            enc.append(t1 - t0)
        tp.codec_s[codec] = [float(np.median(enc)), float(np.median(dec))]
        if codec == "zstd":
            tp.zstd_bytes = len(payload)
    return tp
