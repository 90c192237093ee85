"""Run a plan's parts from one tier on: its own part in-process, the rest forwarded down the chain.

A tier runs part k, sends the cut tensors to the tier of part k+1 and gets back the model's outputs
plus that tier's trace. When the next tier is down, answers with an error or misses the deadline
(after bounded retries), this tier runs the remaining parts itself: it holds the whole plan, so a
request is never lost. A tier that failed is skipped for ``cooldown_s`` so that later requests do
not each pay for the retries. Compute can be slowed down by a factor (a sleep proportional to the
part's undisturbed compute time, the fastest run seen) to emulate a slower tier on one machine;
when the wait leaves room, a warm run inside it keeps that time up to date (the machine's speed
drifts, and runs after a sleep are cold).
"""
from __future__ import annotations

import importlib.util
import json
import threading
import time

import numpy as np
from onnx import helper

from edgekit.errors import InputError, TierError

from ..session import InferenceSession
from .client import infer, restore_tensors
from .plan import FlowPlan, Link, either_way

TRACE = "edgekit_trace"        # response parameter: JSON list of trace events
SERVER_TIME = "edgekit_server_s"  # response parameter: the tier's own wall time for the request
BUDGET = "edgekit_deadline_s"  # request parameter: how long the caller waits for the answer
CALIBRATION_RUNS = 7  # back-to-back runs of a part whose fastest time a slowdown stretches ...
CALIBRATION_ROUNDS = 5  # ... in a few rounds apart, so that one busy moment of the machine
CALIBRATION_GAP_S = 0.01  # cannot inflate them all
REFINE_ROOM = 3.0  # a slowdown of 1 + this leaves room in its wait for one more (warm) run


