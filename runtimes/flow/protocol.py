"""Open Inference Protocol (KServe V2) REST codec: JSON tensors and the binary tensor data extension.

A message is a JSON object, optionally followed by the raw little-endian bytes of tensors whose
``parameters.binary_data_size`` says how many bytes each takes (in order of appearance); the HTTP
header ``Inference-Header-Content-Length`` gives the JSON part's length. BYTES elements are
4-byte little-endian lengths followed by the bytes (binary) or strings (JSON). Everything that can
be wrong with a request raises ProtocolError carrying the HTTP status to answer with.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import InputError

HEADER_LENGTH = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NAMES = {dt: name for name, dt in DATATYPES.items() if name != "BYTES"}


class ProtocolError(InputError):
    """A message that breaks the protocol; ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def datatype_of(a: np.ndarray) -> str:
    """The V2 datatype name of an array's dtype (str/bytes/object arrays are BYTES)."""
    if a.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _NAMES[a.dtype]
    except KeyError:
        raise ProtocolError(f"dtype {a.dtype} has no Open Inference Protocol datatype; "
                            f"supported: {sorted(DATATYPES)}") from None


@dataclass
class Message:
    """A decoded request or response: tensors in order, their per-tensor parameters, the rest."""

    tensors: dict[str, np.ndarray]
    tensor_parameters: dict[str, dict] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    outputs: list[str] | None = None          # requested outputs (requests only; None = all)
    binary_outputs: set[str] = field(default_factory=set)  # requested outputs to send binary
    model_name: str | None = None             # responses only


# ---------------------------------------------------------------- encoding

def _bytes_elements(a: np.ndarray) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode() for v in a.reshape(-1).tolist()]


def _binary(a: np.ndarray) -> bytes:
    if a.dtype.kind in "OSU":
        return b"".join(struct.pack("<I", len(v)) + v for v in _bytes_elements(a))
    return np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes()


def _json_data(a: np.ndarray) -> list:
    if a.dtype.kind in "OSU":
        return [v.decode("utf-8", "backslashreplace") for v in _bytes_elements(a)]
    return a.reshape(-1).tolist()


def _tensor_entry(name: str, a: np.ndarray, binary: bool, parameters: dict | None,
                  chunks: list[bytes]) -> dict:
    a = np.asarray(a)
    entry: dict[str, Any] = {"name": name, "shape": list(a.shape), "datatype": datatype_of(a)}
    params = dict(parameters or {})
    if binary:
        raw = _binary(a)
        params["binary_data_size"] = len(raw)
        chunks.append(raw)
    else:
        entry["data"] = _json_data(a)
    if params:
        entry["parameters"] = params
    return entry


