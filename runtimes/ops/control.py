"""Control flow: Loop and If, whose bodies are graphs that edgekit runs with plans of their own.

A body is specialised once per outer plan, for the shapes and dtypes it meets: its formal inputs
(iteration number, condition and loop-carried values; none for If branches) and the outer-scope
tensors it reads (``Node.implicit``; constant ones become body constants, so they fold). The body's
ops are edgekit kernels; stepping through iterations is a Python loop around the body plan's
``execute`` (control flow, not arithmetic), plus copies of carried values between iterations.

Semantics follow onnxruntime: a Loop runs while ``i < M`` (M omitted: no limit) and the condition
holds, the condition being the ``cond`` input (omitted: true) before the first iteration and the
body's condition output after each one (onnxruntime reads it even when ``cond`` is omitted). Scan
outputs are stacked along a new axis 0. Plans preallocate outputs at build time, so:
- loop-carried values must keep their shape and dtype across iterations;
- a Loop with scan outputs needs its trip count at build time: M constant, the ``cond`` input constant,
  and a body condition that is constant, passes its input through, or is computed from the iteration
  number and counters that start constant (tf2onnx's while loops: the trips are then counted by running
  that part of the body at build time); without scan outputs, M and the condition may be run-time values;
- an If whose condition is known only at run time needs both branches to give the same shapes.
Sequence and optional values are refused where they are made: edgekit registers no op producing them.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import UnsupportedOpError
from edgekit.ir import Graph, Node, ValueInfo, outer_names

from .registry import In, Kernel, Out, Tensor, Unsupported, check_output_bytes, register

if TYPE_CHECKING:
    from ..plan import Plan

NO_LIMIT = np.iinfo(np.int64).max
SCAN_TRIPS = ("a Loop with scan outputs needs its trip count at load time (plans preallocate outputs): M must be "
              "constant, and the condition constant or computed in the body from the iteration number, constants "
              "and carried values that start constant and are updated from such values only")
MAX_COUNTED = 1 << 16
"""The most iterations run at load time to count the trips of a Loop with scan outputs (see _counted_trips)."""


@register("Loop")
def build_loop(node: Node, inputs: list, opset: int) -> Kernel:
    body: Graph = node.attrs["body"]
    n_formal = len(inputs) - len(node.implicit)
    trip, cond, carried = inputs[0], inputs[1], inputs[2:n_formal]
    n_carried, n_scan = len(carried), len(body.outputs) - 1 - len(carried)
    if len(body.inputs) != 2 + n_carried or n_scan < 0:
        raise Unsupported(f"the body takes {len(body.inputs)} inputs and gives {len(body.outputs)} outputs for "
                          f"{n_carried} loop-carried values (it must take 2 + N and give 1 + N + scan outputs)")
    start = True if cond is None else bool(cond.value.reshape(-1)[0]) if cond.is_const else None
    if n_scan and (start is None or (start and trip is not None and not trip.is_const)):
        raise Unsupported(SCAN_TRIPS)
    formal = [Tensor(_scalar_shape(body.inputs[0]), np.dtype(np.int64)),
              Tensor(_scalar_shape(body.inputs[1]), np.dtype(np.bool_)), *carried]
    plan, outer = _specialize(node, "body", body, formal, inputs[n_formal:])
    results = [plan.outputs[o.name] for o in body.outputs]
    for k, (t, got) in enumerate(zip(carried, results[1:])):
        if got.shape != t.shape or got.dtype != t.dtype:
            raise Unsupported(f"loop-carried value {body.inputs[2 + k].name!r} enters as {t.dtype}{list(t.shape)} "
                              f"and the body returns {got.dtype}{list(got.shape)}: edgekit needs carried values "
                              f"of a fixed shape and dtype")
    trips = _static_trips(trip, start, plan, body)
    scans = results[1 + n_carried:]
    if scans and trips is None:
        trips = _counted_trips(node, body, formal, inputs[n_formal:], trip, start)
    if scans and trips is None:
        raise Unsupported(SCAN_TRIPS)
    outputs = [(t.shape, t.dtype) for t in carried] + [((trips, *s.shape), s.dtype) for s in scans]
    for shape, dtype in outputs[n_carried:]:
        check_output_bytes(node, shape, dtype)
    bufs = plan.input_buffers
    runner = _Loop(plan, bufs[body.inputs[0].name], bufs[body.inputs[1].name], results[0],
                   [bufs[vi.name] for vi in body.inputs[2:]], results[1:1 + n_carried], scans,
                   [bufs[x] for x, _ in outer])
    args = (None if trip is None else In(0), None if cond is None else In(1), *[In(2 + k) for k in range(n_carried)],
            *[In(i) for _, i in outer], *[Out(j) for j in range(len(outputs))])
    return Kernel(runner, args, outputs)


@register("If")
def build_if(node: Node, inputs: list, opset: int) -> Kernel:
    cond = inputs[0]
    branches = [node.attrs["else_branch"], node.attrs["then_branch"]]  # indexed by the condition
    if cond.is_const:
        chosen = int(bool(cond.value.reshape(-1)[0]))
        branches[1 - chosen] = branches[chosen]  # only the chosen branch is built and ever run
    built = [_specialize(node, attr, g, [], inputs[1:]) for attr, g in zip(("else_branch", "then_branch"), branches)]
    results = [[plan.outputs[o.name] for o in g.outputs] for g, (plan, _) in zip(branches, built)]
    shapes = [[(r.shape, r.dtype) for r in rs] for rs in results]
    if shapes[0] != shapes[1]:
        show = [", ".join(f"{d}{list(s)}" for s, d in branch) for branch in shapes]
        raise Unsupported(f"the condition is known only at run time and the branches give different outputs "
                          f"(then: {show[1]}; else: {show[0]}): plans preallocate outputs, so both branches "
                          f"must give the same shapes and dtypes")
    positions = sorted({i for _, outer in built for _, i in outer})
    runner = _If([(plan, [(plan.input_buffers[x], positions.index(i)) for x, i in outer], rs)
                  for (plan, outer), rs in zip(built, results)], len(positions))
    args = (In(0), *[In(i) for i in positions], *[Out(j) for j in range(len(shapes[0]))])
    return Kernel(runner, args, shapes[0])


class _Loop:
    """Run a Loop: ``(M, cond, *carried, *outer, *outputs)`` with M and cond arrays or None."""

    def __init__(self, plan: Plan, iteration: np.ndarray, cond_in: np.ndarray, cond_out: np.ndarray,
                 carried_in: list, carried_out: list, scans: list, outer: list) -> None:
        self.plan, self.iteration, self.cond_in, self.cond_out = plan, iteration, cond_in, cond_out
        self.carried_in, self.carried_out, self.scans, self.outer = carried_in, carried_out, scans, outer
        # A carried output that shares memory with a body input must be read whole before any is written.
        self.snapshot = any(np.may_share_memory(o, b) for o in carried_out for b in plan.input_list)
        self.inputs_safe = plan.sites.inputs_safe

    def __call__(self, trip: np.ndarray | None, cond: np.ndarray | None, *arrays: np.ndarray) -> int:
        """Run the iterations; returns how many ran."""
        n, m = len(self.carried_in), len(self.outer)
        for buf, a in zip(self.carried_in + self.outer, arrays[:n + m]):
            buf[...] = a
        outs = arrays[n + m:]
        limit = NO_LIMIT if trip is None else int(trip.reshape(-1)[0])
        go = True if cond is None else bool(cond.reshape(-1)[0])
        i = 0
        while go and i < limit:
            if i and not self.inputs_safe:  # a body step writes into its input buffers: restore the outer values
                for buf, a in zip(self.outer, arrays[n:n + m]):
                    buf[...] = a
            self.iteration[...] = i
            self.cond_in[...] = go
            self.plan.execute()
            go = bool(self.cond_out.reshape(-1)[0])
            for out, s in zip(outs[n:], self.scans):
                out[i] = s
            values = [v.copy() for v in self.carried_out] if self.snapshot else self.carried_out
            for buf, v in zip(self.carried_in, values):
                buf[...] = v
            i += 1
        for out, buf in zip(outs, self.carried_in):
            out[...] = buf
        return i


class _If:
    """Run an If: ``(cond, *outer, *outputs)``; branch 0 is else, 1 is then."""

    def __init__(self, branches: list, n_outer: int) -> None:
        self.branches = branches  # (plan, [(outer-scope input buffer, index in outer)], output arrays)
        self.n_outer = n_outer

    def __call__(self, cond: np.ndarray, *arrays: np.ndarray) -> None:
        plan, fills, results = self.branches[int(bool(cond.reshape(-1)[0]))]
        for buf, k in fills:
            buf[...] = arrays[k]
        plan.execute()
        for out, r in zip(arrays[self.n_outer:], results):
            out[...] = r


def _specialize(node: Node, attr: str, body: Graph, formal: list[Tensor], outer: list) -> tuple[Plan, list]:
    """A plan for ``body`` with its formal inputs of these shapes and the outer-scope tensors it reads
    (``outer`` pairs with ``node.implicit``): constant ones become body constants, the others body inputs.
    Returns the plan and, per run-time outer name, (name, index of the node input that carries it)."""
    from ..plan import prepare, specialize  # (the plan module imports the op registry)

    start = len(node.inputs) - len(node.implicit)
    tensors = dict(zip(node.implicit, outer))
    constants = dict(body.constants)
    inputs = [ValueInfo(vi.name, t.dtype, tuple(t.shape)) for vi, t in zip(body.inputs, formal)]
    runtime = []
    for x in outer_names(body):
        t = tensors[x]
        if t.is_const:
            constants[x] = t.value
        else:
            inputs.append(ValueInfo(x, t.dtype, tuple(t.shape)))
            runtime.append((x, start + node.implicit.index(x)))
    # (prepare fuses nodes in place: each plan works on a copy of the body's nodes)
    graph = Graph(copy.deepcopy(body.nodes), constants, inputs, body.outputs, body.opsets)
    try:
        plan = specialize(prepare(graph), {vi.name: vi.shape for vi in inputs})
    except UnsupportedOpError as exc:
        raise Unsupported("; ".join(f"its {attr} node {name!r} ({op}): {why or 'not supported'}"
                                    for name, op, _, _, why in exc.unsupported)) from None
    return plan, runtime


def _scalar_shape(vi: ValueInfo) -> tuple[int, ...]:
    """The shape of the iteration number or condition fed to a body: a scalar, or [1] when declared so."""
    return (1,) if vi.shape == (1,) else ()


def _static_trips(trip: Tensor | None, start: bool | None, plan: Plan, body: Graph) -> int | None:
    """The number of iterations when known at build time, else None (``start``: the condition on entry
    when known); Unsupported for a loop that would never end (no M and a condition that stays true)."""
    if start is False:
        return 0
    out = body.outputs[0].name
    folded = plan.sites.outputs[out] is None  # (the body's condition output is a constant)
    stays_true = (folded and bool(plan.outputs[out].reshape(-1)[0])) or \
        np.may_share_memory(plan.outputs[out], plan.input_buffers[body.inputs[1].name])
    if stays_true and trip is None:
        raise Unsupported("the Loop has no trip count M and a condition the body keeps true: it would never end")
    if start is None or not (stays_true or folded) or (trip is not None and not trip.is_const):
        return None
    limit = NO_LIMIT if trip is None else max(int(trip.value.reshape(-1)[0]), 0)
    return limit if stays_true else min(limit, 1)  # (a constant false condition stops after one iteration)


def _counted_trips(node: Node, body: Graph, formal: list[Tensor], outer: list, trip: Tensor | None,
                   start: bool) -> int | None:
    """The trip count of a Loop whose condition the body computes from values known at load time (the
    iteration number, constants, and carried values that start constant and are updated from such values
    only: tf2onnx's ``while i < n`` counters), found by running that part of the body at load time;
    None when the condition depends on anything else."""
    producers = {o: n for n in body.nodes for o in n.outputs}
    known = set(body.constants) | {x for x, t in zip(node.implicit, outer) if t.is_const}

    def leaves(name: str) -> set[str]:  # the body inputs and run-time outer names ``name`` is computed from
        stack, seen, found = [name], set(), set()
        while stack:
            x = stack.pop()
            if x not in seen:
                seen.add(x)
                if x in producers:
                    stack.extend(producers[x].inputs)
                elif x not in known and x:
                    found.add(x)
        return found

    ins, outs = [vi.name for vi in body.inputs], [vi.name for vi in body.outputs]
    static = {k for k, t in enumerate(formal[2:]) if t.is_const}
    while True:  # drop carried values updated from anything not static, until none is
        allowed = {ins[0], ins[1]} | {ins[2 + k] for k in static}
        kept = {k for k in static if leaves(outs[1 + k]) <= allowed}
        if kept == static:
            break
        static = kept
    if not leaves(outs[0]) <= allowed:
        return None
    counted = sorted(static)
    part = Graph(body.nodes, body.constants, body.inputs, [body.outputs[0]] + [body.outputs[1 + k] for k in counted],
                 body.opsets)
    plan, _ = _specialize(node, "body", part, formal, outer)
    bufs = plan.input_buffers
    results = [plan.outputs[outs[1 + k]] for k in counted]
    runner = _Loop(plan, bufs[ins[0]], bufs[ins[1]], plan.outputs[outs[0]], [bufs[ins[2 + k]] for k in counted],
                   results, [], [])
    limit = MAX_COUNTED + 1 if trip is None else min(int(trip.value.reshape(-1)[0]), MAX_COUNTED + 1)
    trips = runner(np.array(limit), np.array(start), *[formal[2 + k].value for k in counted],
                   *[np.empty_like(r) for r in results])
    if trips > MAX_COUNTED:
        raise Unsupported(f"the Loop's condition is still true after {MAX_COUNTED} iterations counted at load "
                          f"time: edgekit needs the trip count of a Loop with scan outputs")
    return trips
