"""A light, read-mostly view of an ONNX graph: nodes with parsed attributes, constants as arrays.

The runtime compiles plans from it and converters inspect models with it; rewriting converters
work on the ModelProto (or onnx-ir) directly and never on this view.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError
from .model import opset_version

Dim = int | str | None


@dataclass
class Node:
    """One ONNX node; ``attrs`` holds Python values (ints, floats, lists, arrays, strings, Graphs).

    ``implicit`` lists the outer-scope names its graph attributes (Loop/If bodies) read, as they name
    them; they are also appended to ``inputs``, so ordering, dead-node removal and buffer liveness see
    them as inputs (a rewrite renaming an input keeps the pairing by position).
    """

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    implicit: list[str] = field(default_factory=list)


@dataclass
class ValueInfo:
    """A graph input or output: name, numpy dtype and shape (ints, symbolic names or None)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[Dim, ...] | None


@dataclass
class Graph:
    """Nodes in file order, constants (initializers; Constant nodes stay nodes, fusion folds them) and graph I/O."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    opsets: dict[str, int]

    @property
    def opset(self) -> int:
        return self.opsets.get("", 0)


def dtype_of(elem_type: int) -> np.dtype | None:
    """numpy dtype of an ONNX TensorProto elem_type (None when numpy has no equivalent)."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def value_info(vi: onnx.ValueInfoProto) -> ValueInfo:
    """A graph input's or output's name, element dtype and dims (None where the proto leaves them out)."""
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        return ValueInfo(vi.name, None, None)
    shape = None
    if t.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
        )
    return ValueInfo(vi.name, dtype_of(t.elem_type), shape)


def _attr_value(attr: onnx.AttributeProto, opsets: dict[str, int]) -> Any:
    if attr.type == onnx.AttributeProto.GRAPH:
        return _read(attr.g, opsets)
    if attr.type == onnx.AttributeProto.GRAPHS:
        return [_read(g, opsets) for g in attr.graphs]
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", "replace") for v in value]
    return value


def read_graph(proto: onnx.ModelProto) -> Graph:
    """Parse a (checked) ModelProto into a Graph."""
    opsets = {e.domain if e.domain != "ai.onnx" else "": e.version for e in proto.opset_import}
    opsets.setdefault("", opset_version(proto))
    return _read(proto.graph, opsets)


def live_nodes(nodes: list[Any], outputs: Iterable[str], proto: bool = False) -> list[Any]:
    """``nodes`` (in order) without those none of whose outputs reach ``outputs`` (a node's inputs include
    the outer names its bodies read, so their producers stay). ``proto``: the nodes are onnx NodeProtos
    (``input``/``output``) rather than Nodes."""
    needed = set(outputs)
    kept = []
    for n in reversed(nodes):
        if any(o in needed for o in (n.output if proto else n.outputs)):
            kept.append(n)
            needed.update(n.input if proto else n.inputs)
    return kept[::-1]


def other_input(n: Node, x: str) -> str | None:
    """The other input of binary ``n`` when one input is ``x`` (the first match), else None."""
    if len(n.inputs) != 2 or x not in n.inputs:
        return None
    return n.inputs[1] if n.inputs[0] == x else n.inputs[0]


def axis_node(graph: Graph, op: str, x: str, out: str, axis: int, bounds: tuple | None = None) -> Node:
    """``op`` (Squeeze, Unsqueeze, or Slice to ``bounds`` = (start, end, step)) of ``x`` on one axis,
    written for the graph's opset (axes as inputs from 13, Slice bounds as inputs from 10)."""
    values = {"axes": [axis]} | ({} if bounds is None else {"starts": [bounds[0]], "ends": [bounds[1]]})
    if op == "Slice" and bounds[2] != 1:
        values["steps"] = [bounds[2]]
    if graph.opset < (10 if op == "Slice" else 13):
        return Node(out, op, "", [x], [out], values)
    order = ("starts", "ends", "axes", "steps") if op == "Slice" else ("axes",)
    for k in values:
        graph.constants[f"{out}::{k}"] = np.array(values[k], np.int64)
    return Node(out, op, "", [x, *(f"{out}::{k}" for k in order if k in values)], [out])


def squeeze_axes(n: Node, constants: dict) -> list[int] | None:
    """The axes of a Squeeze/Unsqueeze (attribute before opset 13, constant input after), or None."""
    if "axes" in n.attrs:
        return list(n.attrs["axes"])
    if len(n.inputs) > 1 and n.inputs[1] in constants:
        return [int(a) for a in constants[n.inputs[1]].reshape(-1)]
    return None


def outer_names(graph: Graph) -> list[str]:
    """Names ``graph`` reads (nodes, nested subgraphs, outputs) that it does not define: a subgraph's
    outer-scope inputs, in first-read order."""
    defined = set(graph.constants) | {v.name for v in graph.inputs} | {o for n in graph.nodes for o in n.outputs} | {""}
    read = [x for n in graph.nodes for x in n.inputs] + [o.name for o in graph.outputs]
    return list(dict.fromkeys(x for x in read if x not in defined))


def _read(g: onnx.GraphProto, opsets: dict[str, int]) -> Graph:
    """Parse the model's graph or a subgraph (reading the model's opsets)."""
    try:
        constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    except Exception as exc:  # a malformed tensor payload in the protobuf
        raise ModelError(f"cannot read an initializer of the model: {exc}") from None
    nodes = []
    for i, n in enumerate(g.node):
        attrs = {a.name: _attr_value(a, opsets) for a in n.attribute}
        bodies = [b for v in attrs.values() for b in (v if isinstance(v, list) else [v]) if isinstance(b, Graph)]
        implicit = list(dict.fromkeys(x for b in bodies for x in outer_names(b)))
        nodes.append(Node(n.name or f"{n.op_type}_{i}", n.op_type, n.domain if n.domain != "ai.onnx" else "",
                          list(n.input) + implicit, list(n.output), attrs, implicit))
    initializer_names = set(constants)
    inputs = [value_info(v) for v in g.input if v.name not in initializer_names]
    outputs = [value_info(v) for v in g.output]
    return Graph(nodes, constants, inputs, outputs, opsets)
