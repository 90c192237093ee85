"""Tier servers and FlowSession on loopback (servers in threads, free ports): V2 endpoints; 4xx for
malformed, oversized and unauthorized requests with the server still serving; 2- and 3-tier chains
equal to the whole model in InferenceSession (exact: float32 crosses the wire bit for bit);
fallback with zero lost requests when a tier is down, errors or misses the deadline, with the trace
naming where each part ran; tritonclient.http against the server, binary data on and off; the
JSON part limit, the per-request read deadline (slow-drip clients) and the connection cap (503)."""
import argparse
import dataclasses
import http.client
import json
import os
import gzip
import re
import select
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnx
import onnx.utils
import pytest

import edgekit
from edgekit.converters.partition import Link, Result, Tier, evaluate, partition, write_plan
from edgekit.errors import ModelError
from edgekit.runtimes.flow import FlowSession, TierServer, load_plan
from edgekit.runtimes.flow import Link as FlowLink
from edgekit.runtimes.flow.chain import Chain
from edgekit.runtimes.flow.client import infer
from edgekit.runtimes.flow.protocol import decode_request, encode_request, encode_response
from edgekit.runtimes.profile import profile_model

MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "demos", "models", "cnn1d.onnx")
CUTS = {"device": "maxpool3", "edge": "maxpool11"}  # device ends at maxpool3, edge at maxpool11


