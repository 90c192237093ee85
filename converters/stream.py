"""StreamiNNC: turn a window CNN into a streaming model that computes only the new columns of every
layer per hop (Kechris et al., "Don't Think It Twice: Exploit Shift Invariance for Efficient
Online Streaming Inference of CNNs", AAAI-25, arXiv 2408.03223).

A window model f = g(h(x)) on (N, C, L) windows taken every ``hop`` samples is split into the
convolutional feature extractor h, streamed, and the head g, which runs every hop on a FIFO of the
last window's worth of h's output (the window's feature map). Streamed features equal h run on the
whole stream so far ("signal padding": layers see their true past, zeros only at the stream
start), so a network without zero padding gives exactly window inference on the last L samples,
and non-causal 'same' padding becomes a fixed output delay (the look-ahead it reads, see
docs/streaming.md, "Output delay"). The result is a standard-op ONNX step model with explicit
state inputs/outputs (one call = one hop) plus the metadata a runtime needs (key
``edgekit.stream``, see docs/streaming.md).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import ModelError
from edgekit.ir import live_nodes
from edgekit.metadata import STREAM_KEY
from edgekit.model import ModelSource, load_model, opset_version

from .naming import layer_name
from .stream_graph import StateSpec, StepGraph, finish_step_model
from .stream_head import add_head
from .stream_layers import RULES, Geo, LayerInfo, Stream, mixes_time
from .stream_report import StreamReport, report

__all__ = ["HeadInput", "LayerInfo", "METADATA_KEY", "StateSpec", "StreamReport", "StreamingModel", "report", "to_streaming"]

METADATA_KEY = STREAM_KEY  # the step-model metadata key, exported for users


@dataclass(frozen=True)
class HeadInput:
    """A tensor the head reads: its stride (samples per column), width (columns per window) and the
    number of columns at its left/right edge that depend on the window's zero padding."""

    stride: int
    width: int
    edges: tuple[int, int]


@dataclass
class StreamingModel:
    """The result of ``to_streaming``.

    ``step_model`` maps (``input``: (N, C, hop) new samples, every ``states[i].input``) to
    (``outputs`` of the head, every ``states[i].output``). Outputs of the first ``warmup_hops``
    hops are not those of a full window and are to be dropped; from then on, the outputs of the
    hop ending at sample T equal window inference on samples [T - delay - window, T - delay)
    (exactly for networks without zero padding, where delay is 0).

    ``split`` lists the tensors the head reads (``head_inputs`` gives their geometry), ``layers``
    what each streamed layer computes per hop, ``window_model`` the model that was converted.
    """

    step_model: onnx.ModelProto
    input: str
    outputs: list[str]
    states: list[StateSpec]
    hop: int
    window: int
    delay: int
    warmup_hops: int
    channels: int
    batch: int | str
    dtype: np.dtype
    split: list[str]
    layers: list[LayerInfo]
    head_inputs: dict[str, HeadInput]
    window_model: onnx.ModelProto = field(repr=False)

    def initial_states(self, batch: int | None = None) -> dict[str, np.ndarray]:
        """State input name -> its value at the start of a stream."""
        n = batch if batch is not None else (self.batch if isinstance(self.batch, int) else 1)
        return {s.input: s.initial(n) for s in self.states}


