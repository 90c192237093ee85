"""Keras recurrent layers as tf2onnx exports them, rewritten before fusion (see runtimes/rewrites.py).

tf2onnx's ``Loop`` over a Keras GRU or SimpleRNN cell (Keras 3 layers; tf2onnx does not recognise them)
is one ``GRU`` / ``RNN`` node on the time-major sequence the Loop gathers from: the body must compute
``h' = z * h + (1 - z) * g(x Wh + r * (h Rh + bh))`` (reset_after: linear_before_reset=1) or
``g(x Wh + (r * h) Rh)`` (=0), z and r = f(x W + h R + b) (Keras and ONNX both order the gates z, r, h),
or ``g(x W + h R + b)``, f and g activations both know (sigmoid, tanh, relu, ...), where each product is
a MatMul by a constant matrix (a pass-through loop input fed a constant), column Slices/Splits of it and
constant bias Adds; x = X[t] with t counting from 0, the new h carried and scanned, a condition that
never ends the loop before its trip count, which is X's time dim (from Shape) or a constant M (then
X[:M] is read), and a zero (tf2onnx's Expand) or rank-2 initial state. The scan output is
``Squeeze(Y, 1)``, the final state ``Squeeze(Y_h, 0)``; a Loop whose counters are read stays.
``ReverseSequence`` whose lengths are all the time dim (tf2onnx's ReverseV2 for go_backwards) is a
Slice with step -1.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from edgekit.ir import Graph, Node, axis_node, other_input, squeeze_axes

from .fusion import constant_nodes


class _NoMatch(Exception):
    """The graph is not the pattern being matched."""


def _need(ok: object) -> None:
    if not ok:
        raise _NoMatch


def _either(pair: list[str], match):
    """``match(a, b)`` for the two inputs of a commutative node, in either order."""
    _need(len(pair) == 2)
    for a, b in (pair, pair[::-1]):
        try:
            return match(a, b)
        except _NoMatch:
            pass
    raise _NoMatch


class _Scope:
    """Producers and constant values of one graph level; a Loop body also sees the graph around it,
    through its pass-through loop inputs (``carried``: body input -> outer tensor) and outer names."""

    def __init__(self, nodes: list[Node], constants: dict, outer: _Scope | None = None,
                 carried: dict[str, str] | None = None, inputs: tuple[str, ...] = ()) -> None:
        self.producer = {o: (n, k) for n in nodes for k, o in enumerate(n.outputs) if o}
        self.constants, self.outer, self.carried, self.inputs = constants, outer, carried or {}, set(inputs)

    def node(self, name: str, *ops: str) -> Node:
        """The node of op type in ``ops`` that computes ``name``, else _NoMatch."""
        n = self.producer.get(name, (None, 0))[0]
        _need(n is not None and not n.domain and n.op_type in ops)
        return n

    def strip(self, name: str, *ops: str) -> str:
        """``name`` with producers of op type in ``ops`` (one input each, such as Cast) looked through."""
        while (n := self.producer.get(name, (None, 0))[0]) is not None and not n.domain and n.op_type in ops:
            name = n.inputs[0]
        return name

    def outer_name(self, name: str) -> str | None:
        """The outer tensor a body tensor always equals (a pass-through input or an outer name), else None."""
        if name in self.carried:
            return self.carried[name]
        return name if self.outer is not None and name not in self.producer and name not in self.inputs else None

    def value(self, name: str) -> np.ndarray | None:
        """The constant value of ``name``: a constant, or Identity/Cast/Squeeze/Slice/Split of constants."""
        if name in self.constants:
            return self.constants[name]
        if (o := self.outer_name(name)) is not None:
            return self.outer.value(o)
        n, k = self.producer.get(name, (None, 0))
        if n is None or n.domain or n.op_type not in ("Identity", "Cast", "Squeeze", "Slice", "Split"):
            return None
        v = self.value(n.inputs[0])
        if v is None:
            return None
        try:
            return self._evaluate(n, k, v)
        except (_NoMatch, ValueError, IndexError, KeyError, TypeError):  # (not a well-formed constant expression)
            return None

    def _evaluate(self, n: Node, k: int, v: np.ndarray) -> np.ndarray:
        """Output ``k`` of Cast/Squeeze/Slice/Split node ``n`` on the constant ``v``."""
        if n.op_type == "Cast":
            return v.astype(helper.tensor_dtype_to_np_dtype(n.attrs["to"]))
        if n.op_type == "Squeeze":
            axes = squeeze_axes(n, self.constants)
            return np.squeeze(v, axis=None if axes is None else tuple(axes))
        if n.op_type == "Slice":
            return v[tuple(_slices(n, self, v.ndim))]
        if n.op_type == "Identity":
            return v
        axis, sizes = n.attrs.get("axis", 0), _split_sizes(n, self, v.shape[n.attrs.get("axis", 0)])
        return np.split(v, np.cumsum(sizes)[:-1], axis=axis)[k]


def _slices(n: Node, s: _Scope, rank: int) -> list[slice]:
    """Python slices per axis of a Slice node with constant starts/ends/axes/steps, else _NoMatch."""
    if "starts" in n.attrs:
        starts, ends, axes, steps = n.attrs["starts"], n.attrs["ends"], n.attrs.get("axes"), None
    else:
        starts, ends, axes, steps = (s.value(x) if x else None for x in (n.inputs[1:] + ["", "", ""])[:4])
        _need(starts is not None and ends is not None and (axes is None) == (len(n.inputs) < 4 or not n.inputs[3])
              and (steps is None) == (len(n.inputs) < 5 or not n.inputs[4]))
    axes = range(len(starts)) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    out = [slice(None)] * rank
    for a, b, e, st in zip(axes, starts, ends, steps):
        out[a] = slice(int(b), int(e), int(st))
    return out


def _split_sizes(n: Node, s: _Scope, dim: int) -> list[int]:
    """Sizes of a Split's outputs along its axis of size ``dim`` (given, or equal parts as ONNX splits)."""
    given = n.attrs.get("split")
    if given is None and len(n.inputs) > 1 and n.inputs[1]:
        given = s.value(n.inputs[1])
        _need(given is not None)
    if given is not None:
        return [int(v) for v in np.reshape(given, -1)]
    part = -(-dim // len(n.outputs))
    return [part] * (len(n.outputs) - 1) + [dim - part * (len(n.outputs) - 1)]


def _affine(s: _Scope, name: str, var: str) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with ``name`` = ``var`` @ A + b for rank-2 ``var``: a MatMul by a constant matrix, then Adds of
    constant rows and Slices/Splits of columns; else _NoMatch."""
    n = s.node(name, "MatMul", "Add", "Slice", "Split")
    if n.op_type == "MatMul":
        a = s.value(n.inputs[1])
        _need(n.inputs[0] == var and a is not None and a.dtype == np.float32 and a.ndim == 2)
        return a.astype(np.float64), np.zeros(a.shape[1])

    def biased(x: str, c: str) -> tuple[np.ndarray, np.ndarray]:
        v = s.value(c)
        _need(v is not None and v.dtype == np.float32 and x in s.producer)
        a, b = _affine(s, x, var)
        _need(v.ndim <= 2 and v.size == b.size and v.shape[-1] == b.size)
        return a, b + v.reshape(-1)

    if n.op_type == "Add":
        return _either(n.inputs, biased)
    a, b = _affine(s, n.inputs[0], var)
    cols = np.arange(b.size)
    if n.op_type == "Split":
        _need(n.attrs.get("axis", 0) in (1, -1))
        sizes = _split_sizes(n, s, b.size)
        k = n.outputs.index(name)
        _need(sum(sizes) == b.size)
        cols = cols[sum(sizes[:k]):sum(sizes[:k + 1])]
    else:
        rows, col = _slices(n, s, 2)
        _need(rows == slice(None) or (rows.start == 0 and rows.step == 1 and rows.stop >= 2**31 - 1))
        cols = cols[col]
    return a[:, cols], b[cols]


def _gate(s: _Scope, name: str, x: str, h: str) -> tuple:
    """((W, Wb), (R, Rb)) with ``name`` = x @ W + Wb + h @ R + Rb."""
    n = s.node(name, "Add")
    return _either(n.inputs, lambda p, q: (_affine(s, p, x), _affine(s, q, h)))


CELL_ACTIVATIONS = ("Sigmoid", "Tanh", "Relu", "Softsign", "Softplus", "Elu")  # (ONNX's GRU/RNN names too)


def _activation(s: _Scope, name: str, *ops: str) -> Node:
    """The activation node (one of CELL_ACTIVATIONS, Elu with its default alpha) that computes ``name``."""
    n = s.node(name, *(ops or CELL_ACTIVATIONS))
    _need(n.op_type != "Elu" or n.attrs.get("alpha", 1.0) == 1.0)
    return n


def _cell(s: _Scope, h_new: str, x: str, h: str) -> tuple[str, list, list, int, list[str]]:
    """Match the new state of a Keras cell on input row ``x`` and state ``h``: SimpleRNN
    ``g(x W + h R + b)`` or GRU ``z * h + (1 - z) * g(x Wh + r * (h Rh + bh))`` (reset_after) or
    ``... g(x Wh + (r * h) Rh)``, with z, r = f(x W + h R + b) (Keras: f sigmoid, g tanh by default).
    Returns (op, [(W, Wb) per gate], [(R, Rb) per gate], linear_before_reset, activations), gates in
    ONNX's order (z, r, h)."""
    n = s.node(h_new, "Add", *CELL_ACTIVATIONS)
    if n.op_type != "Add":
        w, r = _gate(s, _activation(s, h_new).inputs[0], x, h)
        return "RNN", [w], [r], 0, [n.op_type]

    def blend(p: str, q: str) -> tuple[str, str]:  # z * h, (1 - z) * hh
        z = other_input(s.node(p, "Mul"), h)
        _need(z is not None)

        def keep(one: str, hh: str) -> tuple[str, str]:
            sub = s.node(one, "Sub")
            c = s.value(sub.inputs[0])
            _need(sub.inputs[1] == z and c is not None and c.size == 1 and float(c.reshape(-1)[0]) == 1.0)
            return z, hh
        return _either(s.node(q, "Mul").inputs, keep)

    z, hh = _either(n.inputs, blend)
    f, g = _activation(s, z), _activation(s, hh)
    wz, rz = _gate(s, f.inputs[0], x, h)

    def candidate(p: str, q: str) -> tuple:
        wh = _affine(s, p, x)
        m = s.node(q, "Mul", "MatMul", "Add", "Slice", "Split")
        if m.op_type == "Mul":  # r * (h Rh + bh): reset after the product
            r, rh = _either(m.inputs, lambda a, b: (_activation(s, a, f.op_type), _affine(s, b, h)))
            return wh, rh, r, 1
        base = q
        while (b := s.node(base, "MatMul", "Add", "Slice", "Split")).op_type != "MatMul":
            base = b.inputs[0] if b.op_type != "Add" else next(i for i in b.inputs if s.value(i) is None)
        r = other_input(s.node(b.inputs[0], "Mul"), h)
        _need(r is not None)
        return wh, _affine(s, q, b.inputs[0]), _activation(s, r, f.op_type), 0

    wh, rh, r_node, lbr = _either(s.node(g.inputs[0], "Add").inputs, candidate)
    wr, rr = _gate(s, r_node.inputs[0], x, h)
    return "GRU", [wz, wr, wh], [rz, rr, rh], lbr, [f.op_type, g.op_type]


def _time_dim(s: _Scope, name: str, x: str) -> bool:
    """Whether ``name`` is ``Shape(x)[0]`` (through Casts, a Slice [0:1] or Gather 0, and a Squeeze; the
    shape of ``x`` or of the input of the ReverseSequence that made it)."""
    try:
        n = s.node(s.strip(name, "Cast", "Squeeze"), "Slice", "Gather")
        if n.op_type == "Slice":
            (first,) = [sl for sl in _slices(n, s, 1)]
            _need(first.start == 0 and first.stop == 1 and first.step == 1)
        else:
            i = s.value(n.inputs[1])
            _need(n.attrs.get("axis", 0) == 0 and i is not None and i.size == 1 and int(i.reshape(-1)[0]) == 0)
        shape = s.node(s.strip(n.inputs[0], "Cast"), "Shape")
        return s.strip(shape.inputs[0], "ReverseSequence") == s.strip(x, "ReverseSequence") \
            and shape.attrs.get("start", 0) == 0 and "end" not in shape.attrs
    except _NoMatch:
        return False


def _bound(s: _Scope, name: str, steps: int | None, x: str) -> bool:
    """Whether ``name`` is at least the trip count: a constant >= ``steps`` or the time dim of ``x``."""
    v = s.value(name)
    if v is not None:
        return steps is not None and v.size == 1 and float(v.reshape(-1)[0]) >= steps
    if s.outer is None:
        return _time_dim(s, name, x)
    o = s.outer_name(s.strip(name, "Cast"))
    return o is not None and _time_dim(s.outer, o, x)


def _counting_cond(s: _Scope, cond: str, counters: tuple[str, str], steps: int | None, x: str) -> bool:
    """Whether the body's condition is ``And(Less(i, M1), Less(t + 1, M2))`` with bounds >= the trip count,
    so that it never ends the loop early."""
    try:
        def less(a: str, b: str) -> tuple[str, str]:
            m, n = s.node(a, "Less"), s.node(b, "Less")
            _need([s.strip(m.inputs[0], "Cast"), s.strip(n.inputs[0], "Cast")] == list(counters))
            _need(_bound(s, m.inputs[1], steps, x) and _bound(s, n.inputs[1], steps, x))
            return a, b
        _either(s.node(cond, "And").inputs, less)
        return True
    except _NoMatch:
        return False


def _initially_true(s: _Scope, name: str, steps: int | None, x: str) -> bool:
    """Whether the Loop's first condition holds whenever the loop runs: empty, a true constant,
    ``Less(c <= 0, bound)`` or ``And`` of such."""
    if not name:
        return True
    v = s.value(name)
    if v is not None:
        return v.size == 1 and bool(v.reshape(-1)[0])
    n = s.producer.get(name, (None, 0))[0]
    if n is None or n.domain:
        return False
    if n.op_type == "And":
        return all(_initially_true(s, i, steps, x) for i in n.inputs)
    if n.op_type == "Less":
        c = s.value(n.inputs[0])
        return c is not None and c.size == 1 and float(c.reshape(-1)[0]) <= 0 and _bound(s, n.inputs[1], steps, x)
    return False


def _zero_state(s: _Scope, name: str, hidden: int) -> bool:
    """Whether ``name`` is tf2onnx's zero state: Expand(0, Concat(batch, [hidden]))."""
    try:
        e = s.node(name, "Expand")
        zero = s.value(e.inputs[0])
        shape = s.node(s.strip(e.inputs[1], "Cast"), "Concat")
        h = s.value(shape.inputs[1]) if len(shape.inputs) == 2 else None
        batch = s.node(shape.inputs[0], "Slice")
        (sl,) = _slices(batch, s, 1)
        return zero is not None and zero.size == 1 and not zero.any() and h is not None and h.size == 1 \
            and int(h.reshape(-1)[0]) == hidden and sl.step == 1 and sl.stop == sl.start + 1 >= 1
    except _NoMatch:
        return False


def recurrent_loops(graph: Graph, nodes: list[Node], outputs: set[str], rank: dict[str, int]) -> list[Node]:
    """tf2onnx's Loop over a Keras GRU or SimpleRNN cell (see the module docstring) -> GRU / RNN."""
    outer = _Scope(nodes, graph.constants, inputs=tuple(i.name for i in graph.inputs))
    used = {x for n in nodes for x in n.inputs} | outputs
    out: list[Node] = []
    for n in nodes:
        try:
            _need(n.op_type == "Loop" and not n.domain)
            out += _loop_as_recurrent(n, graph, outer, used, rank)
        except _NoMatch:
            out.append(n)
    return out


def _loop_as_recurrent(loop: Node, graph: Graph, outer: _Scope, used: set[str], rank: dict[str, int]) -> list[Node]:
    """The nodes that replace ``loop``, or _NoMatch."""
    sub = loop.attrs.get("body")
    _need(isinstance(sub, Graph))
    explicit = loop.inputs[:len(loop.inputs) - len(loop.implicit)]  # (then the outer names the body reads)
    carried = len(explicit) - 2
    _need(carried >= 2 and len(loop.outputs) == carried + 1 and explicit[0])
    ins, outs = [v.name for v in sub.inputs], [v.name for v in sub.outputs]
    _need(len(ins) == carried + 2 and len(outs) == carried + 2 and outs[3:-1] == ins[4:])
    (it, _, t, h), (cond, t_next, h_out, scan) = ins[:4], (*outs[:3], outs[-1])
    cell = constant_nodes(sub.nodes, constants := dict(sub.constants), set(outs))
    s = _Scope(cell, constants, outer, dict(zip(ins[4:], explicit[4:])), tuple(ins))
    # x_t = X[t], t counting 0, 1, ... with the iterations; the state is the new h, also the scan output
    gathers = [m for m in cell if m.op_type == "Gather" and not m.domain and m.inputs[1] == t]
    _need(len(gathers) == 1 and gathers[0].attrs.get("axis", 0) == 0)
    g = gathers[0]
    x = s.outer_name(g.inputs[0])
    one, t0 = s.value(other_input(s.node(t_next, "Add"), t) or ""), outer.value(loop.inputs[2])
    _need(x is not None and rank.get(x, 3) == 3 and one is not None and one.size == 1 and one.reshape(-1)[0] == 1
          and t0 is not None and t0.size == 1 and t0.reshape(-1)[0] == 0)
    h_new = s.strip(scan, "Identity")
    _need(s.strip(h_out, "Identity") == h_new)
    op, ws, rs, lbr, activations = _cell(s, h_new, g.outputs[0], h)
    # M steps: a constant (X is sliced to it) or X's time dim; the conditions never end the loop earlier
    m = outer.value(loop.inputs[0])
    _need(m.size == 1 and m.reshape(-1)[0] >= 1 if m is not None else _time_dim(outer, loop.inputs[0], x))
    steps = None if m is None else int(m.reshape(-1)[0])
    _need(_initially_true(outer, loop.inputs[1], steps, x) and _counting_cond(s, cond, (it, t_next), steps, x))
    hidden, inp = rs[0][0].shape[0], ws[0][0].shape[0]
    _need(all(w.shape == (inp, hidden) and r.shape == (hidden, hidden) for (w, _), (r, _) in zip(ws, rs)))
    # outputs: the final state (carried output 1) and the scan output; the counters and weights are unread
    final, seq = loop.outputs[1], loop.outputs[carried]
    _need(not any(o in used for o in loop.outputs[:1] + loop.outputs[2:carried] if o))
    h0 = loop.inputs[3]
    zero = _zero_state(outer, h0, hidden)
    _need(zero or rank.get(h0) == 2)
    name = next(o for o in loop.outputs if o)  # (node names need not be unique)
    new: list[Node] = []
    graph.constants[f"{name}::W"] = np.concatenate([w.T for w, _ in ws])[None].astype(np.float32)
    graph.constants[f"{name}::R"] = np.concatenate([r.T for r, _ in rs])[None].astype(np.float32)
    graph.constants[f"{name}::B"] = np.concatenate([b for _, b in ws + rs])[None].astype(np.float32)
    if steps is not None:
        new.append(axis_node(graph, "Slice", x, f"{name}::X", 0, (0, steps, 1)))
        x = new[-1].outputs[0]
    if not zero:
        new.append(axis_node(graph, "Unsqueeze", h0, f"{name}::initial_h", 0))
        h0 = new[-1].outputs[0]
    y, y_h = f"{name}::Y", f"{name}::Y_h"
    attrs = {"hidden_size": hidden, "activations": activations} | ({"linear_before_reset": lbr} if op == "GRU" else {})
    new.append(Node(f"{name}::{op}", op, "", [x, f"{name}::W", f"{name}::R", f"{name}::B", "", "" if zero else h0],
                    [y, y_h], attrs))
    return new + [axis_node(graph, "Squeeze", o, to, a) for o, to, a in ((y, seq, 1), (y_h, final, 0)) if to in used]


def reverse_sequence(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``ReverseSequence(x, lengths)`` with every length the time dim (``Expand(Shape(x)[time],
    Shape(x)[batch:batch+1])``, tf2onnx's ReverseV2 for Keras go_backwards) -> ``Slice(x)`` with step -1."""
    s = _Scope(nodes, graph.constants)
    for n in nodes:
        if n.op_type != "ReverseSequence" or n.domain or len(n.inputs) != 2:
            continue
        time, batch = n.attrs.get("time_axis", 0), n.attrs.get("batch_axis", 1)

        def dim(name: str, axis: int) -> np.ndarray:
            g = s.node(name, "Gather")
            i, shape = s.value(g.inputs[1]), s.node(s.strip(g.inputs[0], "Cast"), "Shape")
            _need(i is not None and i.size == 1 and int(i.reshape(-1)[0]) == axis and g.attrs.get("axis", 0) == 0
                  and shape.inputs[0] == n.inputs[0] and shape.attrs.get("start", 0) == 0 and "end" not in shape.attrs)
            return i
        try:
            e = s.node(s.strip(n.inputs[1], "Cast"), "Expand")
            dim(e.inputs[0], time)
            _need(dim(e.inputs[1], batch).ndim == 1)
        except _NoMatch:
            continue
        sl = axis_node(graph, "Slice", n.inputs[0], n.outputs[0], time, (-1, -2**63, -1))
        n.op_type, n.inputs, n.attrs = "Slice", sl.inputs, sl.attrs
    return nodes