def make_plan(path, tiers, compression="none"):
    """A plan DIR cutting cnn1d by hand: ``tiers`` in order, each part ending at CUTS[tier]; transfers
    record batch-2 shapes, so servers compile their part before serving (as for a real plan)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(MODEL))
    ex = onnx.utils.Extractor(model)
    shapes = {v.name: [d.dim_value or 2 for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input)}
    parts, transfers, prev = [], [], "signal"
    if tiers[0] != "device":
        transfers.append(("device", tiers[0], prev))
    for i, tier in enumerate(tiers):
        end = CUTS[tier] if i < len(tiers) - 1 else "logits"
        onnx.save(ex.extract_model([prev], [end]), os.path.join(path, f"{tier}.onnx"))
        parts.append({"tier": tier, "file": f"{tier}.onnx", "inputs": [prev], "outputs": [end]})
        if i < len(tiers) - 1:
            transfers.append((tier, tiers[i + 1], end))
        prev = end
    plan = {"format": "edgekit.flow/1", "model": "cnn", "inputs": ["signal"], "outputs": ["logits"],
            "tiers": [{"name": "device", "speed": 1}, {"name": "edge", "speed": 4}, {"name": "cloud", "speed": 16}],
            "links": [{"from": "device", "to": "edge", "bandwidth_bps": 1e9, "rtt_s": 0.001},
                      {"from": "edge", "to": "cloud", "bandwidth_bps": 1e9, "rtt_s": 0.001}],
            "parts": parts,
            "transfers": [{"from": a, "to": b, "tensors": [{"name": t, "shape": shapes[t], "dtype": "float32",
                                                                       "bytes": 4 * int(np.prod(shapes[t]))}],
                           "compression": compression} for a, b, t in transfers]}
    with open(os.path.join(path, "plan.json"), "w") as f:
        json.dump(plan, f)
    return str(path)


@pytest.fixture(scope="module")
def signal():
    return np.random.default_rng(0).standard_normal((2, 1, 512)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(signal):
    return edgekit.InferenceSession(MODEL).run(None, {"signal": signal})[0]


@pytest.fixture(scope="module")
def plan3(tmp_path_factory):
    return make_plan(tmp_path_factory.mktemp("plan3"), ["device", "edge", "cloud"])


def serve(plan_dir, tier, endpoints=None, **kw):
    server_kw = {k: kw.pop(k) for k in ("token", "max_request_bytes", "max_json_bytes", "request_timeout",
                                        "max_connections") if k in kw}
    server = TierServer(Chain(load_plan(plan_dir), tier, endpoints=endpoints, **kw), **server_kw)
    server.start()
    return server


@pytest.fixture(scope="module")
def tiers(plan3):
    cloud = serve(plan3, "cloud")
    edge = serve(plan3, "edge", {"cloud": cloud.url})
    yield edge, cloud
    edge.shutdown(), cloud.shutdown()
    edge.server_close(), cloud.server_close()


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=120)
    conn.request(method, path, body, headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data) if data and r.getheader("Content-Type") == "application/json" else data


def infer_body(x, name="maxpool3"):
    return json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- plans and links

def test_plan_links_and_checks(plan3, tmp_path):
    plan = load_plan(plan3)
    assert [p.tier for p in plan.parts] == ["device", "edge", "cloud"] and plan.into == [None, "none", "none"]
    assert plan.served_name("edge") == "cnn-edge" and plan.part_of("cloud") == 2 and plan.part_of("fog") is None
    assert plan.link("edge", "device").time(1000) == pytest.approx(0.001 + 8e-6)  # links serve both ways
    assert plan.link("device", "cloud").time(1000) == pytest.approx(2 * (0.001 + 8e-6))  # in series
    chain = Chain(plan, "edge", links={("cloud", "edge"): FlowLink(0.04, 200e6)})
    assert chain.link("cloud").time(25_000) == pytest.approx(0.041) and chain.link("device") is None
    assert Chain(plan, "edge", links=True).link("cloud") == plan.link("edge", "cloud")
    doc = json.load(open(os.path.join(plan3, "plan.json")))
    broken = [({"format": "other"}, "'format' must be"),
              ({"parts": []}, "no parts"),
              ({"transfers": doc["transfers"][:1]}, "need 2 or 3 transfers"),
              ({"parts": [dict(doc["parts"][0], file="gone.onnx")] + doc["parts"][1:]}, "does not exist"),
              ({"transfers": [dict(doc["transfers"][0], compression="brotli"), doc["transfers"][1]]}, "compression"),
              ({"parts": [dict(doc["parts"][0], outputs=["relu2"])] + doc["parts"][1:]}, "does not output"),
              ({"links": [{"to": "edge"}]}, "malformed \\(KeyError"),
              ({"transfers": ["x", "y"]}, "malformed \\(AttributeError"),
              ({"transfers": [doc["transfers"][0], dict(doc["transfers"][1], tensors=[
                  dict(doc["transfers"][1]["tensors"][0], dtype="float99")])]}, "not a numpy dtype"),
              ({"transfers": [dict(doc["transfers"][0], tensors=[
                  dict(doc["transfers"][0]["tensors"][0], shape="2x16")]), doc["transfers"][1]]}, "shape must be a list"),
              ({"tiers": doc["tiers"] + [{"name": "edge", "speed": 2}]}, "tier names must be unique")]
    for change, message in broken:
        d = tmp_path / message.replace("'", "").replace(" ", "_")
        d.mkdir()
        for f in os.listdir(plan3):
            if f.endswith(".onnx"):
                os.symlink(os.path.join(plan3, f), d / f)
        (d / "plan.json").write_text(json.dumps(dict(doc, **change)))
        with pytest.raises(ModelError, match=message):
            load_plan(str(d))


# ---------------------------------------------------------------- endpoints and errors

def test_endpoints(tiers):
    edge, _ = tiers
    assert edge.server_address[0] == "127.0.0.1"  # loopback unless told otherwise
    assert request(edge, "GET", "/v2/health/live") == (200, {"live": True})
    assert request(edge, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = request(edge, "GET", "/v2")
    assert status == 200 and "binary_tensor_data" in meta["extensions"]
    assert request(edge, "GET", "/v2/models/cnn-edge/ready") == (200, {"name": "cnn-edge", "ready": True})
    assert request(edge, "GET", "/v2/models/cnn-edge/versions/1/ready") == (200, {"name": "cnn-edge", "ready": True})
    status, meta = request(edge, "GET", "/v2/models/cnn-edge")
    assert status == 200 and meta["inputs"] == [{"name": "maxpool3", "datatype": "FP32", "shape": [-1, 16, 256]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(tiers, signal):
    edge, _ = tiers
    x = np.zeros((1, 16, 256), np.float32)
    cases = [
        ("GET", "/v2/models/other", None, {}, 404, "unknown model"),
        ("GET", "/nowhere", None, {}, 404, "no GET endpoint"),
        ("POST", "/v2/models/cnn-cloud/infer", b"{}", {}, 404, "unknown model"),
        ("GET", "/v2/models/cnn-edge/versions/2", None, {}, 404, "has no version '2'"),
        ("GET", "/v2/models/cnn-edge/versions/2/ready", None, {}, 404, "has no version '2'"),
        ("POST", "/v2/models/cnn-edge/versions/2/infer", infer_body(x), {}, 404, "has no version '2'"),
        ("POST", "/v2/models/cnn-edge/infer", b"{not json", {}, 400, "not valid JSON"),
        ("POST", "/v2/models/cnn-edge/infer", infer_body(x, "signal"), {}, 400, "unknown \\['signal'\\]"),
        ("POST", "/v2/models/cnn-edge/infer", infer_body(x[:, :4]), {}, 400, "expects shape"),
        ("POST", "/v2/models/cnn-edge/infer", infer_body(x).replace(b'"data": [0.0, 0.0, ', b'"data": ['), {}, 400, "elements but shape"),
        ("POST", "/v2/models/cnn-edge/infer", b"\x00" * 10, {"Inference-Header-Content-Length": "99"}, 400,
         "is 99 but the body"),
        ("POST", "/v2/models/cnn-edge/infer", b"abc", {"Content-Encoding": "br"}, 415, "not supported"),
        ("POST", "/v2/models/cnn-edge/infer", b"abc", {"Content-Encoding": "gzip"}, 400, "cannot decode"),
        ("POST", "/v2/models/cnn-edge/infer", b"abc", {"Content-Encoding": "zstd"}, 400, "cannot decode"),
    ] + [("POST", "/v2/models/cnn-edge/infer", json.dumps(dict(json.loads(infer_body(x)), parameters={
        "edgekit_deadline_s": budget})).encode(), {}, 400, "edgekit_deadline_s must be a positive number")
        for budget in ("1", -1.0, 0, float("nan"), float("inf"), True)]
    for method, path, body, headers, status, message in cases:
        got, doc = request(edge, method, path, body, headers)
        assert got == status, (path, doc)
        assert re.search(message, doc["error"]), doc
    stalled = socket.create_connection(edge.server_address[:2])  # a client that stops mid-request
    try:
        stalled.sendall(b"POST /v2/models/cnn-edge/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        got, doc = request(edge, "POST", "/v2/models/cnn-edge/infer", infer_body(x))
        assert got == 200 and doc["outputs"][0]["shape"] == [1, 4]
    finally:
        stalled.close()


def raw_exchange(server, data: bytes) -> tuple[bytes, dict]:
    """Send raw bytes, read until the server closes: (status line, JSON body)."""
    with socket.create_connection(server.server_address[:2], timeout=30) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(1 << 16):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return (head.split(b"\r\n")[0], json.loads(body)) if head.startswith(b"HTTP/") else (b"", json.loads(out))


@pytest.mark.parametrize("data,status,message", [
    (b"PUT /v2/models/cnn-edge/infer HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", b"405",
     "method PUT is not allowed"),
    (b"DELETE /v2 HTTP/1.1\r\nConnection: close\r\n\r\n", b"405", "method DELETE is not allowed"),
    (b"GARBAGE\r\n\r\n", b"", "Bad request syntax"),
    (b"GET /v2 HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", b"431", "Line too long"),
    (b"POST /v2/models/cnn-edge/infer HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}", b"400",
     "several different Content-Length"),
    (b"POST /v2/models/cnn-edge/infer HTTP/1.1\r\nContent-Length: -1\r\n\r\n{}", b"411", "got '-1'"),
])
def test_requests_http_server_refuses_itself_get_json_errors(tiers, data, status, message):
    """Methods the protocol does not use get 405 (was 501) and what http.server refuses by itself
    (a malformed request line, an over-long header) answers JSON like every error (was HTML)."""
    edge, _ = tiers
    line, doc = raw_exchange(edge, data)
    assert line.split(b" ")[1:2] == ([status] if status else []) and message in doc["error"], (line, doc)
    assert request(edge, "GET", "/v2/health/ready")[0] == 200


def test_random_bodies_get_4xx(tiers):
    edge, _ = tiers
    rng = np.random.default_rng(5)
    good, headers = encode_request({"maxpool3": np.zeros((1, 16, 256), np.float32)})
    for i in range(40):
        body = bytearray(good)
        for pos in rng.integers(0, len(body), int(rng.integers(1, 20))):  # flip random bytes
            body[pos] = int(rng.integers(0, 256))
        if i % 4 == 0:
            body = body[: int(rng.integers(0, len(body)))]
        status, _ = request(edge, "POST", "/v2/models/cnn-edge/infer", bytes(body), dict(headers) if i % 3 else {})
        assert 400 <= status < 500 or status == 200, status
    assert request(edge, "GET", "/v2/health/ready")[0] == 200


def test_oversized_and_unauthorized(plan3):
    cloud = serve(plan3, "cloud", token="s3cret", max_request_bytes=9000)
    try:
        body = json.dumps({"inputs": [{"name": "maxpool11", "shape": [1, 32, 64], "datatype": "FP32",
                                       "data": [0.123456789] * 2048}]}).encode()
        auth = {"Authorization": "Bearer s3cret"}
        assert request(cloud, "GET", "/v2/health/live")[0] == 200  # probes need no token
        assert request(cloud, "GET", "/v2/models/cnn-cloud")[0] == 401
        assert request(cloud, "GET", "/v2/models/cnn-cloud", headers={"Authorization": "bearer s3cret"})[0] == 200
        status, doc = request(cloud, "POST", "/v2/models/cnn-cloud/infer", body, {"Authorization": "Bearer nope"})
        assert status == 401 and "bearer token" in doc["error"]
        status, doc = request(cloud, "POST", "/v2/models/cnn-cloud/infer", body, auth)
        assert status == 413 and "exceeds the limit of 9000 bytes" in doc["error"]
        small = np.random.default_rng(1).standard_normal((1, 32, 64)).astype(np.float32)
        reply = infer(cloud.url, "cnn-cloud", {"maxpool11": small}, token="s3cret")
        want = edgekit.InferenceSession(load_plan(plan3).parts[2].path).run(None, {"maxpool11": small})[0]
        np.testing.assert_array_equal(reply.tensors["logits"], want)
    finally:
        cloud.shutdown()
        cloud.server_close()


def test_the_json_part_limit(plan3):
    cloud = serve(plan3, "cloud", max_json_bytes=20_000)
    try:
        x = np.random.default_rng(3).standard_normal((1, 32, 64)).astype(np.float32)
        body = infer_body(x, "maxpool11")
        assert len(body) > 20_000
        for data, headers in [(body, {}), (gzip.compress(body), {"Content-Encoding": "gzip"}),
                              (b"\0" * 100, {"Inference-Header-Content-Length": "30000"})]:
            status, doc = request(cloud, "POST", "/v2/models/cnn-cloud/infer", data, headers)
            assert status == 413 and "over the limit of 20000 bytes for JSON" in doc["error"], doc
            assert "binary tensor data extension" in doc["error"]
        reply = infer(cloud.url, "cnn-cloud", {"maxpool11": x})  # binary: the same tensor passes
        want = edgekit.InferenceSession(load_plan(plan3).parts[2].path).run(None, {"maxpool11": x})[0]
        np.testing.assert_array_equal(reply.tensors["logits"], want)
    finally:
        cloud.shutdown()
        cloud.server_close()


def drip(server, head: bytes, step: float = 0.05, steps: int = 200) -> tuple[bytes, bool]:
    """Send ``head``, then one byte every ``step`` s for up to ``steps`` bytes (10 s, far past the
    test servers' deadline); returns what the server answered and whether it ended the connection
    before the drip ran out."""
    s = socket.create_connection(server.server_address[:2])
    got = b""
    try:
        s.sendall(head)
        for _ in range(steps):
            if select.select([s], [], [], step)[0]:
                data = s.recv(1 << 16)
                if not data:
                    return got, True
                got += data
            elif not got:
                s.sendall(b"x")
    except OSError:  # reset: also an ended connection
        return got, True
    finally:
        s.close()
    return got, False


def test_a_slow_drip_client_is_cut_off_at_the_request_deadline(plan3):
    cloud = serve(plan3, "cloud", request_timeout=0.5)
    path = b"POST /v2/models/cnn-cloud/infer HTTP/1.1\r\n"
    results = {}
    drips = [threading.Thread(target=lambda k=k, h=h: results.__setitem__(k, drip(cloud, h)))
             for k, h in [("headers", path + b"X-Drip: "),
                          ("body", path + b"Content-Length: 1000\r\n\r\n{")]]
    try:
        for t in drips:
            t.start()
        x = np.random.default_rng(4).standard_normal((1, 32, 64)).astype(np.float32)
        reply = infer(cloud.url, "cnn-cloud", {"maxpool11": x})  # served meanwhile
        assert reply.tensors["logits"].shape == (1, 4)
        for t in drips:
            t.join()
        got, ended = results["headers"]
        assert ended and got == b""  # headers never finished: the connection is closed
        got, ended = results["body"]
        assert ended and got.startswith(b"HTTP/1.1 408 ") and b"within 0.5 s" in got, got
        assert b"Connection: close" in got
        assert request(cloud, "GET", "/v2/health/ready")[0] == 200
    finally:
        cloud.shutdown()
        cloud.server_close()


def test_the_connection_cap_answers_503_and_the_server_keeps_serving(plan3):
    cloud = serve(plan3, "cloud", max_connections=2, request_timeout=30)
    held = [socket.create_connection(cloud.server_address[:2]) for _ in range(2)]
    try:
        for s in held:  # each holds a thread, mid-request
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        conn = http.client.HTTPConnection(*cloud.server_address[:2], timeout=30)
        conn.request("GET", "/v2/health/live")
        r = conn.getresponse()
        doc = json.loads(r.read())
        conn.close()
        assert r.status == 503 and r.getheader("Retry-After") == "1", (r.status, doc)
        assert "limit of 2 connections" in doc["error"]
        for s in held:
            s.close()
        for _ in range(200):  # the held connections' threads end on their close
            if cloud.active == 0:
                break
            time.sleep(0.05)
        assert request(cloud, "GET", "/v2/health/ready") == (200, {"ready": True})
        x = np.random.default_rng(5).standard_normal((1, 32, 64)).astype(np.float32)
        assert infer(cloud.url, "cnn-cloud", {"maxpool11": x}).tensors["logits"].shape == (1, 4)
    finally:
        for s in held:
            s.close()
        cloud.shutdown()
        cloud.server_close()


def test_a_taken_port_is_a_clear_error(plan3):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(edgekit.InputError, match=f"cannot listen on 127.0.0.1:{port}"):
            TierServer(Chain(load_plan(plan3), "cloud"), port=port)


# ---------------------------------------------------------------- chains

@pytest.mark.parametrize("tiers_used", [["device", "edge", "cloud"], ["device", "cloud"], ["edge", "cloud"],
                                        ["cloud"]])
def test_chains_equal_the_whole_model(tmp_path, tiers_used, signal, reference):
    plan = make_plan(tmp_path, tiers_used)
    servers, endpoints = [], {}
    for tier in reversed([t for t in tiers_used if t != "device"]):
        servers.append(serve(plan, tier, dict(endpoints)))
        endpoints[tier] = servers[-1].url
    try:
        flow = FlowSession(plan, endpoints, deadline_s=60)
        (got,) = flow.run(None, {"signal": signal})
        np.testing.assert_array_equal(got, reference)
        assert flow.ran_on() == tiers_used
        assert [e["event"] for e in flow.last_trace].count("transfer") == len(endpoints)
        assert all(e["compute_s"] > 0 for e in flow.last_trace if e["event"] == "compute")
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


@pytest.mark.parametrize("compression,atol", [("fp16", 1e-3), ("int8", 1.5e-2), ("zstd", 0.0)])
def test_compressed_transfers(tmp_path, compression, atol, signal, reference):
    """The cut tensor (maxpool3) sent fp16, int8 or zstd: logits (of magnitude ~4) within a few times the
    codec's own error here (fp16 2.2e-4, int8 6.2e-3), so a biased int8 rounding (3.2e-2) or a
    bfloat16-like fp16 (1.1e-2) fails; zstd is exact."""
    if compression == "zstd":
        pytest.importorskip("zstandard")
    plan = make_plan(tmp_path, ["device", "cloud"], compression)
    cloud = serve(plan, "cloud")
    try:
        flow = FlowSession(plan, {"cloud": cloud.url}, deadline_s=60)
        (got,) = flow.run(["logits"], {"signal": signal})
        assert flow.ran_on() == ["device", "cloud"]
        np.testing.assert_allclose(got, reference, rtol=0, atol=atol)
        sent = next(e["bytes"] for e in flow.last_trace if e["event"] == "transfer")
        assert sent < signal.shape[0] * 16 * 256 * 4 * (0.6 if compression != "zstd" else 1.01)
        served = next(iter(cloud.models.values()))  # it restored the tensors to its part's input dtypes
        assert served.chain.input_dtypes(served.part) is served.chain.input_dtypes(served.part)  # read once
    finally:
        cloud.shutdown()
        cloud.server_close()


@pytest.mark.parametrize("compression,special", [("int8", np.inf), ("int8", np.nan), ("fp16", 1e6)])
def test_a_cut_tensor_the_codec_cannot_hold_is_sent_exact(tmp_path, compression, special, signal):
    """int8 has no NaN or Inf and fp16 stops at 65504: such a cut tensor crosses uncompressed, so the
    answer is the whole model's (it was quantized with scale 1 or overflowed to Inf: finite garbage)."""
    x = signal.copy()
    x[0, 0, 100] = special
    if special == 1e6:
        x *= 1e5  # activations beyond fp16's range
    reference = edgekit.InferenceSession(MODEL).run(None, {"signal": x})[0]
    plan = make_plan(tmp_path, ["device", "cloud"], compression)
    cloud = serve(plan, "cloud")
    try:
        flow = FlowSession(plan, {"cloud": cloud.url}, deadline_s=60)
        (got,) = flow.run(["logits"], {"signal": x})
        assert flow.ran_on() == ["device", "cloud"]
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=0)  # NaN where the reference has NaN
    finally:
        cloud.shutdown()
        cloud.server_close()


