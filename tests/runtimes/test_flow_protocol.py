"""Open Inference Protocol codec (edgekit.runtimes.flow.protocol): JSON and binary round trips for
every datatype (exact equality), requested outputs, a clear ProtocolError for malformed bodies, and
413 for a JSON part over its limit (binary tensor data does not count)."""
import json

import numpy as np
import pytest

from edgekit.runtimes.flow.protocol import (HEADER_LENGTH, ProtocolError, _flatten, decode_request, decode_response,
                                            encode_request, encode_response)

DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64"]


def sample(dtype: str, shape=(2, 3), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
    return rng.standard_normal(shape).astype(dt)


def strings(shape=(2, 2)) -> np.ndarray:
    a = np.empty(4, object)
    a[:] = [b"", b"edge", "\u00e9t\u00e9".encode(), b"cloud tier"]
    return a.reshape(shape)


def _headers_len(headers):
    return headers.get(HEADER_LENGTH)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_request_round_trip(dtype, binary):
    x = sample(dtype)
    body, headers = encode_request({"x": x, "empty": sample(dtype, (0, 4))}, binary=binary)
    msg = decode_request(body, _headers_len(headers))
    assert list(msg.tensors) == ["x", "empty"]
    for name, want in (("x", x), ("empty", sample(dtype, (0, 4)))):
        got = msg.tensors[name]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_round_trip(binary):
    s = strings()
    body, headers = encode_response("m", {"s": s}, binary)
    got = decode_response(body, _headers_len(headers)).tensors["s"]
    assert got.shape == s.shape and got.reshape(-1).tolist() == s.reshape(-1).tolist()


@pytest.mark.parametrize("dtype", DTYPES)
def test_response_round_trip_mixed(dtype):
    a, b = sample(dtype, (4,), 1), sample("float32", (1, 2, 3), 2)
    body, headers = encode_response("m-edge", {"a": a, "b": b}, {"b"}, id="r1", parameters={"p": "v"})
    msg = decode_response(body, _headers_len(headers))
    assert msg.model_name == "m-edge" and msg.id == "r1" and msg.parameters == {"p": "v"}
    np.testing.assert_array_equal(msg.tensors["a"], a)
    np.testing.assert_array_equal(msg.tensors["b"], b)


def test_float32_json_is_exact_and_nested_data_is_accepted():
    x = sample("float32", (3, 5), 3)
    body, _ = encode_request({"x": x}, binary=False)
    np.testing.assert_array_equal(decode_request(body).tensors["x"], x)
    nested = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}]})
    np.testing.assert_array_equal(decode_request(nested.encode()).tensors["x"], [[1, 2], [3, 4]])
    deep: list = [1.0]
    for _ in range(5000):  # deeper than Python's recursion limit: flattening must not recurse
        deep = [deep, 2.0]
    assert _flatten(deep) == [1.0] + [2.0] * 5000


def test_requested_outputs_and_binary_flags():
    body, headers = encode_request({"x": sample("float32")}, ["y", "z"], binary_outputs=True)
    msg = decode_request(body, _headers_len(headers))
    assert msg.outputs == ["y", "z"] and msg.binary_outputs == {"y", "z"}
    body, headers = encode_request({"x": sample("float32")}, binary_outputs=True)
    assert decode_request(body, _headers_len(headers)).binary_outputs == {"*"}
    body, _ = encode_request({"x": sample("float32")}, binary=False, binary_outputs=False)
    msg = decode_request(body)
    assert msg.outputs is None and msg.binary_outputs == set()


def _doc(**entry):
    tensor = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
    tensor.update(entry)
    tensor = {k: v for k, v in tensor.items() if v is not None}
    return json.dumps({"inputs": [tensor]}).encode()


MALFORMED = [
    (b"not json", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b"{}", None, "no 'inputs'"),
    (json.dumps({"inputs": {"x": 1}}).encode(), None, "must be a list"),
    (_doc(datatype="FP8"), None, "datatype 'FP8'"),
    (_doc(shape=[2, -1]), None, "non-negative integers"),
    (_doc(shape="2"), None, "non-negative integers"),
    (_doc(data=[1.0, 2.0, 3.0]), None, "has 3 elements"),
    (_doc(data=[1.0, "a"]), None, "not a valid FP32"),
    (_doc(datatype="UINT8", data=[1, 300]), None, "do not fit UINT8"),
    (_doc(datatype="INT32", data=[1, 2.5]), None, "not a valid INT32"),
    (_doc(datatype="BOOL", data=[1, 0]), None, "not a valid BOOL"),
    (_doc(data=None, parameters={"binary_data_size": 8}), 500, "is 500 but the body"),
    (_doc(parameters={"binary_data_size": 8}), None, "both 'data' and binary_data_size"),
    (_doc(data=None), None, "no 'data' and no binary_data_size"),
    (_doc(parameters={"binary_data_size": -1}), None, "non-negative integer"),
    (json.dumps({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}).encode(), None, "string 'name'"),
    (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}).encode(),
     None, "appears twice"),
    (json.dumps({"inputs": [], "outputs": "y"}).encode(), None, "'outputs' must be a list"),
    (json.dumps({"inputs": [], "outputs": [{"name": "y", "parameters": [1]}]}).encode(), None, "object 'parameters'"),
    (json.dumps({"inputs": [], "id": 5}).encode(), None, "'id' must be a string"),
    (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "nested too deeply"),
]


@pytest.mark.parametrize("body,header,message", MALFORMED)
def test_malformed_requests_raise_clear_errors(body, header, message):
    with pytest.raises(ProtocolError, match=message) as info:
        decode_request(body, header)
    assert info.value.status == 400


def test_binary_sizes_are_checked():
    x = sample("float32", (2, 2))
    body, headers = encode_request({"x": x})
    n = int(headers[HEADER_LENGTH])
    with pytest.raises(ProtocolError, match="runs past the end"):
        decode_request(body[:-1], n)
    with pytest.raises(ProtocolError, match="no tensor claims"):
        decode_request(body + b"\0", n)
    with pytest.raises(ProtocolError, match="must be an integer"):
        decode_request(body, "ten")
    with pytest.raises(ProtocolError, match="not valid JSON|not UTF-8"):
        decode_request(body)  # binary data without the header
    bad = body[:n].replace(b'"binary_data_size":16', b'"binary_data_size":12')
    with pytest.raises(ProtocolError, match="needs 16"):
        decode_request(bad + body[n:n + 12], len(bad))


def test_the_json_part_limit():
    x = sample("float32", (64, 64))
    body, headers = encode_request({"x": x}, binary=False)
    with pytest.raises(ProtocolError, match="over the limit of 1000 bytes for JSON.*binary tensor data") as info:
        decode_request(body, None, max_json_bytes=1000)
    assert info.value.status == 413
    np.testing.assert_array_equal(decode_request(body, None, max_json_bytes=len(body)).tensors["x"], x)
    body, headers = encode_request({"x": x}, binary=True)  # only the JSON header counts
    assert len(body) > 16384 > int(headers[HEADER_LENGTH])
    np.testing.assert_array_equal(decode_request(body, headers[HEADER_LENGTH], max_json_bytes=1000).tensors["x"], x)
