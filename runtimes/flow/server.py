"""A tier server: the Open Inference Protocol (KServe V2 REST) on the standard library's HTTP server.

It serves its tier's part of a plan as ``{model}-{tier}``; an infer request runs that part and the
rest of the chain (see chain.py) and answers with the model's outputs and a trace in the response
``parameters``. Binds 127.0.0.1 by default; an optional bearer token guards every endpoint but
the health probes; bodies over ``max_request_bytes`` get 413 without being decoded. Every malformed
request gets a 4xx with a JSON ``{"error": ...}`` message and the server keeps serving.
"""
from __future__ import annotations

import hmac
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnx
from onnx import helper

from edgekit import __version__
from edgekit.errors import EdgekitError, InputError

from .chain import BUDGET, SERVER_TIME, TRACE, Chain
from .client import decode_body
from .protocol import HEADER_LENGTH, ProtocolError, datatype_of, decode_request, encode_error, encode_response

MAX_REQUEST_BYTES = 64 << 20
DRAIN_BYTES = 1 << 20  # a refused request body up to this size is read and dropped (keep-alive)
LINGER_S = 1.0  # a refused larger body: how long to keep reading it before closing
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")


@dataclass
class Served:
    """One served model: a plan's part run from its tier, with V2 metadata."""

    name: str
    chain: Chain
    part: int
    inputs: list[dict]
    outputs: list[dict]