# ---------------------------------------------------------------- fallback

class Misbehaving:
    """A V2 impostor on loopback that answers every request with HTTP 500 or too late."""

    def __init__(self, mode):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                if mode == "slow":
                    time.sleep(0.4)
                body = b'{"error": "model crashed"}'
                try:
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the caller's deadline passed
                    pass

        self.calls = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("failure", ["down", "error", "slow"])
def test_device_falls_back_when_the_edge_fails(plan3, failure, signal, reference):
    bad = None if failure == "down" else Misbehaving(failure)
    url = bad.url if bad else f"http://127.0.0.1:{free_port()}"
    try:
        flow = FlowSession(plan3, {"edge": url}, deadline_s=0.2, retries=2, cooldown_s=0.0)
        for _ in range(3):  # zero lost requests
            (got,) = flow.run(None, {"signal": signal})
            np.testing.assert_array_equal(got, reference)
            assert flow.ran_on() == ["device", "device", "device"]
            fb = [e for e in flow.last_trace if e["event"] == "fallback"]
            assert len(fb) == 1 and fb[0]["tier"] == "edge" and fb[0]["ran_on"] == "device"
            expected = {"down": "unreachable", "error": "HTTP 500", "slow": "deadline"}[failure]
            assert expected in fb[0]["reason"]
            # a slow edge is given up at the deadline, once (its late HTTP 500 would read "HTTP 500");
            # no wall-clock bound is asserted: it depends on the machine's load
            assert ("attempt 3 of 3" in fb[0]["reason"]) == (failure != "slow")
    finally:
        if bad:
            bad.close()


