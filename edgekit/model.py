"""Load an ONNX model from a path, bytes or ModelProto and validate it, raising ModelError."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import onnx
import onnx.inliner
from google.protobuf.message import DecodeError

from .errors import ModelError

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_model(model: ModelSource, check: bool = True) -> onnx.ModelProto:
    """Return a checked ModelProto from a path, serialized bytes or a ModelProto, its local functions
    inlined."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = _parse(bytes(model), "the given bytes")
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelError(f"model file {path!r} " + ("is a directory" if os.path.isdir(path) else "does not exist"))
        with open(path, "rb") as f:
            proto = _parse(f.read(), repr(path))
        _load_external_data(proto, path)
    else:
        raise ModelError(
            f"cannot load a model from {type(model).__name__}: give a path, bytes or onnx.ModelProto"
        )
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:  # (a path's external data is loaded by now)
        raise ModelError(f"initializer(s) {external[:3]} are stored as external data, which only a model "
                         f"loaded from its path can find: give the path of the .onnx file")
    if check:
        check_model(proto)
    if proto.functions:  # (exporters write modules as local functions: edgekit runs their bodies)
        proto = onnx.inliner.inline_local_functions(proto)
    return proto


def _load_external_data(proto: onnx.ModelProto, path: str) -> None:
    """Read the external data of ``proto`` from the files next to ``path``, raising ModelError when a
    file is missing, too short or outside the model's directory."""
    try:
        onnx.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read the external data of {path!r}: {exc}") from None


def _parse(data: bytes, origin: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{origin} is not a valid ONNX model (truncated or corrupt protobuf): {exc}") from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelError(f"{origin} is not an ONNX model: it has no graph or no opset_import")
    return proto


def check_model(proto: onnx.ModelProto) -> None:
    """Run onnx.checker, turning its failures into ModelError. Nodes of RUNS_DEPRECATED ops at an opset
    where their schema is marked deprecated (GroupNormalization 18-20) are checked as nodes of an
    unknown domain, so the checker looks at everything else instead of stopping there. Graph inputs
    and outputs of unknown rank or type (a tensor type without a shape, or no type, which onnxruntime
    runs and the checker refuses) are checked as if they had them. An opset newer than onnx knows is
    refused (the checker would pass it, and nodes would be read with the wrong schemas)."""
    deprecated = [i for i, n in enumerate(proto.graph.node) if n.domain in ("", "ai.onnx") and _deprecated(n, proto)]
    opset, newest = opset_version(proto), onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelError(f"the model imports ONNX opset {opset}; the newest edgekit's onnx {onnx.__version__} "
                         f"knows is {newest}")
    shapeless = [v for v in (*proto.graph.input, *proto.graph.output)
                 if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")
                 or v.type.WhichOneof("value") is None]
    if deprecated or shapeless:
        checked = onnx.ModelProto()
        checked.CopyFrom(proto)
        for i in deprecated:
            checked.graph.node[i].domain = UNCHECKED_DOMAIN
        if deprecated:
            checked.opset_import.append(onnx.helper.make_opsetid(UNCHECKED_DOMAIN, 1))
        for v in (*checked.graph.input, *checked.graph.output):
            if v.type.WhichOneof("value") is None:  # (no type at all: its producer gives it one)
                v.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
            if v.type.HasField("tensor_type"):
                v.type.tensor_type.shape.SetInParent()
        proto = checked
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"the model fails onnx.checker: {str(exc).splitlines()[0]}") from None


UNCHECKED_DOMAIN = "ai.edgekit.unchecked"
RUNS_DEPRECATED = {"GroupNormalization"}
"""Ops whose schema is marked deprecated at some opsets that onnxruntime still runs there (it refuses
Upsample from opset 10 and Scatter from 11, so edgekit does too)."""


def _deprecated(node: onnx.NodeProto, proto: onnx.ModelProto) -> bool:
    """Whether ``node`` is of an op onnxruntime runs though its schema at the model's opset is marked deprecated."""
    if node.op_type not in RUNS_DEPRECATED:
        return False
    try:
        return onnx.defs.get_schema(node.op_type, opset_version(proto), "").deprecated
    except onnx.defs.SchemaError:
        return False


def opset_version(proto: onnx.ModelProto, domain: str = "") -> int:
    """The opset version the model imports for ``domain`` ("" is the default ONNX domain)."""
    for entry in proto.opset_import:
        if entry.domain in (domain, "ai.onnx" if domain == "" else domain):
            return entry.version
    return 0


UNSET_VERSION = 2**63 - 1
"""The version onnxruntime reports for a model that sets no model_version."""


@dataclass(frozen=True)
class ModelMetadata:
    """A model's metadata with the fields of onnxruntime's ModelMetadata (``get_modelmeta()``)."""

    producer_name: str
    graph_name: str
    domain: str
    description: str
    graph_description: str
    version: int
    custom_metadata_map: dict[str, str]


def model_metadata(proto: onnx.ModelProto) -> ModelMetadata:
    """The metadata onnxruntime's ``get_modelmeta()`` gives for ``proto``."""
    return ModelMetadata(
        proto.producer_name, proto.graph.name, proto.domain, proto.doc_string, proto.graph.doc_string,
        proto.model_version if proto.HasField("model_version") else UNSET_VERSION,
        {p.key: p.value for p in proto.metadata_props})