def to_streaming(model: ModelSource, hop: int, split: str | list[str] | None = None,
                 window: int | None = None) -> StreamingModel:
    """Convert the window CNN ``model`` (input (N, C, L)) into a step model advancing ``hop`` samples.

    ``split`` names the tensor(s) where the head starts; by default the head starts at the first
    op that mixes the whole time axis (global pooling, Flatten/Reshape, Gemm/MatMul, a Reduce or
    Softmax over time ...). ``window`` gives L when the model's time dim is dynamic. Raises
    ModelError naming the layer when the model cannot stream.
    """
    proto = load_model(model)
    x, batch, channels, length, dtype = _window_input(proto, window)
    if not isinstance(hop, (int, np.integer)) or isinstance(hop, bool) or hop < 1:
        raise ModelError(f"hop must be a positive whole number of samples (an int), got {hop!r}")
    hop = int(hop)
    if length % hop:
        raise ModelError(f"the window of {length} samples (the last axis of input {x!r} ({batch}, {channels}, "
                         f"{length}): time must be last, as (N, C, L)) is not a multiple of the hop {hop}; pick a "
                         f"hop that divides {length}")
    static_nodes = _static_nodes(proto.graph)
    consts = _constants(proto, static_nodes)
    fixed = _with_input_shape(proto, x, [batch, channels, length], static_nodes, consts)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True)
    except Exception as exc:
        raise ModelError(f"shape inference failed on the window model: {str(exc).splitlines()[0]}") from None
    shapes, dtypes = _shapes(inferred, x, (batch, channels, length), dtype)
    opset = opset_version(proto)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    taken = {x} | {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.initializer}
    taken |= {n.name for n in proto.graph.node} | {o.name for o in proto.graph.output}
    g = StepGraph(taken, opset, batch)
    ctx = Stream(g, hop, opset, shapes, dtypes, consts, consumers, {})
    splits = [split] if isinstance(split, str) else list(split or [])
    extractor, head = _classify(ctx, proto.graph, x, splits, static_nodes)
    boundaries = _boundaries(proto.graph, x, extractor, head)
    if boundaries == [x]:
        first = head[0] if head else None
        raise ModelError(f"nothing to stream: the head starts at the input"
                         + (f" (layer {layer_name(first)!r}, {first.op_type})" if first else ""))
    ctx.block_names.update({t: g.name(f"{t}.block") for t in boundaries if t != x})

    for n in static_nodes:
        g.add(n)
    ctx.geo[x] = Geo(x, 1, 0, length, channels, dtype)
    for n in extractor:
        rule = RULES.get(n.op_type) if n.domain in ("", "ai.onnx") else None
        if rule is None:
            hint = "; pass split= naming a tensor before it so it runs in the head" if not splits else ""
            raise ModelError(f"layer {layer_name(n)!r} ({n.op_type}) cannot stream: it is neither a per-column op "
                             f"nor a 1-D convolution or pooling{hint}")
        rule(ctx, n)

    delay, warmup, fifo_names = _fifos(ctx, boundaries, x, length)
    heads = {t: HeadInput(ctx.geo[t].stride, ctx.geo[t].width, ctx.geo[t].edges) for t in boundaries}
    add_head(ctx, head, fifo_names, {o.name for o in proto.graph.output})
    step = _assemble(proto, g, x, dtype, channels, hop)
    meta = {"input": x, "outputs": [o.name for o in proto.graph.output], "hop": hop, "window": length,
            "delay": delay, "warmup_hops": warmup, "channels": channels,
            "states": [{"input": s.input, "output": s.output, "shape": list(s.shape), "dtype": s.dtype,
                        "fill": s.fill if isinstance(s.fill, bool) else float(s.fill), "layer": s.layer,
                        "kind": s.kind, "batched": s.batched} for s in g.states]}
    helper.set_model_props(step, {METADATA_KEY: json.dumps(meta)})
    return StreamingModel(step, x, meta["outputs"], list(g.states), hop, length, delay, warmup, channels, batch,
                          dtype, boundaries, ctx.layers, heads, proto)


def _window_input(proto: onnx.ModelProto, window: int | None) -> tuple[str, int | str, int, int, np.dtype]:
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"a streaming model takes one (N, C, L) signal input; this model has "
                         f"{[i.name for i in inputs]}")
    vi = inputs[0]
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    if len(dims) != 3:
        raise ModelError(f"input {vi.name!r} must be (N, C, L) to stream, it has shape {dims}")
    batch, channels, length = dims
    if not isinstance(channels, int) or channels < 1:
        raise ModelError(f"input {vi.name!r} needs a static channel count, got {channels!r}")
    if window is not None:
        if isinstance(length, int) and length > 0 and length != window:
            raise ModelError(f"window={window} disagrees with the model's input length {length}")
        length = int(window)
    if not isinstance(length, int) or length < 1:
        raise ModelError(f"input {vi.name!r} has a dynamic length {length!r}: pass window=L (--window L in the CLI)")
    if not isinstance(batch, int) or batch < 1:
        batch = batch if isinstance(batch, str) else "N"
    return vi.name, batch, channels, length, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))


def _with_input_shape(proto: onnx.ModelProto, x: str, dims: list, static_nodes: list,
                      consts: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy for shape inference: the window length fixed, folded static values as initializers."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    folded = {o for n in static_nodes for o in n.output if o in consts}
    kept = [n for n in fixed.graph.node if not all(o in folded for o in n.output)]
    del fixed.graph.node[:]
    fixed.graph.node.extend(kept)
    fixed.graph.initializer.extend(numpy_helper.from_array(consts[o], o) for o in sorted(folded))
    for vi in fixed.graph.input:
        if vi.name == x:
            shape = vi.type.tensor_type.shape
            for d, v in zip(shape.dim, dims):
                d.Clear()
                if isinstance(v, int):
                    d.dim_value = v
                else:
                    d.dim_param = v
    del fixed.graph.value_info[:]
    return fixed


def _shapes(inferred: onnx.ModelProto, x: str, xshape: tuple, xdtype: np.dtype):
    shapes: dict[str, tuple | None] = {x: xshape}
    dtypes: dict[str, np.dtype] = {x: xdtype}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        dtypes[vi.name] = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                for d in t.shape.dim) if t.HasField("shape") else None
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes, dtypes