def test_edge_runs_the_cloud_part_when_the_cloud_is_down(plan3, signal, reference):
    edge = serve(plan3, "edge", {"cloud": f"http://127.0.0.1:{free_port()}"}, retries=0)
    try:
        flow = FlowSession(plan3, {"edge": edge.url}, deadline_s=60)
        (got,) = flow.run(None, {"signal": signal})
        np.testing.assert_array_equal(got, reference)
        assert flow.ran_on() == ["device", "edge", "edge"]
        assert [e["event"] for e in flow.last_trace] == ["compute", "transfer", "compute", "fallback", "compute"]
    finally:
        edge.shutdown()
        edge.server_close()


def test_a_slow_cloud_is_taken_over_by_the_edge_within_the_devices_deadline(plan3, signal, reference):
    slow = Misbehaving("slow")  # answers after 0.4 s
    edge = serve(plan3, "edge", {"cloud": slow.url}, deadline_s=5.0)
    try:
        edge.models["cnn-edge"].chain.warm(2)  # compile the cloud part on the edge: no deadline in this test
        flow = FlowSession(plan3, {"edge": edge.url}, deadline_s=0.6)  # the edge forwards with 0.3 s
        (got,) = flow.run(None, {"signal": signal})
        np.testing.assert_array_equal(got, reference)
        assert flow.ran_on() == ["device", "edge", "edge"]
        fb = next(e for e in flow.last_trace if e["event"] == "fallback")
        assert fb["tier"] == "cloud" and fb["ran_on"] == "edge" and "deadline of 0.300 s" in fb["reason"]
    finally:
        edge.shutdown()
        edge.server_close()
        slow.close()


