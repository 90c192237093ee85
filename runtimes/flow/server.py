"""A tier server: the Open Inference Protocol (KServe V2 REST) on the standard library's HTTP server.

It serves its tier's part of a plan as ``{model}-{tier}``; an infer request runs that part and the
rest of the chain (see chain.py) and answers with the model's outputs and a trace in the response
``parameters``. Binds 127.0.0.1 by default; an optional bearer token guards every endpoint but
the health probes; bodies over ``max_request_bytes`` and JSON parts over ``max_json_bytes`` get
413 without being decoded. Each request must arrive whole within ``request_timeout`` s of its first
byte (else 408 or a closed connection), and at most ``max_connections`` connections are served at
once (more get 503 from the accepting thread). Every malformed request gets a 4xx with a JSON
``{"error": ...}`` message and the server keeps serving.
"""
from __future__ import annotations

import hmac
import io
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
from .protocol import (HEADER_LENGTH, MODEL_VERSION, ProtocolError, check_json_size, datatype_of, decode_request,
                       encode_error, encode_response)

MAX_REQUEST_BYTES = 64 << 20
MAX_JSON_BYTES = 8 << 20  # parsing JSON tensors takes 2.6-9x their text in memory (measured); binary data 1x
REQUEST_TIMEOUT_S = 30.0  # a request's line, headers and body must arrive within this of its first byte
MAX_CONNECTIONS = 64
DRAIN_BYTES = 1 << 20  # a refused request body up to this size is read and dropped (keep-alive)
LINGER_S = 1.0  # a refused larger body: how long to keep reading it before closing
MAX_LINGERING = 256  # connections refused by the cap still being drained; beyond it, closed at once
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")
_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")


def _no_version(name: str, version: str) -> str:
    """Why a request naming another version of a served model gets 404."""
    return f"model {name!r} has no version {version!r}; it is served as version {MODEL_VERSION} (or name no version)"


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
    request_queue_size = 128  # a burst waits to be accepted (and served or refused) rather than dropped

    def __init__(self, chains: Chain | list[Chain], host: str = "127.0.0.1", port: int = 0, *,
                 token: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES,
                 max_json_bytes: int = MAX_JSON_BYTES, request_timeout: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, log: bool = False) -> None:
        if not (request_timeout > 0 and max_connections >= 1 and max_request_bytes >= 0 and max_json_bytes >= 0):
            raise InputError("request_timeout must be > 0, max_connections >= 1 and the byte limits >= 0")
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
        self.token, self.max_request_bytes, self.max_json_bytes = token, max_request_bytes, max_json_bytes
        self.request_timeout, self.max_connections, self.log = request_timeout, max_connections, log
        self.active = 0  # connections being served (one thread each)
        self._lock = threading.Lock()
        self._lingering: list[tuple[float, socket.socket]] = []  # (close at, socket) refused by the cap
        try:
            super().__init__((host, port), _Handler)
        except (OSError, OverflowError) as exc:  # port taken or out of range, address not here, no permission
            raise InputError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def process_request(self, request: socket.socket, client_address) -> None:
        """Serve the connection from a thread when under ``max_connections``; otherwise answer 503
        from here (non-blocking, a few hundred bytes) and drain the connection a moment before
        closing it (see ``service_actions``), so a flood costs no threads."""
        with self._lock:
            admit = self.active < self.max_connections
            self.active += admit
        if admit:
            try:
                return super().process_request(request, client_address)
            except BaseException:  # no thread started (the caller closes the connection)
                with self._lock:
                    self.active -= 1
                raise
        body = encode_error(f"the server is serving its limit of {self.max_connections} connections; "
                            "retry shortly")
        try:
            request.setblocking(False)
            request.send(_BUSY % (len(body), body))
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if len(self._lingering) < MAX_LINGERING:
            self._lingering.append((time.monotonic() + LINGER_S, request))
        else:
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self.active -= 1

    def service_actions(self) -> None:
        """Between accepts: read what connections refused by the cap still send; close each at
        the client's end of stream or after LINGER_S (closing unread data would reset the
        connection, and the client could lose the 503)."""
        keep = []
        for close_at, sock in self._lingering:
            try:
                for _ in range(16):  # a bounded share of the accepting thread per pass
                    if not (data := sock.recv(1 << 16)):
                        break
                done = data == b""
            except BlockingIOError:
                done = False
            except OSError:
                done = True
            if done or time.monotonic() >= close_at:
                sock.close()
            else:
                keep.append((close_at, sock))
        self._lingering = keep

    def server_close(self) -> None:
        super().server_close()
        for _, sock in self._lingering:
            sock.close()
        self._lingering = []

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


