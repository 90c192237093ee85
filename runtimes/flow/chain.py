"""Run a plan's parts from one tier on: its own part in-process, the rest forwarded down the chain.

A tier runs part k, sends the cut tensors to the tier of part k+1 and gets back the model's outputs
plus that tier's trace. When the next tier is down, answers with an error or misses the deadline
(after bounded retries), this tier runs the remaining parts itself: it holds the whole plan, so a
request is never lost. A tier that failed is skipped for ``cooldown_s`` so that later requests do
not each pay for the retries. Compute can be slowed down by a factor (a sleep proportional to the
time measured back to back at its first run) to emulate a slower tier on one machine.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np

from edgekit.errors import InputError, TierError

from .client import Reply, infer, restore_tensors
from .plan import FlowPlan, Link

TRACE = "edgekit_trace"        # response parameter: JSON list of trace events
SERVER_TIME = "edgekit_server_s"  # response parameter: the tier's own wall time for the request
CALIBRATION_RUNS = 7  # back-to-back runs of a part whose median compute time a slowdown stretches


class Chain:
    """The parts of ``plan`` as seen from ``tier``. ``endpoints`` maps a tier name to its V2 base
    URL; ``links`` True emulates the plan's links, or maps (from, to) to a Link."""

    def __init__(self, plan: FlowPlan, tier: str, *, endpoints: dict[str, str] | None = None,
                 deadline_s: float = 2.0, retries: int = 1, slowdown: float = 1.0,
                 links: bool | dict[tuple[str, str], Link] = False, token: str | None = None,
                 cooldown_s: float = 1.0) -> None:
        if slowdown < 1.0:
            raise InputError(f"slowdown must be >= 1 (a sleep cannot speed compute up), got {slowdown}")
        self.plan, self.tier = plan, tier
        self.endpoints = dict(endpoints or {})
        self.deadline_s, self.retries, self.slowdown = deadline_s, retries, slowdown
        self.links, self.token, self.cooldown_s = links, token, cooldown_s
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._hot: dict[tuple, float] = {}

    def session(self, k: int):
        """The InferenceSession of part k, built on first use (fallback parts load lazily)."""
        with self._lock:
            if k not in self._sessions:
                from edgekit import InferenceSession

                self._sessions[k] = InferenceSession(self.plan.parts[k].path)
            return self._sessions[k]

    def warm(self, k: int) -> None:
        """Plan and run part k once on zeros of the shapes the plan recorded for its inputs, so a
        fresh tier's first request does not pay compilation (and miss a deadline)."""
        shapes = self.plan.input_shapes(k)
        if shapes and all(isinstance(d, int) and d >= 0 for _, s in shapes.values() for d in s):
            try:
                self._compute(k, {n: np.zeros(s, dt) for n, (dt, s) in shapes.items()}, [])
            except InputError:  # the recorded shapes do not fit the part: requests will say why
                pass

    def input_dtypes(self, k: int) -> dict[str, np.dtype]:
        proto = self.session(k).get_modelmeta()
        from onnx import helper

        return {v.name: np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
                for v in proto.graph.input}

    def link(self, dst: str) -> Link | None:
        if self.links is True:
            return self.plan.link(self.tier, dst)
        if isinstance(self.links, dict):
            return self.links.get((self.tier, dst))
        return None

    def run(self, k: int, tensors: dict[str, np.ndarray],
            tensor_parameters: dict[str, dict] | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
        """The model outputs produced by parts k.. (fed with part k's inputs) and the trace events."""
        plan = self.plan
        results: dict[str, np.ndarray] = {}
        trace: list[dict] = []
        local = False
        if tensor_parameters:
            tensors = restore_tensors(tensors, tensor_parameters, self.input_dtypes(k))
        while k < len(plan.parts):
            part = plan.parts[k]
            if part.tier != self.tier and not local:
                try:
                    reply = self._forward(k, tensors, trace)
                except TierError as exc:
                    trace.append({"event": "fallback", "part": k, "tier": part.tier, "ran_on": self.tier,
                                  "reason": str(exc)})
                    local = True
                else:
                    produced = reply.tensors
                    if TRACE in reply.parameters:  # an edgekit tier: it ran the rest of the chain
                        results.update({n: a for n, a in produced.items() if n in plan.outputs})
                        return results, trace
                    # a plain V2 server ran only its part: carry on with the next one from here
                    results.update({n: a for n, a in produced.items() if n in plan.outputs})
                    tensors = self._next_inputs(k, produced)
                    k += 1
                    continue
            outputs = self._compute(k, tensors, trace)
            results.update({n: a for n, a in outputs.items() if n in plan.outputs})
            tensors = self._next_inputs(k, outputs)
            k += 1
        return results, trace

    def _next_inputs(self, k: int, produced: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if k + 1 >= len(self.plan.parts):
            return {}
        need = self.plan.parts[k + 1].inputs
        missing = [n for n in need if n not in produced]
        if missing:
            raise TierError(f"part {k} ({self.plan.parts[k].tier}) did not return {missing}, "
                            f"which part {k + 1} needs")
        return {n: produced[n] for n in need}

    def _compute(self, k: int, tensors: dict[str, np.ndarray], trace: list[dict]) -> dict[str, np.ndarray]:
        sess = self.session(k)
        names = [o.name for o in sess.get_outputs()]
        key = (k, tuple((n, a.shape) for n, a in tensors.items()))
        if key not in self._hot:  # the first run of new shapes plans and compiles: keep it out of the timing
            sess.run(None, tensors)
            self._hot[key] = self._calibrate(sess, tensors) if self.slowdown > 1.0 else 0.0
        t0 = time.perf_counter()
        values = sess.run(None, tensors)
        if self.slowdown > 1.0:
            time.sleep(self._hot[key] * (self.slowdown - 1.0))
        trace.append({"event": "compute", "part": k, "tier": self.plan.parts[k].tier, "ran_on": self.tier,
                      "compute_s": round(time.perf_counter() - t0, 7)})
        return dict(zip(names, values))

    @staticmethod
    def _calibrate(sess, tensors: dict[str, np.ndarray]) -> float:
        """Median time of back-to-back runs: the part's compute on this machine with warm caches, which
        the slowdown stretches (a run right after an emulated sleep finds cold caches: not the
        device's own speed, and not worth multiplying)."""
        times = []
        for _ in range(CALIBRATION_RUNS):
            t0 = time.perf_counter()
            sess.run(None, tensors)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def _forward(self, k: int, tensors: dict[str, np.ndarray], trace: list[dict]) -> Reply:
        dst = self.plan.parts[k].tier
        url = self.endpoints.get(dst)
        if url is None:
            raise TierError(f"no endpoint is known for tier {dst!r}")
        if time.monotonic() < self._down_until.get(dst, 0.0):
            raise TierError(f"tier {dst!r} failed less than {self.cooldown_s} s ago; not retried yet")
        try:
            reply = infer(url, self.plan.served_name(dst), tensors, compression=self.plan.into[k],
                          link=self.link(dst), deadline_s=self.deadline_s, retries=self.retries, token=self.token)
        except TierError:
            self._down_until[dst] = time.monotonic() + self.cooldown_s
            raise
        self._down_until.pop(dst, None)
        remote_s = float(reply.parameters.get(SERVER_TIME, 0.0))
        trace.append({"event": "transfer", "from": self.tier, "to": dst, "bytes": reply.request_bytes,
                      "reply_bytes": reply.reply_bytes, "attempts": reply.attempts,
                      "transfer_s": round(reply.round_trip_s - remote_s, 7)})
        if TRACE in reply.parameters:
            try:
                trace.extend(json.loads(reply.parameters[TRACE]))
            except (TypeError, ValueError):
                raise TierError(f"tier {dst!r} sent an unreadable trace") from None
        else:
            trace.append({"event": "compute", "part": k, "tier": dst, "ran_on": dst, "compute_s": None})
        return reply