def test_a_bad_input_is_reported_and_does_not_mark_the_tier_down(tmp_path, signal, reference):
    plan = make_plan(tmp_path, ["cloud"])  # the raw input goes to the cloud as it is
    cloud = serve(plan, "cloud")
    try:
        flow = FlowSession(plan, {"cloud": cloud.url}, retries=0, deadline_s=60)
        with pytest.raises(edgekit.InputError, match="expects shape"):  # the cloud's 400, then the device's own
            flow.run(None, {"signal": signal[:, :, :100]})
        (got,) = flow.run(None, {"signal": signal})
        np.testing.assert_array_equal(got, reference)
        assert flow.ran_on() == ["cloud"]  # not skipped as if it had failed
    finally:
        cloud.shutdown()
        cloud.server_close()


def test_a_masked_input_is_refused_before_anything_runs(plan3, signal):
    flow = FlowSession(plan3, {"edge": f"http://127.0.0.1:{free_port()}"}, retries=0)
    with pytest.raises(edgekit.InputError, match="'signal' is a masked array with masked entries"):
        flow.run(None, {"signal": np.ma.masked_greater(signal, 0)})


def test_a_failed_tier_is_skipped_during_its_cooldown(plan3, signal):
    flow = FlowSession(plan3, {"edge": f"http://127.0.0.1:{free_port()}"}, retries=0, cooldown_s=60)
    flow.run(None, {"signal": signal})
    flow.run(None, {"signal": signal})
    reason = next(e["reason"] for e in flow.last_trace if e["event"] == "fallback")
    assert "not retried yet" in reason