class _DeadlineReader(io.RawIOBase):
    """The connection's reads with one deadline per request: the clock starts at the request's
    first byte and its line, headers and body must all arrive within ``limit_s`` (a client
    dripping a byte at a time cannot hold a thread longer); waiting for the next request on a
    kept-alive connection is bounded by ``limit_s`` too. Past the deadline reads raise TimeoutError."""

    def __init__(self, sock: socket.socket, limit_s: float) -> None:
        super().__init__()
        self.sock, self.limit_s = sock, limit_s
        self.deadline: float | None = None  # None: between requests

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.deadline is None:
            self.sock.settimeout(self.limit_s)
        else:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request deadline has passed")
            self.sock.settimeout(left)
        n = self.sock.recv_into(b)
        if self.deadline is None and n:
            self.deadline = time.monotonic() + self.limit_s
        return n


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = f"edgekit/{__version__}"
    sys_version = ""
    server: TierServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.reader = _DeadlineReader(self.connection, self.server.request_timeout)
        self.rfile = io.BufferedReader(self.reader, 1 << 16)

    def handle_one_request(self) -> None:
        self.reader.deadline = None  # the next request's clock starts at its first byte
        super().handle_one_request()

    def log_message(self, fmt: str, *args) -> None:
        if self.server.log:
            super().log_message(fmt, *args)

    # -- answers
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.connection.settimeout(self.server.request_timeout)  # a client that stops reading is dropped
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

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The errors http.server answers by itself (a malformed request line, a header line too long,
        too many headers) as JSON like every other error, and the connection closed."""
        text = message or self.responses.get(code, ("error",))[0]
        try:
            self._error(code, f"{text}: {explain}" if explain else text, close=True)
        except OSError:  # the client has gone
            pass

    def _not_allowed(self) -> None:
        """405 for methods the protocol does not use (PUT, DELETE, PATCH, OPTIONS ...)."""
        self._refuse(405, f"method {self.command} is not allowed: the Open Inference Protocol uses GET "
                          "(health, metadata) and POST (infer)")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _refuse(self, status: int, message: str) -> None:
        """Answer a POST whose body has not been read. A small body is read and dropped so the
        connection stays usable; otherwise the answer says Connection: close and the connection
        lingers, reading what the client still sends for a moment: closing a socket with unread
        data resets it, and the client could lose the answer."""
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= DRAIN_BYTES:
            self.rfile.read(int(length))
            return self._error(status, message)
        self._close_with(status, message)

    def _close_with(self, status: int, message: str) -> None:
        """Answer with Connection: close, then read what the client still sends for LINGER_S."""
        try:
            self._error(status, message, close=True)
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
        if got[:7].lower() == "bearer " and hmac.compare_digest(got[7:].strip().encode(), token.encode()):  # scheme: any case
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
        if m.group(2) not in (None, MODEL_VERSION):
            return self._error(404, _no_version(served.name, m.group(2)))
        if m.group(3) == "/ready":
            return self._json(200, {"name": served.name, "ready": True})
        return self._json(200, {"name": served.name, "versions": [MODEL_VERSION], "platform": "edgekit_onnx",
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
        if m.group(2) not in (None, MODEL_VERSION):
            return self._refuse(404, _no_version(served.name, m.group(2)))
        lengths = self.headers.get_all("Content-Length") or []
        length = lengths[0] if lengths else None
        if len(set(lengths)) > 1:
            return self._close_with(400, f"the request has several different Content-Length headers {lengths}")
        if length is None or not length.isdigit():
            return self._close_with(411, "a Content-Length header giving the body's size in bytes is required "
                                         f"(got {length!r}; chunked bodies are not accepted)")
        limit = self.server.max_request_bytes
        if int(length) > limit:
            return self._refuse(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        header_length = self.headers.get(HEADER_LENGTH)
        if self.headers.get("Content-Encoding", "identity").strip().lower() == "identity":
            json_length = header_length if header_length is not None else length
            try:
                check_json_size(int(json_length) if json_length.isdigit() else 0, self.server.max_json_bytes)
            except ProtocolError as exc:
                return self._refuse(exc.status, str(exc))
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:  # a client dripping its body: answer if it still listens
            return self._close_with(408, f"the request did not arrive within {self.server.request_timeout:g} s "
                                         "of its first byte: the body was incomplete")
        if len(body) != int(length):
            try:
                self._error(400, f"the body ended after {len(body)} of {length} bytes", close=True)
            except OSError:  # the client has gone: nobody to answer
                pass
            return None
        try:
            body = decode_body(body, self.headers.get("Content-Encoding"), limit)
            request = decode_request(body, header_length, self.server.max_json_bytes)
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
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 < budget < float("inf")):
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
