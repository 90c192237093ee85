"""Model statistics for `edgekit info`: I/O, op counts, parameters, MACs, unsupported ops.

Dynamic input dims are made concrete (1, or a value given per dim name) so shape inference can
size every Conv/Gemm/MatMul; the same concrete shapes give random inputs to `run` and `bench`.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx

from .errors import EdgekitError, InputError
from .ir import Node, ValueInfo, read_graph


def concrete_shape(vi: ValueInfo, dims: dict[str, int]) -> tuple[int, ...]:
    """The shape of input ``vi`` with symbolic or unknown dims set from ``dims`` (default 1)."""
    return tuple(d if isinstance(d, int) and d > 0 else dims.get(d, 1) if isinstance(d, str) else 1
                 for d in (vi.shape or ()))


def checked_dims(inputs: list[ValueInfo], dims: dict[str, int] | None) -> dict[str, int]:
    """``dims`` once every name in it is a symbolic dim of ``inputs`` (a typo would silently change
    nothing): InputError naming the model's dims otherwise."""
    names = {d for vi in inputs for d in (vi.shape or ()) if isinstance(d, str)}
    unknown = sorted(set(dims or {}) - names)
    if unknown:
        raise InputError(f"--dim {', '.join(unknown)}: not a dynamic dimension of the model's inputs "
                         f"(they have {', '.join(sorted(names)) if names else 'none'})")
    return dict(dims or {})