# ---------------------------------------------------------------- interop

class PlainV2:
    """A minimal V2 server running one ONNX file with no chaining and no trace (like Triton would)."""

    def __init__(self, path, name):
        session = edgekit.InferenceSession(path)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                assert self.path == f"/v2/models/{name}/infer"
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = decode_request(body, self.headers.get("Inference-Header-Content-Length"))
                outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, req.tensors)))
                body, headers = encode_response(name, outs, True)
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_plain_v2_server_in_the_middle(plan3, tiers, signal, reference):
    _, cloud = tiers
    plain = PlainV2(load_plan(plan3).parts[1].path, "cnn-edge")
    try:
        flow = FlowSession(plan3, {"edge": plain.url, "cloud": cloud.url}, deadline_s=60)
        np.testing.assert_array_equal(flow.run(None, {"signal": signal})[0], reference)
        assert flow.ran_on() == ["device", "edge", "cloud"]
        assert [e["to"] for e in flow.last_trace if e["event"] == "transfer"] == ["edge", "cloud"]
    finally:
        plain.close()


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_against_the_edge_tier(tiers, binary):
    httpclient = pytest.importorskip("tritonclient.http")
    edge, _ = tiers
    x = np.random.default_rng(2).standard_normal((3, 16, 256)).astype(np.float32)
    plan = load_plan(edge.models["cnn-edge"].chain.plan.dir)
    want = edgekit.InferenceSession(plan.parts[2].path).run(
        None, {"maxpool11": edgekit.InferenceSession(plan.parts[1].path).run(None, {"maxpool3": x})[0]})[0]
    client = httpclient.InferenceServerClient(edge.url[len("http://"):])
    try:
        assert client.is_server_live() and client.is_model_ready("cnn-edge")
        assert client.get_model_metadata("cnn-edge")["inputs"][0]["name"] == "maxpool3"
        inp = httpclient.InferInput("maxpool3", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary)
        result = client.infer("cnn-edge", [inp], outputs=[out], request_id="r7")
        np.testing.assert_array_equal(result.as_numpy("logits"), want)
        assert result.get_response()["id"] == "r7"
        trace = json.loads(result.get_response()["parameters"]["edgekit_trace"])
        assert [e["ran_on"] for e in trace if e["event"] == "compute"] == ["edge", "cloud"]
        with pytest.raises(Exception, match="expects shape"):
            inp = httpclient.InferInput("maxpool3", [1, 2, 3], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 2, 3), np.float32), binary_data=binary)
            client.infer("cnn-edge", [inp])
        result = client.infer("cnn-edge", [httpclient.InferInput("maxpool3", list(x.shape), "FP32")
                                           .set_data_from_numpy(x, binary_data=binary)],
                              request_compression_algorithm="gzip")
        np.testing.assert_array_equal(result.as_numpy("logits"), want)
    finally:
        client.close()