class TierServer(ThreadingHTTPServer):
    """Serve each chain's own part as ``{model}-{tier}`` (several plans may share one server);
    ``serve_forever()`` in a thread or process, ``shutdown()`` to stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, chains: Chain | list[Chain], host: str = "127.0.0.1", port: int = 0, *,
                 token: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES, log: bool = False) -> None:
        self.models: dict[str, Served] = {}
        for chain in [chains] if isinstance(chains, Chain) else chains:
            k = chain.plan.part_of(chain.tier)
            if k is None:
                raise InputError(f"tier {chain.tier!r} runs no part of the plan in {chain.plan.dir}; "
                                 f"its parts run on {[p.tier for p in chain.plan.parts]}")
            name = chain.plan.served_name(chain.tier)
            if name in self.models:
                raise InputError(f"two plans serve the model name {name!r}; give the plans different model names")
            chain.warm(k)  # compile the own part for the plan's shapes before accepting requests
            self.models[name] = Served(name, chain, k, *_metadata(chain, k))
        self.token, self.max_request_bytes, self.log = token, max_request_bytes, log
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:  # port taken, address not on this machine, no permission
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> threading.Thread:
        """Serve from a daemon thread (for tests and embedding)."""
        t = threading.Thread(target=self.serve_forever, args=(0.05,), name="edgekit-tier", daemon=True)
        t.start()
        return t


def _metadata(chain: Chain, k: int) -> tuple[list[dict], list[dict]]:
    """V2 metadata (-1 for dynamic dims) of part k's inputs and of the model outputs that parts k..
    return, from the parts' graphs."""
    def meta(vi: onnx.ValueInfoProto) -> dict:
        tt = vi.type.tensor_type
        return {"name": vi.name, "datatype": datatype_of(np.empty(0, helper.tensor_dtype_to_np_dtype(tt.elem_type))),
                "shape": [d.dim_value if d.dim_value > 0 else -1 for d in tt.shape.dim]}

    plan = chain.plan
    graphs = [onnx.load(p.path, load_external_data=False).graph for p in plan.parts[k:]]
    outputs = {v.name: meta(v) for g in graphs for v in g.output if v.name in plan.outputs}
    return [meta(v) for v in graphs[0].input], [outputs[n] for n in plan.outputs if n in outputs]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = f"edgekit/{__version__}"
    sys_version = ""
    timeout = 60  # a client that stops sending mid-request frees its thread
    server: TierServer

    def log_message(self, fmt: str, *args) -> None:
        if self.server.log:
            super().log_message(fmt, *args)

    # -- answers
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: dict) -> None:
        self._send(status, json.dumps(doc).encode())

    def _error(self, status: int, message: str, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._send(status, encode_error(message))

    def _refuse(self, status: int, message: str) -> None:
        """Answer a POST whose body has not been read. A small body is read and dropped so the
        connection stays usable; otherwise the answer says Connection: close and the connection
        lingers, reading what the client still sends for a moment: closing a socket with unread
        data resets it, and the client could lose the answer."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= DRAIN_BYTES:
            self.rfile.read(int(length))
            return self._error(status, message)
        self._error(status, message, close=True)
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_S)
            end = time.monotonic() + LINGER_S
            while time.monotonic() < end and self.connection.recv(1 << 16):
                pass
        except OSError:
            pass

    def _authorized(self, post: bool = False) -> bool:
        token = self.server.token
        if not token:
            return True
        got = self.headers.get("Authorization", "")
        if got.startswith("Bearer ") and hmac.compare_digest(got[7:].strip().encode(), token.encode()):
            return True
        message = "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
        self._refuse(401, message) if post else self._error(401, message)
        return False

    # -- routes
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v2/health/live", "/v2/health/ready"):
            return self._json(200, {"live" if path.endswith("live") else "ready": True})
        if not self._authorized():
            return None
        if path == "/v2":
            return self._json(200, {"name": "edgekit", "version": __version__, "extensions": ["binary_tensor_data"]})
        m = _MODEL.match(path)
        if not m or m.group(3) == "/infer":
            return self._error(404 if not m else 405, f"no GET endpoint {self.path!r}" if not m
                               else "infer takes POST")
        served = self._model(m.group(1))
        if served is None:
            return None
        if m.group(3) == "/ready":
            return self._json(200, {"name": served.name, "ready": True})
        return self._json(200, {"name": served.name, "versions": ["1"], "platform": "edgekit_onnx",
                                "inputs": served.inputs, "outputs": served.outputs})

    def _model(self, name: str) -> Served | None:
        served = self.server.models.get(name)
        if served is None:
            self._error(404, f"unknown model {name!r}; this server serves {sorted(self.server.models)}")
        return served

    do_HEAD = do_GET

    def do_POST(self) -> None:
        start = time.perf_counter()
        if not self._authorized(post=True):
            return None
        m = _MODEL.match(self.path.split("?", 1)[0].rstrip("/"))
        if not m or m.group(3) != "/infer":
            return self._refuse(404, f"no POST endpoint {self.path!r}; infer is /v2/models/<name>/infer")
        served = self.server.models.get(m.group(1))
        if served is None:
            return self._refuse(404, f"unknown model {m.group(1)!r}; this server serves {sorted(self.server.models)}")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._refuse(411, "a Content-Length header is required (chunked bodies are not accepted)")
        limit = self.server.max_request_bytes
        if int(length) > limit:
            return self._refuse(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            try:
                self._error(400, f"the body ended after {len(body)} of {length} bytes", close=True)
            except OSError:  # the client has gone: nobody to answer
                pass
            return None
        try:
            body = decode_body(body, self.headers.get("Content-Encoding"), limit)
            request = decode_request(body, self.headers.get(HEADER_LENGTH))
            self._infer(served, request, start)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (deadline): nothing to answer
            self.close_connection = True
        except ProtocolError as exc:
            self._error(exc.status, str(exc))
        except InputError as exc:
            self._error(400, str(exc))
        except EdgekitError as exc:
            self._error(500, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug must cost one request, not the server
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _infer(self, served: Served, request, start: float) -> None:
        budget = request.parameters.get(BUDGET)
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise ProtocolError(f"parameter {BUDGET} must be a positive number of seconds, got {budget!r}")
        results, trace = served.chain.run(served.part, request.tensors, request.tensor_parameters, budget)
        names = request.outputs if request.outputs is not None else list(results)
        unknown = [n for n in names if n not in results]
        if unknown:
            raise ProtocolError(f"unknown output(s) {unknown}; {served.name} returns {list(results)}")
        binary = True if "*" in request.binary_outputs else request.binary_outputs
        params = {TRACE: json.dumps(trace, separators=(",", ":")), SERVER_TIME: time.perf_counter() - start}
        body, headers = encode_response(served.name, {n: results[n] for n in names}, binary,
                                        id=request.id, parameters=params)
        self._send(200, body, headers)