def _static_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes computed from constants only (shape arithmetic, Constant nodes ...)."""
    static = {i.name for i in graph.initializer} | {""}
    nodes = []
    for n in graph.node:
        if all(i in static for i in n.input):
            nodes.append(n)
            static.update(n.output)
    return nodes


def _constants(proto: onnx.ModelProto, static_nodes: list[onnx.NodeProto]) -> dict[str, np.ndarray]:
    """Values of initializers and of every static node's outputs (folded with onnx's reference evaluator)."""
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    outs = [o for n in static_nodes for o in n.output if o]
    if outs:
        graph = helper.make_graph(static_nodes, "static", [], [onnx.ValueInfoProto(name=o) for o in outs],
                                  list(proto.graph.initializer))
        try:
            from onnx.reference import ReferenceEvaluator

            folded = ReferenceEvaluator(helper.make_model(graph, opset_imports=proto.opset_import)).run(None, {})
            consts.update(zip(outs, (np.asarray(v) for v in folded)))
        except Exception:  # an op the reference evaluator lacks: such values stay unknown
            pass
    return consts


def _classify(ctx: Stream, graph: onnx.GraphProto, x: str, splits: list[str], static_nodes: list):
    """Sort the non-static nodes into the feature extractor and the head."""
    static = {i.name for i in graph.initializer} | {o for n in static_nodes for o in n.output} | {""}
    stream, head_t = {x}, set(splits)
    known = {o for n in graph.node for o in n.output} | static | {x}
    for s in splits:
        if s not in known:
            raise ModelError(f"split tensor {s!r} is not a tensor of the model")
    is_static = {id(n) for n in static_nodes}
    extractor, head = [], []
    for n in graph.node:
        if id(n) in is_static:
            continue
        ins = [i for i in n.input if i]
        if any(i in head_t for i in ins) or (not splits and mixes_time(ctx, n)):
            head.append(n)
            head_t.update(n.output)
        else:
            extractor.append(n)
            stream.update(n.output)
    for s in splits:
        if s not in stream:
            raise ModelError(f"split tensor {s!r} is not computed by the feature extractor (it is constant or "
                             f"downstream of another split)")
    return extractor, head


def _boundaries(graph: onnx.GraphProto, x: str, extractor: list, head: list) -> list[str]:
    """Stream tensors the head reads (or the model outputs), in the order they are computed."""
    produced = [x] + [o for n in extractor for o in n.output if o]
    wanted = {i for n in head for i in n.input} | {o.name for o in graph.output}
    return [t for t in produced if t in wanted]


def _fifos(ctx: Stream, boundaries: list[str], x: str, length: int) -> tuple[int, int, dict[str, str]]:
    """Align all boundaries to one output delay, give each a FIFO of its window width."""
    geos = {t: ctx.geo[t] for t in boundaries}
    delays = {t: g.stride * (g.lag + g.width) - length for t, g in geos.items()}
    delay = max(0, *delays.values())
    names, warmup = {}, 0
    for t, g in geos.items():
        cols, rest = divmod(delay - delays[t], g.stride)
        if rest:
            raise ModelError(f"the head reads {t!r} {delays[t]} samples behind the input and another tensor "
                             f"{delay} samples behind; the difference is not a whole number of its columns")
        n = ctx.hop // g.stride
        block = ctx.g.delay(g.name, n, cols, g.channels, g.dtype, t) if cols else g.name
        names[t] = t if t != x else ctx.g.name(f"{x}.window")
        ctx.g.fifo(block, n, g.width, g.channels, g.dtype, names[t], t)
        warmup = max(warmup, -(-(g.lag + cols + g.width) // n) - 1)
    return delay, warmup, names


def _assemble(proto: onnx.ModelProto, g: StepGraph, x: str, dtype: np.dtype, channels: int,
              hop: int) -> onnx.ModelProto:
    """The step graph as a checked model: chunk + states in, head outputs + next states out."""
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    inputs = [helper.make_tensor_value_info(x, elem, [g.batch, channels, hop])]
    outputs = list(proto.graph.output)
    for s in g.states:
        t = helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype))
        inputs.append(helper.make_tensor_value_info(s.input, t, list(s.shape)))
        outputs.append(helper.make_tensor_value_info(s.output, t, list(s.shape)))
    inits = [i for i in proto.graph.initializer] + g.initializers
    nodes = live_nodes(g.nodes, [o.name for o in outputs], proto=True)
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(nodes, f"{proto.graph.name or 'model'}_step", inputs, outputs,
                              [i for i in inits if i.name in used])
    step = helper.make_model(graph, opset_imports=list(proto.opset_import), producer_name="edgekit.stream")
    step.ir_version = proto.ir_version
    return finish_step_model(step)

