"""Compile an ONNX graph into a flat execution plan.

Two stages. ``prepare`` runs once per model: topological order, dead-node removal, a check that
every op is supported, and graph fusions (BatchNormalization folded into Conv/Gemm, activations
fused into their epilogue). ``specialize`` runs once per distinct set of input shapes: every
builder sees concrete shapes, nodes whose kernels read only known inputs are folded into constants, and
every remaining tensor gets a buffer from a pool reused by liveness. Running the plan is then a
loop of ``fn(*args)`` calls with all arguments bound in advance. ``Plan.run`` can also read the
caller's input arrays in place and write outputs into fresh arrays, by swapping those arguments
of the few steps that touch them (see ``Sites``).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgekit.errors import InputError, ModelError, UnsupportedOpError
from edgekit.ir import Graph, Node, live_nodes

from . import fusion, rewrites
from .kernels import KernelInputError
from .ops import BUILDERS
from .ops.registry import (MAX_PLAN_BYTES, Constant, In, Kernel, Out, Tensor, Unsupported, View, aligned_bytes,
                            tensor_bytes)


@dataclass
class Prepared:
    """A graph in execution order, fused, with every op known to be supported."""

    graph: Graph
    nodes: list[Node]


@dataclass
class Sites:
    """Where steps read the input buffers and read or write the output buffers, so a run can swap in
    the caller's input arrays and fresh output arrays instead of copying in and out.

    Slots are the inputs (in input order) then the output roots (buffers behind the graph outputs).
    ``steps`` lists (step index, ((arg position, slot, reshape or None), ...)). ``outputs`` maps each
    graph output to (slot, reshape or None), or None for a folded constant. ``inputs_safe`` is False
    when a step writes into an input buffer (then inputs are always copied in).
    """

    steps: list[tuple[int, tuple[tuple[int, int, tuple | None], ...]]]
    roots: list[tuple[tuple[int, ...], np.dtype]]
    outputs: dict[str, tuple[int, tuple | None] | None]
    inputs_safe: bool


@dataclass
class Plan:
    """Bound steps for one set of input shapes."""

    input_buffers: dict[str, np.ndarray]
    steps: list[tuple[Callable[..., Any], tuple]]
    outputs: dict[str, np.ndarray]
    arena_bytes: int
    # For profilers: the node each step runs, and every tensor's bound buffer (views included) or
    # folded value. Buffers are shared by liveness: a tensor's data is valid from its step to its last use.
    step_nodes: list[Node] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    sites: Sites | None = None

    def __post_init__(self) -> None:
        self.input_list = list(self.input_buffers.values())
        self.output_list = list(self.outputs.values())
        # None until the first run has checked that no step writes into the input buffers; False for good
        # when a step does (then inputs are always copied in).
        self._inputs_untouched: bool | None = None if self.sites is None or self.sites.inputs_safe else False
        # The steps as ``run`` calls them: a step that touches inputs or outputs gets an argument list
        # of its own and (position, slot, reshape, bound buffer) for each argument ``run`` swaps.
        patched = dict(self.sites.steps) if self.sites else {}
        self._runs = [(fn, list(args), tuple((pos, slot, shape, args[pos]) for pos, slot, shape in patched[i]))
                      if i in patched else (fn, args, ()) for i, (fn, args) in enumerate(self.steps)]
        # Per graph output, what ``run`` hands out: (slot, reshape, True when that slot is a fresh root
        # array) or None for a folded constant.
        n_in = len(self.input_list)
        self._handout = {name: None if where is None else (where[0], where[1], where[0] >= n_in)
                         for name, where in (self.sites.outputs.items() if self.sites else ())}

    def execute(self) -> None:
        """Run every step on the bound buffers (inputs must already be in ``input_buffers``)."""
        for fn, args in self.steps:
            fn(*args)

    def run(self, arrays: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
        """Run on ``arrays`` (in input order, shapes as specialized) and return the outputs ``names``.

        Inputs that are C-contiguous, aligned, writeable arrays of the buffer's dtype are read in place
        (never written) once a first run, with copied inputs, has seen the steps leave the input
        buffers intact; others are copied into the input buffers. Outputs are written into fresh
        arrays that are handed out (a copy when that array was already handed out or is an input).
        One run at a time: the swapped arguments live in the plan (the session runs under a lock).
        A kernel refusing the values (KernelInputError) becomes InputError naming its node.
        """
        untouched = self._inputs_untouched
        vals: list[np.ndarray | None] = []
        for buf, a in zip(self.input_list, arrays):
            if untouched and a.dtype == buf.dtype and a.flags.carray and a is not buf:
                vals.append(a)
            else:
                buf[...] = a
                vals.append(None)
        for shape, dtype in self.sites.roots:
            vals.append(np.empty(shape, dtype))
        try:
            for fn, args, patches in self._runs:
                for pos, slot, shape, bound in patches:
                    v = vals[slot]
                    args[pos] = bound if v is None else v if shape is None else v.reshape(shape)
                fn(*args)
        except KernelInputError as exc:  # (a bug in a kernel raises anything else, and passes through)
            node = self.step_nodes[next(i for i, run in enumerate(self._runs) if run[1] is args)]
            raise InputError(f"node '{node.name}' ({node.op_type}) refused the values it was given: {exc}") from exc
        if untouched is None:
            self._inputs_untouched = all(_same_bytes(b, a) for b, a in zip(self.input_list, arrays))
        handout = self._handout
        if len(names) == 1:  # the usual call: one output, nothing handed out yet
            where = handout[names[0]]
            if where is not None and where[2] and where[1] is None:
                return [vals[where[0]]]
        out, given = [], set()
        for name in names:
            where = handout[name]
            if where is None:
                out.append(self.outputs[name].copy())
                continue
            slot, shape, fresh = where
            v = vals[slot] if vals[slot] is not None else self.input_list[slot]
            v = v if shape is None else v.reshape(shape)
            out.append(v if fresh and slot not in given else v.copy())
            given.add(slot)
        return out


def prepare(graph: Graph) -> Prepared:
    """Order, prune, fuse and check the graph (see module docstring)."""
    nodes = _toposort(graph)
    nodes = live_nodes(nodes, [o.name for o in graph.outputs])
    nodes = rewrites.rewrite(graph, nodes)
    nodes = fusion.fuse(nodes, graph.constants, graph.opset, {o.name for o in graph.outputs})
    odd = {vi.name: ("an untyped" if vi.dtype is None else "a string" if vi.dtype.kind in "OSU"
                     else f"a {vi.dtype.name}") + " tensor: edgekit computes float, integer and bool tensors"
           for vi in graph.inputs if vi.dtype is None or vi.dtype.kind in "OSUV"}  # (bfloat16, float8: kind V)
    unread = sorted(set(odd) - {x for n in nodes for x in n.inputs})  # (listed as the graph inputs they are)
    unsupported = [(x, "graph input", "", graph.opset, odd[x]) for x in unread] + [
        (n.name, n.op_type, n.domain, graph.opsets.get(n.domain, 0),
         "; ".join(f"input {x!r} is {odd[x]}" for x in n.inputs if x in odd)
         or ("not implemented" if not n.domain else f"edgekit implements no ops of domain {n.domain!r}"
             if not any(d == n.domain for d, _ in BUILDERS) else f"not an op of domain {n.domain!r}"))
        for n in nodes if (n.domain, n.op_type) not in BUILDERS or any(x in odd for x in n.inputs)
    ]
    if unsupported:
        raise UnsupportedOpError(unsupported)
    return Prepared(graph, nodes)


def _toposort(graph: Graph) -> list[Node]:
    known = set(graph.constants) | {i.name for i in graph.inputs} | {""}
    producers: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for o in n.outputs:
            if o:
                producers[o] = i
    pending = {i: {x for x in n.inputs if x not in known} for i, n in enumerate(graph.nodes)}
    for i, missing in pending.items():
        for x in missing:
            if x not in producers:
                n = graph.nodes[i]
                raise ModelError(f"node {n.name!r} ({n.op_type}) reads {x!r}, which no node, input or initializer defines")
    consumers: dict[int, set[int]] = {}  # (a set: a node reading two outputs of one node is queued once)
    for i, missing in pending.items():
        for x in missing:
            consumers.setdefault(producers[x], set()).add(i)
    ready = [i for i, m in pending.items() if not m]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(graph.nodes[i])
        produced = set(graph.nodes[i].outputs)
        for c in consumers.get(i, []):
            pending[c] -= produced
            if not pending[c]:
                heapq.heappush(ready, c)
    if len(order) != len(graph.nodes):
        stuck = [graph.nodes[i].name for i, m in pending.items() if m][:5]
        raise ModelError(f"the graph has a cycle through nodes {stuck}")
    return order


def specialize(prep: Prepared, input_shapes: dict[str, tuple[int, ...]], max_bytes: int = MAX_PLAN_BYTES) -> Plan:
    """Lower every node for these input shapes, fold constants and bind buffers.

    Raises InputError when the buffers for these shapes would exceed ``max_bytes``.
    """
    graph = prep.graph
    env: dict[str, Tensor] = {name: Tensor(v.shape, v.dtype, v) for name, v in graph.constants.items()}
    for vi in graph.inputs:
        env[vi.name] = Tensor(tuple(input_shapes[vi.name]), vi.dtype)
    lowered: list[tuple[Node, Kernel | View]] = []
    for node in prep.nodes:
        ins = [env[x] if x else None for x in node.inputs]
        step = _build(node, ins, graph.opsets.get(node.domain, graph.opset))
        if isinstance(step, Kernel) and all(ins[a] is None or ins[a].is_const for a in step.args if type(a) is In):
            # (the inputs the kernel reads are known: a CastLike of a constant reads only its other input's type)
            step = Constant(_run_now(step, ins))
        elif isinstance(step, View) and ins[0].is_const:
            step = Constant([ins[0].value.reshape(step.shape)])
        if isinstance(step, Constant):
            for name, value in zip(node.outputs, step.values):
                if name:
                    value = np.require(value, requirements="C")
                    env[name] = Tensor(value.shape, value.dtype, _writable(value))
            continue
        if isinstance(step, View):
            if int(np.prod(step.shape)) != int(np.prod(ins[0].shape)):
                raise ModelError(f"node {node.name!r} ({node.op_type}) cannot view {ins[0].shape} as {step.shape}")
            env[node.outputs[0]] = Tensor(tuple(step.shape), ins[0].dtype)
        else:
            for name, (shape, dtype) in zip(node.outputs, step.outputs):
                if name:
                    env[name] = Tensor(tuple(int(d) for d in shape), np.dtype(dtype))
        lowered.append((node, step))
    return _bind(graph, env, lowered, _ArenaPool(max_bytes, input_shapes))


def _build(node: Node, ins: list, opset: int):
    try:
        return BUILDERS[(node.domain, node.op_type)](node, ins, opset)
    except Unsupported as exc:
        raise UnsupportedOpError([(node.name, node.op_type, node.domain, opset, str(exc))]) from None
    except (InputError, ModelError, UnsupportedOpError):
        raise
    except Exception as exc:
        shapes = [None if t is None else t.shape for t in ins]
        raise ModelError(f"node {node.name!r} ({node.op_type}) cannot run on input shapes {shapes}: {exc}") from None


def _run_now(step: Kernel, ins: list) -> list[np.ndarray]:
    outs = [np.empty(shape, dtype) for shape, dtype in step.outputs]
    step.fn(*_resolve(step.args, [None if t is None else t.value for t in ins], outs))
    return outs


def _resolve(args: tuple, ins: list, outs: list) -> tuple:
    return tuple(ins[a] if type(a) is In else outs[a] if type(a) is Out else a for a in args)


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()


def _bind(graph: Graph, env: dict[str, Tensor], lowered: list, pool: "_ArenaPool") -> Plan:
    """Give every non-constant tensor a buffer, reusing the memory of tensors that are dead; inputs and
    outputs get memory of their own, so it holds their values for the whole run and between runs."""
    owner = {vi.name: vi.name for vi in graph.inputs}
    for node, step in lowered:
        for o in node.outputs:
            if o:
                owner[o] = owner[node.inputs[0]] if isinstance(step, View) else o
    pinned = {vi.name for vi in graph.inputs} | {owner.get(o.name, o.name) for o in graph.outputs}
    last_use: dict[str, int] = {}
    for i, (node, _) in enumerate(lowered):
        for x in node.inputs + node.outputs:
            if x in owner:
                last_use[owner[x]] = i
    release: dict[int, list[str]] = {}
    for name, i in last_use.items():
        if name not in pinned:
            release.setdefault(i, []).append(name)

    arrays = {vi.name: pool.take(vi.name, env[vi.name]) for vi in graph.inputs}
    steps, step_nodes = [], []
    for i, (node, step) in enumerate(lowered):
        if isinstance(step, View):
            arrays[node.outputs[0]] = arrays[node.inputs[0]].reshape(step.shape)
        else:
            outs = []
            for name, (shape, dtype) in zip(node.outputs, step.outputs):
                if name:
                    arrays[name] = pool.take(name, env[name], fresh=name in pinned)
                outs.append(arrays[name] if name else np.empty(shape, dtype))
            ins = [None if not x else env[x].value if env[x].is_const else arrays[x] for x in node.inputs]
            steps.append((step.fn, _resolve(step.args, ins, outs)))
            step_nodes.append(node)
        for name in release.get(i, ()):
            pool.give_back(name)
    outputs = {o.name: env[o.name].value if env[o.name].is_const else arrays[o.name] for o in graph.outputs}
    tensors = {name: t.value if t.is_const else arrays[name] for name, t in env.items() if t.is_const or name in arrays}
    inputs = {vi.name: arrays[vi.name] for vi in graph.inputs}
    sites = _sites(graph, env, [(n, s) for n, s in lowered if isinstance(s, Kernel)], steps, owner, arrays)
    return Plan(inputs, steps, outputs, pool.total, step_nodes, tensors, sites)


def _sites(graph: Graph, env: dict[str, Tensor], kernels: list, steps: list, owner: dict[str, str],
           arrays: dict[str, np.ndarray]) -> Sites:
    """Find every kernel argument that is an input buffer or an output root, or a view of one."""
    slots = {vi.name: k for k, vi in enumerate(graph.inputs)}
    for o in graph.outputs:
        if not env[o.name].is_const:
            slots.setdefault(owner[o.name], len(slots))
    roots = list(slots)[len(graph.inputs):]

    def where(name: str) -> tuple[int, tuple | None] | None:
        slot = slots.get(owner.get(name, ""))
        if slot is None:
            return None
        shape = arrays[name].shape
        return slot, None if shape == arrays[owner[name]].shape else shape

    found, inputs_safe = [], True
    for i, ((node, step), (_, bound)) in enumerate(zip(kernels, steps)):
        group = []
        for pos, a in enumerate(step.args):
            name = node.inputs[a] if type(a) is In else node.outputs[a] if type(a) is Out else ""
            w = where(name) if name and not env[name].is_const else None
            if w is not None:
                group.append((pos, *w))
            if type(a) is Out and any(np.may_share_memory(bound[pos], arrays[vi.name]) for vi in graph.inputs):
                inputs_safe = False
        if group:
            found.append((i, tuple(group)))
    outputs = {o.name: None if env[o.name].is_const else where(o.name) for o in graph.outputs}
    return Sites(found, [(arrays[r].shape, arrays[r].dtype) for r in roots], outputs, inputs_safe)


def _same_bytes(buf: np.ndarray, a: np.ndarray) -> bool:
    """Whether the C-contiguous ``buf`` holds exactly the bytes of ``a`` (NaNs and -0.0 included)."""
    return buf.tobytes() == np.ascontiguousarray(a).tobytes()


class _ArenaPool:
    """Aligned byte arenas handed to tensors and returned when the tensor is dead (best fit)."""

    def __init__(self, max_bytes: int, input_shapes: dict) -> None:
        self.free: list[np.ndarray] = []
        self.held: dict[str, np.ndarray] = {}
        self.total = 0
        self.max_bytes = max_bytes
        self.input_shapes = input_shapes

    def take(self, name: str, t: Tensor, fresh: bool = False) -> np.ndarray:
        """A buffer for tensor ``name``; ``fresh`` ones never reuse a dead tensor's memory."""
        nbytes = tensor_bytes(t.shape, t.dtype)
        fits = [] if fresh else [a for a in self.free if a.nbytes >= nbytes]
        if fits:
            arena = min(fits, key=lambda a: a.nbytes)
            self.free = [a for a in self.free if a is not arena]
        else:
            if self.total + nbytes > self.max_bytes:
                raise InputError(
                    f"inputs of shapes {self.input_shapes} need more than {self.max_bytes / 2**30:.1f} GiB of "
                    f"intermediate buffers (at tensor {name!r} of shape {list(t.shape)}); run smaller inputs")
            arena = aligned_bytes(max(nbytes, 1))
            self.total += arena.nbytes
        self.held[name] = arena
        return arena[:nbytes].view(t.dtype).reshape(t.shape)

    def give_back(self, name: str) -> None:
        if name in self.held:
            self.free.append(self.held.pop(name))