class Chain:
    """The parts of ``plan`` as seen from ``tier``. ``endpoints`` maps a tier name to its V2 base
    URL; ``links`` True emulates the plan's links, or maps (from, to) to a Link."""

    def __init__(self, plan: FlowPlan, tier: str, *, endpoints: dict[str, str] | None = None,
                 deadline_s: float = 2.0, retries: int = 1, slowdown: float = 1.0,
                 links: bool | dict[tuple[str, str], Link] = False, token: str | None = None,
                 cooldown_s: float = 1.0) -> None:
        if not 1.0 <= slowdown < float("inf"):
            raise InputError(f"slowdown must be a finite number >= 1 (a sleep cannot speed compute up), got {slowdown}")
        if not (0 < deadline_s < float("inf") and retries >= 0 and cooldown_s >= 0):
            raise InputError(f"need 0 < deadline_s < inf, retries >= 0 and cooldown_s >= 0; got deadline_s={deadline_s}, "
                             f"retries={retries}, cooldown_s={cooldown_s}")
        for comp, module in (("zstd", "zstandard"), ("lz4", "lz4.frame")):
            if comp in plan.into and importlib.util.find_spec(module.split(".")[0]) is None:
                raise InputError(f"the plan compresses transfers with {comp}: pip install {module.split('.')[0]}")
        self.plan, self.tier = plan, tier
        self.endpoints = dict(endpoints or {})
        self.deadline_s, self.retries, self.slowdown = deadline_s, retries, slowdown
        self.links, self.token, self.cooldown_s = links, token, cooldown_s
        self._sessions: dict[int, InferenceSession] = {}
        self._input_dtypes: dict[int, dict[str, np.dtype]] = {}
        self._output_names: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._hot: dict[tuple, float] = {}

    def session(self, k: int) -> InferenceSession:
        """The InferenceSession of part k, built on first use (fallback parts load lazily)."""
        with self._lock:
            if k not in self._sessions:
                sess = self._sessions[k] = InferenceSession(self.plan.parts[k].path)
                self._input_dtypes[k] = {v.name: np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
                                         for v in sess.model.graph.input}
                self._output_names[k] = [o.name for o in sess.get_outputs()]
            return self._sessions[k]

    def warm(self, k: int) -> None:
        """Plan and run part k once on zeros of the shapes the plan recorded for its inputs, so a
        fresh tier's first request does not pay compilation (and miss a deadline)."""
        self.session(k)
        shapes = self.plan.input_shapes(k)
        if shapes and all(isinstance(d, int) and d >= 0 for _, s in shapes.values() for d in s):
            try:
                self._compute(k, {n: np.zeros(s, dt) for n, (dt, s) in shapes.items()}, [])
            except InputError:  # the recorded shapes do not fit the part: requests will say why
                pass

    def input_dtypes(self, k: int) -> dict[str, np.dtype]:
        """Part k's input dtypes (what compressed tensors are restored to), read once with its session."""
        self.session(k)
        return self._input_dtypes[k]

    def link(self, dst: str) -> Link | None:
        """The emulated link from this tier to ``dst``, None when links are not emulated."""
        if self.links is True:
            return self.plan.link(self.tier, dst)
        if isinstance(self.links, dict):
            return either_way(self.links, self.tier, dst)
        return None

    def run(self, k: int, tensors: dict[str, np.ndarray], tensor_parameters: dict[str, dict] | None = None,
            budget_s: float | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
        """The model outputs produced by parts k.. (fed with part k's inputs) and the trace events.
        ``budget_s``: the time the caller waits for this answer (its deadline for this tier); a
        forward then waits at most half of it, leaving the rest to run the parts here on failure."""
        plan = self.plan
        deadline_s = self.deadline_s if budget_s is None else min(self.deadline_s, 0.5 * budget_s)
        results: dict[str, np.ndarray] = {}
        trace: list[dict] = []
        local = False
        if tensor_parameters:
            tensors = restore_tensors(tensors, tensor_parameters, self.input_dtypes(k))
        while k < len(plan.parts):
            if plan.parts[k].tier != self.tier and not local:
                try:
                    produced, finished = self._forward(k, tensors, trace, deadline_s)
                except TierError as exc:
                    trace.append({"event": "fallback", "part": k, "tier": plan.parts[k].tier, "ran_on": self.tier,
                                  "reason": str(exc)})
                    local = True
                    continue
                results.update({n: a for n, a in produced.items() if n in plan.outputs})
                if finished:  # an edgekit tier ran the rest of the chain
                    return results, trace
            else:
                produced = self._compute(k, tensors, trace)
                results.update({n: a for n, a in produced.items() if n in plan.outputs})
            # load_plan checked that part k outputs part k+1's inputs (_forward checks remote answers)
            tensors = {n: produced[n] for n in plan.parts[k + 1].inputs} if k + 1 < len(plan.parts) else {}
            k += 1
        return results, trace

    def _compute(self, k: int, tensors: dict[str, np.ndarray], trace: list[dict]) -> dict[str, np.ndarray]:
        sess = self.session(k)
        names = self._output_names[k]
        key = (k, tuple((n, a.shape) for n, a in tensors.items()))
        if key not in self._hot:  # the first run of new shapes plans and compiles: keep it out of the timing
            sess.run(None, tensors)
            self._hot[key] = self._calibrate(sess, tensors) if self.slowdown > 1.0 else 0.0
        t0 = time.perf_counter()
        values = sess.run(None, tensors)
        if self.slowdown > 1.0:  # every run refines the undisturbed time: the fastest seen
            hot = self._hot[key] = min(self._hot[key], time.perf_counter() - t0)
            wake = time.perf_counter() + hot * (self.slowdown - 1.0)
            if self.slowdown >= 1.0 + REFINE_ROOM:  # a warm run fits in the emulated wait: refine with it
                t1 = time.perf_counter()
                sess.run(None, tensors)
                self._hot[key] = min(self._hot[key], time.perf_counter() - t1)
            time.sleep(max(0.0, wake - time.perf_counter()))
        trace.append({"event": "compute", "part": k, "tier": self.plan.parts[k].tier, "ran_on": self.tier,
                      "compute_s": round(time.perf_counter() - t0, 7)})
        return dict(zip(names, values))

    @staticmethod
    def _calibrate(sess: InferenceSession, tensors: dict[str, np.ndarray]) -> float:
        """The part's compute time on this machine undisturbed: the fastest of a few rounds of
        back-to-back runs, a few ms apart (later runs lower it if they are faster). A slowdown
        stretches this, not each run's time: a run right after an emulated sleep finds cold caches,
        and one preempted by another process would be stretched F times. Rounds apart, because
        on a busy machine all runs of one short burst may share the cores with another process."""
        times = []
        for r in range(CALIBRATION_ROUNDS):
            if r:
                time.sleep(CALIBRATION_GAP_S)
            for _ in range(CALIBRATION_RUNS):
                t0 = time.perf_counter()
                sess.run(None, tensors)
                times.append(time.perf_counter() - t0)
        return min(times)

    def _forward(self, k: int, tensors: dict[str, np.ndarray], trace: list[dict],
                 deadline_s: float) -> tuple[dict, bool]:
        """Send part k's inputs to its tier: (the tensors it answered, whether it ran the whole rest
        of the chain). An edgekit tier answers with the model outputs and its trace; a plain V2
        server with part k's outputs only. Raises TierError (and marks the tier down) on failure."""
        plan, dst = self.plan, self.plan.parts[k].tier
        url = self.endpoints.get(dst)
        if url is None:
            raise TierError(f"no endpoint is known for tier {dst!r}")
        if time.monotonic() < self._down_until.get(dst, 0.0):
            raise TierError(f"tier {dst!r} failed less than {self.cooldown_s} s ago; not retried yet")
        try:
            reply = infer(url, plan.served_name(dst), tensors, compression=plan.into[k], link=self.link(dst),
                          deadline_s=deadline_s, retries=self.retries, token=self.token,
                          parameters={BUDGET: deadline_s})
            finished = TRACE in reply.parameters
            if finished:
                need = [n for p in plan.parts[k:] for n in p.outputs if n in plan.outputs]
            else:
                need = list(plan.parts[k + 1].inputs if k + 1 < len(plan.parts) else []) + [
                    n for n in plan.parts[k].outputs if n in plan.outputs]
            missing = [n for n in need if n not in reply.tensors]
            if missing:
                raise TierError(f"tier {dst!r} answered without {missing}")
            remote = json.loads(reply.parameters[TRACE]) if finished else [
                {"event": "compute", "part": k, "tier": dst, "ran_on": dst, "compute_s": None}]
            remote_s = float(reply.parameters.get(SERVER_TIME, 0.0))
            if not isinstance(remote, list) or not all(isinstance(e, dict) and "event" in e for e in remote):
                raise ValueError("not a list of events")
        except (TypeError, ValueError):
            self._down_until[dst] = time.monotonic() + self.cooldown_s
            raise TierError(f"tier {dst!r} sent an unreadable trace or server time") from None
        except TierError as exc:
            if not 400 <= (getattr(exc, "status", None) or 0) < 500:  # a 4xx blames the request, not the tier
                self._down_until[dst] = time.monotonic() + self.cooldown_s
            raise
        self._down_until.pop(dst, None)
        trace.append({"event": "transfer", "from": self.tier, "to": dst, "bytes": reply.request_bytes,
                      "reply_bytes": reply.reply_bytes, "attempts": reply.attempts,
                      "transfer_s": round(reply.round_trip_s - remote_s, 7)})
        trace.extend(remote)
        return reply.tensors, finished