# ---------------------------------------------------------------- edgekit serve

def test_serve_verb_in_a_subprocess(plan3, signal, reference):
    env = dict(os.environ, EDGEKIT_TOKEN="t0k")
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", plan3, "--tier", "cloud", "--port", "0",
                             "--request-timeout", "20", "--max-connections", "8", "--max-json-bytes", "1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[0].startswith("  cnn-cloud: part 2 of") and "bearer token required" in lines[1], lines
        assert " on http://127.0.0.1:" in lines[1]  # the verb binds loopback by default
        url = lines[1].split(" on ")[1].split(";")[0].strip()
        edge = serve(plan3, "edge", {"cloud": url}, token=None)
        edge.models["cnn-edge"].chain.token = "t0k"
        try:
            flow = FlowSession(plan3, {"edge": edge.url}, deadline_s=60)
            np.testing.assert_array_equal(flow.run(None, {"signal": signal})[0], reference)
            assert flow.ran_on() == ["device", "edge", "cloud"]
        finally:
            edge.shutdown()
            edge.server_close()
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "edgekit", "serve", plan3, "--tier", "fog"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "tier 'fog' runs no part of the plan" in bad.stderr


@pytest.mark.parametrize("argv,message", [
    (["--port", "99999"], "expected a port from 0 to 65535"), (["--port", "-1"], "expected a port"),
    (["--retries", "-3"], "expected an integer >= 0"), (["--max-request-bytes", "-5"], "expected an integer >= 0"),
    (["--link", "edge-cloud:fast"], "expected A-B:BANDWIDTH,RTT"),
])
def test_serve_verb_refuses_bad_options(plan3, argv, message, capsys):
    from edgekit.cli_serve import add_serve_verbs

    parser = argparse.ArgumentParser()
    add_serve_verbs(parser.add_subparsers())
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["serve", plan3, "--tier", "edge", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--next", "http://127.0.0.1:notaport"], "Port could not be cast"),
    (["--next", "http://127.0.0.1:70000"], "Port out of range"),
    (["--next", "cloud=http://[::1"], "Invalid IPv6 URL"), (["--next", "http://:8001"], "names no host"),
    (["--link", "edge-clod:1Mbps,1ms"], "tier(s) ['clod'] that the plan"),
])
def test_serve_verb_refuses_bad_next_urls_and_links_before_serving(plan3, argv, message, monkeypatch):
    """A --next URL that cannot be reached by construction, or a link to a tier the plan lacks, is
    refused at start (it used to fail every forward, reported as an unreadable trace, or do nothing)."""
    from edgekit.cli_serve import add_serve_verbs

    def served(self, *a):
        raise AssertionError("the verb started serving")

    monkeypatch.setattr(TierServer, "serve_forever", served)

    parser = argparse.ArgumentParser()
    add_serve_verbs(parser.add_subparsers())
    args = parser.parse_args(["serve", plan3, "--tier", "edge", "--port", "0", *argv])
    with pytest.raises(edgekit.InputError, match=re.escape(message)):
        args.func(args)


