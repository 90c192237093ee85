"""Send one infer request to a V2 tier: compression, link emulation, deadline and bounded retries.

Link emulation happens here, in the sender: before the request leaves it sleeps the link's RTT plus
request bytes / bandwidth, and after the answer arrives it sleeps answer bytes / bandwidth, so
loopback behaves like the link the plan was made for. The deadline covers all of it, retries
included; a tier that refuses the connection or answers 5xx is retried, a timeout is not.
"""
from __future__ import annotations

import http.client
import io
import socket
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass

import numpy as np

from edgekit.errors import TierError

from .plan import Link
from .protocol import HEADER_LENGTH, ProtocolError, decode_response, encode_request

INT8_SCALE = "edgekit_scale"  # tensor parameter: float value = int8 value * scale
FP16_MAX = float(np.finfo(np.float16).max)


class RemoteError(TierError):
    """A tier failed; ``retryable`` when trying again may help (refused, reset, 5xx)."""

    def __init__(self, message: str, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass
class Reply:
    """A decoded answer and what it cost: attempts, bytes each way, wall time of the last attempt."""

    tensors: dict[str, np.ndarray]
    parameters: dict
    attempts: int
    request_bytes: int
    reply_bytes: int
    round_trip_s: float


def compress_tensors(tensors: dict[str, np.ndarray], compression: str | None
                     ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Apply fp16 or int8 (symmetric, per tensor) to float tensors before they are sent; a tensor
    the codec cannot represent (NaN or Inf for int8, values beyond 65504 for fp16) is sent exact."""
    if compression not in ("fp16", "int8"):
        return tensors, {}
    out, params = {}, {}
    for n, a in tensors.items():
        peak = float(np.max(np.abs(a), initial=0.0)) if a.dtype.kind == "f" else np.nan
        if not (peak <= (FP16_MAX if compression == "fp16" else np.finfo(np.float64).max)):
            out[n] = a  # not float, or NaN/Inf (int8 has neither) or beyond fp16's range: sent exact, not wrong
        elif compression == "fp16":
            out[n] = a.astype(np.float16)
        else:
            scale = peak / 127.0 if peak > 0 else 1.0
            out[n] = np.clip(np.rint(a / scale), -127, 127).astype(np.int8)
            params[n] = {INT8_SCALE: scale}
    return out, params


def restore_tensors(tensors: dict[str, np.ndarray], params: dict[str, dict],
                    dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Undo compress_tensors on the receiving side, given the dtypes the part expects: FP16 to a
    float input widens, INT8 with an ``edgekit_scale`` dequantizes; anything else is left for the
    session to accept or reject."""
    out = {}
    for n, a in tensors.items():
        want = dtypes.get(n)
        scale = (params.get(n) or {}).get(INT8_SCALE)
        if want is not None and want.kind == "f" and a.dtype != want:
            if scale is not None and a.dtype == np.int8:
                a = (a.astype(np.float32) * np.float32(scale)).astype(want)
            elif a.dtype == np.float16:
                a = a.astype(want)
        out[n] = a
    return out


def encode_body(body: bytes, compression: str | None) -> tuple[bytes, dict[str, str]]:
    """Compress a whole body for zstd / lz4 transfers (sent as Content-Encoding)."""
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(body), {"Content-Encoding": "zstd"}
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.compress(body), {"Content-Encoding": "lz4"}
    return body, {}


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a request's Content-Encoding (gzip, deflate, zstd, lz4) without inflating past ``limit``."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate", "zstd", "lz4"):
        raise ProtocolError(f"Content-Encoding {encoding!r} is not supported (use gzip, deflate, zstd, lz4)", 415)
    try:
        if encoding in ("gzip", "deflate"):
            d = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
            out = d.decompress(body, limit + 1)
        elif encoding == "zstd":
            import zstandard

            try:
                out = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read(limit + 1)
            except zstandard.ZstdError as exc:  # not a RuntimeError
                raise ValueError(exc) from None
        elif encoding == "lz4":
            import lz4.frame

            out = lz4.frame.open(io.BytesIO(body), "rb").read(limit + 1)
    except ImportError:
        raise ProtocolError(f"Content-Encoding {encoding!r} needs a package this server lacks", 415) from None
    except (zlib.error, ValueError, RuntimeError, EOFError) as exc:  # lz4: RuntimeError, EOFError
        raise ProtocolError(f"cannot decode the {encoding} body: {exc}") from None
    if len(out) > limit:
        raise ProtocolError(f"the request body inflates past the limit of {limit} bytes", 413)
    return out


_local = threading.local()  # per thread: (host, port) -> kept-alive HTTPConnection


def _post(url: str, path: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, dict, bytes]:
    """One POST over this thread's kept-alive connection to the host; a connection the server has
    closed since its last use is replaced once (the request never reached the server)."""
    u = urllib.parse.urlsplit(url)
    pool = _local.__dict__.setdefault("conns", {})
    key = (u.hostname, u.port or 80)
    for fresh in (key not in pool, True):
        conn = pool.get(key) if not fresh else None
        if conn is None:
            conn = pool[key] = http.client.HTTPConnection(*key, timeout=timeout)
        else:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        try:
            conn.request("POST", u.path.rstrip("/") + path, body, headers)
            r = conn.getresponse()
            reply = r.read()
            if r.will_close:
                conn.close()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, reply
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            pool.pop(key, None)
            if fresh:
                raise
        except BaseException:
            conn.close()
            pool.pop(key, None)
            raise
    raise AssertionError("unreachable")


def infer(url: str, model: str, tensors: dict[str, np.ndarray], *, compression: str | None = None,
          link: Link | None = None, deadline_s: float = 5.0, retries: int = 1, token: str | None = None,
          parameters: dict | None = None) -> Reply:
    """POST tensors to ``{url}/v2/models/{model}/infer`` and decode the answer; raises RemoteError."""
    start = time.perf_counter()
    sent, tparams = compress_tensors(tensors, compression)
    body, headers = encode_request(sent, binary=True, binary_outputs=True, parameters=parameters,
                                   tensor_parameters=tparams)
    body, extra = encode_body(body, compression)
    headers.update(extra)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    link = link or Link()
    attempt = 0
    while True:
        attempt += 1
        try:
            return _attempt(url, model, body, headers, link, start, deadline_s, attempt)
        except RemoteError as exc:
            left = deadline_s - (time.perf_counter() - start)
            if not exc.retryable or attempt > retries or left <= 0:
                raise RemoteError(f"{exc} (attempt {attempt} of {retries + 1})", exc.retryable, exc.status) from None
            time.sleep(min(0.005 * 2 ** attempt, left / 2))


def _attempt(url: str, model: str, body: bytes, headers: dict, link: Link, start: float,
             deadline_s: float, attempt: int) -> Reply:
    def left() -> float:
        remaining = deadline_s - (time.perf_counter() - start)
        if remaining <= 0:
            raise RemoteError(f"{url}: no answer within the deadline of {deadline_s:.3f} s")
        return remaining

    t0 = time.perf_counter()
    delay = link.time(len(body))
    if delay:
        time.sleep(min(delay, left()))
        left()
    try:
        status, rheaders, reply = _post(url, f"/v2/models/{model}/infer", body, headers, left())
    except (socket.timeout, TimeoutError):
        raise RemoteError(f"{url}: no answer within the deadline of {deadline_s:.3f} s") from None
    except (ConnectionError, OSError, http.client.HTTPException) as exc:
        raise RemoteError(f"{url} is unreachable: {exc}", retryable=True) from None
    back = link.time(len(reply)) - link.time(0)
    if back:
        time.sleep(min(back, left()))
        left()
    if status != 200:
        text = reply[:300].decode("utf-8", "replace")
        raise RemoteError(f"{url} answered HTTP {status}: {text}", retryable=status >= 500, status=status)
    try:
        msg = decode_response(reply, rheaders.get(HEADER_LENGTH.lower()))
    except ProtocolError as exc:
        raise RemoteError(f"{url} sent a malformed answer: {exc}") from None
    return Reply(msg.tensors, msg.parameters, attempt, len(body), len(reply), time.perf_counter() - t0)