def input_shapes(proto: onnx.ModelProto, dims: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every graph input (initializers excluded)."""
    inputs = read_graph(proto).inputs
    dims = checked_dims(inputs, dims)
    return {vi.name: concrete_shape(vi, dims) for vi in inputs}


def random_inputs(proto: onnx.ModelProto, dims: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs: standard normal floats, integers in [0, 10), random booleans.

    Raises InputError, before drawing anything, when the inputs would exceed the plan's memory cap."""
    from .runtimes.plan import MAX_PLAN_BYTES

    rng = np.random.default_rng(seed)
    inputs = read_graph(proto).inputs
    dims = checked_dims(inputs, dims)
    shapes = {vi.name: concrete_shape(vi, dims) for vi in inputs}
    nbytes = sum(math.prod(shapes[vi.name]) * 8 for vi in inputs)  # drawn as float64 or int64 first
    if nbytes > MAX_PLAN_BYTES:
        raise InputError(f"random inputs of shapes {shapes} need {nbytes / 2**30:.1f} GiB, more than "
                         f"{MAX_PLAN_BYTES / 2**30:.1f} GiB; give smaller --dim values")
    feeds = {}
    for vi in inputs:
        shape, dtype = shapes[vi.name], vi.dtype or np.dtype(np.float32)
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            feeds[vi.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


@dataclass
class ModelStats:
    """What `edgekit info` prints."""

    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    opset: int
    op_counts: Counter
    parameters: int
    parameter_bytes: int
    macs: Counter
    dims: dict[str, int]
    binary_parameters: int = 0
    binary_macs: Counter = field(default_factory=Counter)
    unsupported: list[str] = field(default_factory=list)


def model_stats(proto: onnx.ModelProto, dims: dict[str, int] | None = None) -> ModelStats:
    """Statistics of a loaded model; unsupported ops are listed, never raised."""
    graph = read_graph(proto)
    dims = checked_dims(graph.inputs, dims)
    for vi in graph.inputs:
        for d in vi.shape or ():
            if isinstance(d, str):
                dims.setdefault(d, 1)
    floats = [a for a in graph.constants.values() if a.dtype.kind == "f"]
    binary = {n.inputs[1]: _binary_weights(n, graph.constants[n.inputs[1]].shape)
              for n in graph.nodes if _is_binary(n) and n.inputs[1] in graph.constants}
    unsupported, planned = _plan(proto, dims)
    return ModelStats(
        inputs=graph.inputs, outputs=graph.outputs, opset=graph.opset,
        op_counts=Counter(n.op_type if not n.domain else f"{n.domain}::{n.op_type}" for n in graph.nodes),
        parameters=sum(a.size for a in floats) + sum(binary.values()), binary_parameters=sum(binary.values()),
        parameter_bytes=sum(a.nbytes for a in graph.constants.values()),
        macs=macs(proto, dims) if planned is None else _planned_macs(*planned),
        binary_macs=Counter() if planned is None else _binary_macs(*planned), dims=dims, unsupported=unsupported)


def _is_binary(node: Node) -> bool:
    """A packed binary layer (BinaryConv / BinaryGemm of edgekit's domain)."""
    from .converters.binarize import BINARY_OPS, DOMAIN  # (here: runtimes import this module, never converters)

    return node.domain == DOMAIN and node.op_type in BINARY_OPS


def _binary_weights(node: Node, w_shape: tuple[int, ...]) -> int:
    """Weights of a BinaryConv/BinaryGemm: one bit each, ``channels`` valid bits in every run of
    ceil(channels / 64) uint64 words of each of the M rows of its packed [M, words] weights."""
    channels = int(node.attrs.get("channels", 0))
    return w_shape[0] * (w_shape[1] // -(-channels // 64) * channels) if channels > 0 else 0


def _binary_macs(nodes: list, tensors: dict) -> Counter:
    """XNOR-popcount multiply-accumulates of the plan's binary layers: output positions x weights (a
    packed output holds all channels of a position in its last axis)."""
    counts: Counter = Counter()
    for n in nodes:
        if _is_binary(n) and n.inputs[1] in tensors and n.outputs[0] in tensors:
            w, out = tensors[n.inputs[1]].shape, tensors[n.outputs[0]]
            positions = math.prod(out.shape[:-1]) if out.dtype == np.uint64 else math.prod(out.shape) // w[0]
            counts[n.op_type] += positions * _binary_weights(n, w)
    return counts


def _static_model(proto: onnx.ModelProto, dims: dict[str, int]) -> onnx.ModelProto:
    """A copy of the model whose graph inputs have concrete dims."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    inits = {t.name for t in model.graph.initializer}
    shapes = input_shapes(proto, dims)
    for vi in model.graph.input:
        if vi.name in inits or not vi.type.tensor_type.HasField("shape"):
            continue
        for d, value in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
            d.Clear()
            d.dim_value = value
    return model


def macs(proto: onnx.ModelProto, dims: dict[str, int]) -> Counter:
    """Multiply-accumulates per op type for Conv, ConvTranspose, Gemm and MatMul, from inferred shapes."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_static_model(proto, dims), data_prop=True)
    except Exception:  # a model shape inference cannot handle simply gets no MAC count
        return Counter()
    shapes: dict[str, tuple] = {t.name: tuple(t.dims) for t in inferred.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in t.shape.dim)
    counts: Counter = Counter()
    for node in inferred.graph.node:
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        _count(counts, node.op_type, [shapes.get(x) for x in node.input],
               shapes.get(node.output[0]) if node.output else None, trans_a)
    return counts


def _count(counts: Counter, op: str, ins: list, out: tuple | None, trans_a: int) -> None:
    """Add one node's multiply-accumulates (Conv, ConvTranspose, Gemm, MatMul) when its shapes are known."""
    if out is None or len(ins) < 2 or ins[0] is None or ins[1] is None:
        return
    if op == "Conv":
        counts["Conv"] += int(np.prod(out)) * int(np.prod(ins[1][1:]))
    elif op == "ConvTranspose":
        counts["ConvTranspose"] += int(np.prod(ins[0])) * int(np.prod(ins[1][1:]))
    elif op == "Gemm":
        counts["Gemm"] += int(np.prod(out)) * ins[0][0 if trans_a else 1]
    elif op == "MatMul":
        counts["MatMul"] += int(np.prod(out)) * ins[0][-1]


def _planned_macs(nodes: list, tensors: dict[str, np.ndarray]) -> Counter:
    """Multiply-accumulates of the fused nodes of an edgekit plan, whose shapes are known everywhere
    (also past custom ops, which ONNX shape inference stops at)."""
    counts: Counter = Counter()
    shapes = {name: t.shape for name, t in tensors.items()}
    for n in nodes:
        _count(counts, n.op_type, [shapes.get(x) for x in n.inputs], shapes.get(n.outputs[0]) if n.outputs else None,
               int(n.attrs.get("transA", 0)))
    return counts


def _plan(proto: onnx.ModelProto, dims: dict[str, int]) -> tuple[list[str], tuple | None]:
    """Human-readable lines for nodes edgekit cannot run (ops missing from the registry, else the forms
    a plan for these input dims refuses), and (fused nodes, tensors) of the plan when it builds. Ops
    are checked after the graph rewrites, as a session checks them (a rewritten node need not be run)."""
    from .runtimes.plan import MAX_PLAN_BYTES, prepare, specialize

    shapes = input_shapes(proto, dims)
    try:
        prepared = prepare(read_graph(proto))
        if any(math.prod(shape) > MAX_PLAN_BYTES for shape in shapes.values()):  # (before sizes overflow int64)
            return [f"the plan for dims {dims} fails: inputs of shapes {shapes} exceed {MAX_PLAN_BYTES / 2**30:.1f} GiB"], None
        plan = specialize(prepared, shapes)
    except EdgekitError as exc:
        unsupported = getattr(exc, "unsupported", None)
        if unsupported is None:
            return [f"the plan for dims {dims} fails: {exc}"], None
        return _unsupported_lines(unsupported), None
    return [], (prepared.nodes, plan.tensors)


def _unsupported_lines(unsupported: list[tuple]) -> list[str]:
    """One line per op that no builder implements (with its node count and first names), then one per
    node whose form its builder refuses, with the reason."""
    from .runtimes.ops import BUILDERS

    missing: dict[str, list[str]] = {}
    refused = []
    for name, op, domain, _, why in unsupported:
        if (domain, op) not in BUILDERS and not why:
            missing.setdefault(f"{domain + '::' if domain else ''}{op}", []).append(name)
        else:
            refused.append(f"{op}: {why or 'not implemented'} (node {name})")
    return [f"{op}: not implemented ({len(names)} node(s): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            for op, names in sorted(missing.items())] + refused


def _shape(vi: ValueInfo) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in vi.shape) + "]" if vi.shape is not None else "?"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def format_stats(stats: ModelStats) -> str:
    """The text `edgekit info` prints."""
    lines = [f"opset {stats.opset}", "inputs:"]
    lines += [f"  {v.name}: {v.dtype} {_shape(v)}" for v in stats.inputs]
    lines += ["outputs:"] + [f"  {v.name}: {v.dtype} {_shape(v)}" for v in stats.outputs]
    lines.append(f"ops: {sum(stats.op_counts.values())} nodes")
    lines += [f"  {op:24s} {n}" for op, n in sorted(stats.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    binary = f"{stats.binary_parameters:,} of them binary, 1 bit each; " if stats.binary_parameters else ""
    lines.append(f"parameters: {stats.parameters:,} ({binary}{stats.parameter_bytes / 1024:.1f} KiB of initializers)")
    at = f" at {', '.join(f'{k}={v}' for k, v in stats.dims.items())}" if stats.dims else ""
    total = sum(stats.macs.values())
    detail = ", ".join(f"{op} {_si(n)}" for op, n in sorted(stats.macs.items()))
    lines.append(f"MACs{at}: {_si(total)}" + (f" ({detail})" if detail else ""))
    if stats.binary_macs:
        detail = ", ".join(f"{op} {_si(n)}" for op, n in sorted(stats.binary_macs.items()))
        lines.append(f"binary MACs (XNOR-popcount){at}: {_si(sum(stats.binary_macs.values()))} ({detail})")
    if stats.unsupported:
        lines.append(f"unsupported by edgekit: {len(stats.unsupported)}")
        lines += [f"  {u}" for u in stats.unsupported]
    else:
        lines.append("unsupported by edgekit: none")
    return "\n".join(lines)