def _finish(doc: dict, chunks: list[bytes]) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(chunks), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def encode_request(inputs: dict[str, np.ndarray], outputs: list[str] | None = None, *, binary: bool = True,
                   binary_outputs: bool = True, id: str | None = None, parameters: dict | None = None,
                   tensor_parameters: dict[str, dict] | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an infer request; ``binary`` sends inputs as raw bytes after the JSON."""
    chunks: list[bytes] = []
    tp = tensor_parameters or {}
    doc: dict[str, Any] = {"inputs": [_tensor_entry(n, a, binary, tp.get(n), chunks) for n, a in inputs.items()]}
    if id is not None:
        doc["id"] = id
    params = dict(parameters or {})
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary_outputs}} for n in outputs]
    elif binary_outputs:
        params["binary_data_output"] = True
    if params:
        doc["parameters"] = params
    return _finish(doc, chunks)


MODEL_VERSION = "1"
"""The one version of every served model (a request path may name it, or no version)."""


def encode_response(model_name: str, outputs: dict[str, np.ndarray], binary: set[str] | bool = False, *,
                    id: str | None = None, parameters: dict | None = None,
                    tensor_parameters: dict[str, dict] | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an infer response; outputs named in ``binary`` (or all if True) go raw."""
    chunks: list[bytes] = []
    tp = tensor_parameters or {}
    doc: dict[str, Any] = {"model_name": model_name, "model_version": MODEL_VERSION}
    if id is not None:
        doc["id"] = id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = [_tensor_entry(n, a, binary is True or (binary is not False and n in binary), tp.get(n), chunks)
                      for n, a in outputs.items()]
    return _finish(doc, chunks)


def encode_error(message: str) -> bytes:
    """The JSON body of an error answer."""
    return json.dumps({"error": message}).encode()


# ---------------------------------------------------------------- decoding

def check_json_size(size: int, limit: int | None) -> None:
    """Refuse (413) a JSON part larger than ``limit`` bytes: parsing JSON tensors takes many times
    their text in memory, the binary tensor data extension only its own size."""
    if limit is not None and size > limit:
        raise ProtocolError(f"the JSON part of the request is {size} bytes, over the limit of {limit} bytes "
                            "for JSON (parsing JSON tensors takes many times their size in memory); send "
                            "tensors with the binary tensor data extension (parameters.binary_data_size and "
                            f"the {HEADER_LENGTH} header), which only the request size limit bounds", 413)


def _split(body: bytes, header_length: str | int | None, max_json_bytes: int | None = None) -> tuple[dict, memoryview]:
    if header_length in (None, ""):
        n = len(body)
    else:
        try:
            n = int(header_length)
        except (TypeError, ValueError):
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {n} but the body has only {len(body)} bytes")
    check_json_size(n, max_json_bytes)
    try:
        doc = json.loads(bytes(body[:n]))
    except UnicodeDecodeError:
        raise ProtocolError("the JSON part of the body is not UTF-8; binary tensor data needs the "
                            f"{HEADER_LENGTH} header") from None
    except ValueError as exc:
        hint = "" if header_length is not None else f" (binary tensor data needs the {HEADER_LENGTH} header)"
        raise ProtocolError(f"the body is not valid JSON: {exc}{hint}") from None
    except RecursionError:
        raise ProtocolError("the JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"the body must be a JSON object, got {type(doc).__name__}")
    return doc, memoryview(body)[n:]


def _shape(entry: dict, where: str) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ProtocolError(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def _flatten(data: Any) -> list:
    """The leaves of nested lists in order; iterative, as deep nesting is the client's choice."""
    if not isinstance(data, list):
        return [data]
    if all(not isinstance(v, list) for v in data):
        return data
    out: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _from_json(data: Any, dt: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    flat = _flatten(data)
    count = math.prod(shape)
    if len(flat) != count:
        raise ProtocolError(f"{where}: 'data' has {len(flat)} elements but shape {list(shape)} needs {count}")
    if dt == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise ProtocolError(f"{where}: BYTES data in JSON must be strings")
        a = np.empty(count, object)
        a[:] = [v.encode() for v in flat]
        return a.reshape(shape)
    kind = DATATYPES[dt].kind
    ok = (lambda v: isinstance(v, bool)) if kind == "b" else (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
        and (kind == "f" or float(v).is_integer()))
    bad = next((v for v in flat if not ok(v)), None)
    if bad is not None:
        raise ProtocolError(f"{where}: {bad!r} is not a valid {dt} value")
    try:
        return np.array(flat, DATATYPES[dt]).reshape(shape)
    except (OverflowError, ValueError) as exc:
        raise ProtocolError(f"{where}: values do not fit {dt}: {exc}") from None


def _from_binary(raw: memoryview, dt: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    count = math.prod(shape)
    if dt != "BYTES":
        need = count * DATATYPES[dt].itemsize
        if len(raw) != need:
            raise ProtocolError(f"{where}: binary_data_size is {len(raw)} bytes but {dt} {list(shape)} needs {need}")
        a = np.frombuffer(raw, DATATYPES[dt].newbyteorder("<"), count).astype(DATATYPES[dt])
        if dt == "BOOL" and np.frombuffer(raw, np.uint8).max(initial=0) > 1:
            raise ProtocolError(f"{where}: BOOL bytes must be 0 or 1")
        return a.reshape(shape)
    items, pos, data = [], 0, bytes(raw)
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolError(f"{where}: truncated BYTES element length at offset {pos}")
        (n,) = struct.unpack_from("<I", data, pos)
        if pos + 4 + n > len(data):
            raise ProtocolError(f"{where}: BYTES element at offset {pos} claims {n} bytes past the end")
        items.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    if len(items) != count:
        raise ProtocolError(f"{where}: {len(items)} BYTES elements but shape {list(shape)} needs {count}")
    a = np.empty(count, object)
    a[:] = items
    return a.reshape(shape)


def _decode_tensors(entries: Any, blob: memoryview, key: str) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    if not isinstance(entries, list):
        raise ProtocolError(f"'{key}' must be a list of tensors, got {type(entries).__name__}")
    tensors: dict[str, np.ndarray] = {}
    params: dict[str, dict] = {}
    pos = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ProtocolError(f"{key}[{i}] must be an object with a string 'name'")
        name = entry["name"]
        where = f"{key[:-1]} {name!r}"
        if name in tensors:
            raise ProtocolError(f"{where} appears twice")
        dt = entry.get("datatype")
        if dt not in DATATYPES:
            raise ProtocolError(f"{where}: datatype {dt!r} is not one of {sorted(DATATYPES)}")
        shape = _shape(entry, where)
        p = entry.get("parameters") or {}
        if not isinstance(p, dict):
            raise ProtocolError(f"{where}: 'parameters' must be an object")
        size = p.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
            if "data" in entry:
                raise ProtocolError(f"{where}: has both 'data' and binary_data_size")
            if pos + size > len(blob):
                raise ProtocolError(f"{where}: binary_data_size {size} runs past the end of the body "
                                    f"({len(blob) - pos} bytes left)")
            tensors[name] = _from_binary(blob[pos:pos + size], dt, shape, where)
            pos += size
        elif "data" in entry:
            tensors[name] = _from_json(entry["data"], dt, shape, where)
        else:
            raise ProtocolError(f"{where}: no 'data' and no binary_data_size parameter")
        params[name] = {k: v for k, v in p.items() if k != "binary_data_size"}
    if pos != len(blob):
        raise ProtocolError(f"the body has {len(blob) - pos} bytes of binary data that no tensor claims")
    return tensors, params


def decode_request(body: bytes, header_length: str | int | None = None, max_json_bytes: int | None = None) -> Message:
    """Parse an infer request body (``header_length``: the Inference-Header-Content-Length header);
    a JSON part over ``max_json_bytes`` raises ProtocolError 413 before parsing."""
    doc, blob = _split(body, header_length, max_json_bytes)
    if "inputs" not in doc:
        raise ProtocolError("the request has no 'inputs'")
    tensors, tparams = _decode_tensors(doc["inputs"], blob, "inputs")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object")
    msg = Message(tensors, tparams, params, _id(doc))
    all_binary = params.get("binary_data_output") is True
    if "outputs" in doc:
        outs = doc["outputs"]
        if not isinstance(outs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                 and isinstance(o.get("parameters") or {}, dict) for o in outs):
            raise ProtocolError("'outputs' must be a list of objects with a string 'name' (and object 'parameters')")
        msg.outputs = [o["name"] for o in outs]
        msg.binary_outputs = {o["name"] for o in outs
                              if (o.get("parameters") or {}).get("binary_data", all_binary) is True}
    elif all_binary:
        msg.binary_outputs = {"*"}
    return msg


def decode_response(body: bytes, header_length: str | int | None = None) -> Message:
    """Parse an infer response body into its output tensors and parameters."""
    doc, blob = _split(body, header_length)
    if "error" in doc and "outputs" not in doc:
        raise ProtocolError(f"the server answered with an error: {doc['error']}")
    tensors, tparams = _decode_tensors(doc.get("outputs", []), blob, "outputs")
    params = doc.get("parameters") or {}
    return Message(tensors, tparams, params if isinstance(params, dict) else {}, _id(doc),
                   model_name=doc.get("model_name"))


def _id(doc: dict) -> str | None:
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError(f"'id' must be a string, got {type(rid).__name__}")
    return rid
