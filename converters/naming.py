"""How the converters name a node in errors, reports and the names of what they add."""
from __future__ import annotations

import onnx


def layer_name(node: onnx.NodeProto) -> str:
    """The node's own name or, as ONNX node names are optional, its first output tensor's (unique in
    the graph)."""
    return node.name or next((o for o in node.output if o), node.op_type)