@pytest.mark.parametrize("kw,message", [({"slowdown": 0.5}, "slowdown must be"), ({"slowdown": float("inf")}, "slowdown"),
                                        ({"deadline_s": 0}, "deadline_s"), ({"deadline_s": float("inf")}, "deadline_s"),
                                        ({"retries": -1}, "retries"), ({"cooldown_s": -1}, "cooldown_s")])
def test_bad_chain_settings_are_refused(plan3, kw, message):
    """A non-positive or infinite deadline made every forward fail (silent fallback) or hang, an
    infinite slowdown crashed every request."""
    with pytest.raises(edgekit.InputError, match=message):
        FlowSession(plan3, {}, **kw)


def test_a_port_out_of_range_is_a_clear_error(plan3):
    with pytest.raises(edgekit.InputError, match="cannot listen on 127.0.0.1:70000"):
        TierServer(Chain(load_plan(plan3), "cloud"), port=70000)


# ---------------------------------------------------------------- plans from the partitioner

def test_partitioner_plans_of_a_residual_cnn(tmp_path):
    """Every few cuts of a CNN with residual Adds over three tiers, as converters.partition writes
    them (several tensors per transfer, tensors passed through a tier): the same outputs."""
    path = os.path.join(os.path.dirname(MODEL), "paramfree_dw.onnx")
    model = onnx.load(path)
    tiers = [Tier("device", 1), Tier("edge", 1), Tier("cloud", 1)]
    links = [Link("device", "edge", 1e8, 0.001), Link("edge", "cloud", 1e8, 0.001)]
    part = partition(model, profile_model(model, {"batch": 2}, repeat=1, warmup=0).to_dict(), tiers, links)
    x = np.random.default_rng(3).random((2, 1, 28, 28)).astype(np.float32)
    want = edgekit.InferenceSession(path).run(None, {"image": x})[0]
    n, multi = len(part.problem.nodes), 0
    for k in range(0, n + 1, 4):
        for j in (k, min(n, k + 5)):
            a = [0] * k + [1] * (j - k) + [2] * (n - j)
            cost = evaluate(part.problem, a, tiers, links, part.options)
            d = str(tmp_path / f"{k}-{j}")
            write_plan(dataclasses.replace(part, result=Result(a, cost)), d, "pf")
            plan = load_plan(d)
            servers = {}
            for tier in ("cloud", "edge"):
                if plan.part_of(tier) is not None:
                    servers[tier] = serve(plan.dir, tier, {t: s.url for t, s in servers.items()}, deadline_s=60)
            try:
                flow = FlowSession(plan, {t: s.url for t, s in servers.items()}, deadline_s=60)
                np.testing.assert_array_equal(flow.run(None, {"image": x})[0], want)
                assert "fallback" not in [e["event"] for e in flow.last_trace]
                multi += max(len(p.inputs) for p in plan.parts) > 1
            finally:
                for s in servers.values():
                    s.shutdown()
                    s.server_close()
    assert multi >= 4
