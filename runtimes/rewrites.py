"""Graph rewrites done once per model, before fusion: patterns exporters (tf2onnx for Keras, torch.onnx's
dynamo exporter) write as chains of small nodes become fewer, equivalent nodes that runtimes/fusion.py can
then fuse.

- ``Add(x, 3) -> Clip(0, 6) -> Mul(1/6)`` (or ``Div(6)``) is ``HardSigmoid(x, 1/6, 1/2)``, and
  ``Mul(x, HardSigmoid(x, 1/6, 1/2))`` is ``HardSwish(x)`` (Keras hard_sigmoid / hard_swish), and
  ``Mul(x, Sigmoid(x))`` is ``Swish(x)`` (SiLU as PyTorch and Keras export it), which then fuses into a
  preceding Conv or Gemm like any activation.
- Keras LayerNormalization as tf2onnx decomposes it (mean = ReduceMean(x); var = ReduceMean((x - mean)^2);
  g = gamma / Sqrt(var + eps); y = x * g + (beta - mean * g), with Neg/Sub/Mul/Add/Reciprocal) over the
  last axis is ``LayerNormalization(x, gamma, beta, axis=-1, epsilon=eps)``.
- ``Where(Greater(x, t), x, Softplus(x))`` with a constant t >= 15 is ``Softplus(x)`` (torch's softplus
  threshold as the dynamo exporter writes it: float32 softplus(x) rounds to x beyond 15; unoptimised, with
  beta = 1 as ``Mul(x, 1)`` and ``Div(Softplus, 1)`` and the constants through CastLike), which then fuses
  into a preceding Conv or Gemm.
- ``SequenceAt(SplitToSequence(x, split, axis), i)`` with a constant split (chunk size or sizes, or none:
  pieces of one) and constant positions i is ``Slice(x)`` on that axis (``Gather(x, i)`` for pieces of one
  without keepdims), when every reader of the sequence is such a SequenceAt (torch.chunk / split as the
  dynamo exporter writes them without its optimiser: optimize=False, the default of older torch).
- A Conv or ConvTranspose bias computed as ``Expand(c, shape)`` (or ``Expand(CastLike(c, x), shape)``) of a
  one-element constant c is the constant vector of c, of the weights' type and one value per output channel
  (the only shape a bias has): torch's missing bias as the dynamo exporter writes it unoptimised, so a
  following BatchNormalization folds into the Conv.
- A constant zero ``Pad`` of the spatial axes only, read by a Conv alone (F.pad before a causal conv; Keras
  padding="causal"), is the Conv's own padding.
- ``MatMul(A, B)`` with A of rank 2 and B a constant float32 matrix is ``Gemm(A, B)`` (Keras Dense).
- Constant per-output-channel ``Mul`` / ``Add`` / ``Sub`` / ``Div`` after a Conv or Gemm with
  constant weights fold into its weights and bias (Keras BatchNorm written as Mul + Add, a Dense or
  Conv1D bias written as Add), also through a Squeeze of spatial axes (Conv1D as Conv2D + Squeeze),
  which then moves after the chain together with a following activation, so the activation fuses.
- tf2onnx's ``Loop`` over a Keras GRU or SimpleRNN cell (Keras 3 layers; tf2onnx does not recognise them)
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
- An ``If`` whose condition is a constant reads only the outer names of the branch it takes, so what
  only the other branch reads is not computed.

Every rewrite fires only when the intermediate tensors have a single consumer and are not graph
outputs, and when the constants cannot broadcast the result to another shape (so outputs are the
same up to float rounding of the folded weights). Ranks come from a small propagation over the
graph (``ranks``); a tensor of unknown rank blocks the rewrites that need it.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from edgekit.ir import Graph, Node, live_nodes, outer_names

from .fusion import constant_nodes, folded_weights, read_folded_weights, single_consumer
from .ops.activation import ACTIVATIONS

AFFINE = ("Mul", "Add", "Sub", "Div")
SAME_RANK = set(ACTIVATIONS) | {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
    "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Neg", "Abs", "Sqrt",
    "Reciprocal", "Exp", "Log", "Erf", "Cast", "Identity", "Softmax", "LogSoftmax", "Dropout", "Transpose",
    "LRN", "Pad", "Resize", "Upsample", "Floor", "Ceil", "Round", "Sign", "Not", "CumSum", "Slice"}
BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "And", "Or", "Xor",
             "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "PRelu", "Mod"}


def rewrite(graph: Graph, nodes: list[Node]) -> list[Node]:
    """Return ``nodes`` (in execution order) with the patterns above rewritten; ``graph.constants``
    gains the Constant nodes' values and the folded weights."""
    outputs = {o.name for o in graph.outputs}
    nodes = live_nodes(_constant_ifs(constant_nodes(nodes, graph.constants, outputs), graph.constants), outputs)
    nodes = live_nodes(_reverse_sequence(graph, _recurrent_loops(graph, nodes, outputs)), outputs)
    nodes = live_nodes(_expanded_bias(graph, _split_to_sequence(graph, nodes, outputs)), outputs)
    nodes = _pad_into_conv(graph, nodes, outputs)
    nodes = _hard_sigmoid(nodes, graph.constants, outputs, ranks(graph, nodes))
    nodes = _x_times_gate(nodes, outputs, _is_hard_sigmoid_sixth, "HardSwish")
    nodes = _x_times_gate(nodes, outputs, lambda n: n.op_type == "Sigmoid", "Swish")
    nodes = live_nodes(_softplus_threshold(nodes, graph.constants, outputs, ranks(graph, nodes)), outputs)
    nodes = _layer_norm(nodes, graph.constants, outputs, ranks(graph, nodes))
    nodes = _matmul_to_gemm(nodes, graph.constants, ranks(graph, nodes))
    return _fold_affine(nodes, graph.constants, outputs)


def _constant_ifs(nodes: list[Node], constants: dict) -> list[Node]:
    """An If whose condition is a constant reads only the outer names of the branch it takes (only that
    branch is built), so the nodes that only the other branch reads are dropped."""
    for n in nodes:
        if n.op_type == "If" and not n.domain and n.inputs[0] in constants and constants[n.inputs[0]].size == 1:
            taken = n.attrs["then_branch" if constants[n.inputs[0]].reshape(-1)[0] else "else_branch"]
            n.implicit = outer_names(taken)
            n.inputs = [n.inputs[0], *n.implicit]
    return nodes


def ranks(graph: Graph, nodes: list[Node]) -> dict[str, int]:
    """Rank of every tensor it can tell without shapes (graph inputs, constants, then op by op)."""
    r = {name: v.ndim for name, v in graph.constants.items()}
    r.update({i.name: len(i.shape) for i in graph.inputs if i.shape is not None})
    for n in nodes:
        ins = [r.get(x) for x in n.inputs if x]
        out = None
        if n.domain or not ins:
            pass
        elif n.op_type in ("Gemm", "Flatten"):  # (whatever the rank of A)
            out = 2
        elif ins[0] is None:
            pass
        elif n.op_type in SAME_RANK:
            out = ins[0]
        elif n.op_type in BROADCAST:
            out = max(ins) if None not in ins else None
        elif n.op_type == "MatMul":
            out = max(ins) if None not in ins and min(ins) >= 2 else None
        elif n.op_type == "Reshape" and n.inputs[1] in graph.constants:
            out = graph.constants[n.inputs[1]].size
        elif n.op_type in ("Squeeze", "Unsqueeze"):
            axes = _axes(n, graph.constants)
            if axes is not None:
                out = ins[0] + (len(axes) if n.op_type == "Unsqueeze" else -len(axes))
        elif n.op_type.startswith("Reduce"):
            axes = _axes(n, graph.constants)
            if n.attrs.get("keepdims", 1):
                out = ins[0]
            elif axes and ins[0]:
                out = ins[0] - len({a % ins[0] for a in axes})
        if out is not None:
            r[n.outputs[0]] = out
    return r


def _axes(n: Node, constants: dict) -> list[int] | None:
    """The axes of a Squeeze/Unsqueeze (attribute before opset 13, constant input after), or None."""
    if "axes" in n.attrs:
        return list(n.attrs["axes"])
    if len(n.inputs) > 1 and n.inputs[1] in constants:
        return [int(a) for a in constants[n.inputs[1]].reshape(-1)]
    return None


def _scalar(name: str, constants: dict, rank: int | None) -> float | None:
    """The value of a one-element float constant that cannot raise the rank of a rank-``rank`` tensor."""
    c = constants.get(name)
    if c is None or c.size != 1 or c.dtype.kind != "f" or rank is None or c.ndim > rank:
        return None
    return float(c.reshape(-1)[0])


def _other(n: Node, x: str) -> str | None:
    """The other input of binary ``n`` when one input is ``x`` (the first match), else None."""
    if len(n.inputs) != 2 or x not in n.inputs:
        return None
    return n.inputs[1] if n.inputs[0] == x else n.inputs[0]


def _hard_sigmoid(nodes: list[Node], constants: dict, outputs: set[str], rank: dict[str, int]) -> list[Node]:
    """``Add(x, 3) -> Clip(0, 6) -> Mul(1/6) | Div(6)`` -> ``HardSigmoid(x, alpha=1/6, beta=0.5)``."""
    consumer = single_consumer(nodes, outputs)
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for add in nodes:
        if add.op_type != "Add" or add.domain or len(add.inputs) != 2:
            continue
        x = next((i for i in add.inputs if _scalar(_other(add, i) or "", constants, rank.get(i)) == 3.0), None)
        clip = consumer.get(add.outputs[0])
        if x is None or clip is None or clip.op_type != "Clip" or clip.domain or clip.inputs[0] != add.outputs[0]:
            continue
        bounds = ((clip.attrs.get("min"), clip.attrs.get("max")) if len(clip.inputs) == 1 else
                  tuple(_scalar(b, constants, 0) if b else None for b in (clip.inputs[1:] + ["", ""])[:2]))
        scale = consumer.get(clip.outputs[0])
        if bounds != (0.0, 6.0) or scale is None or scale.op_type not in ("Mul", "Div") or scale.domain:
            continue
        c = _other(scale, clip.outputs[0])
        v = _scalar(c or "", constants, rank.get(x))
        if v is None or (scale.op_type == "Div" and (scale.inputs[1] != c or v != 6.0)) \
                or (scale.op_type == "Mul" and abs(v * 6 - 1) > 1e-6):
            continue
        replaced[id(scale)] = Node(f"{add.name}+{clip.name}+{scale.name}", "HardSigmoid", "", [x],
                                   list(scale.outputs), {"alpha": 1 / 6, "beta": 0.5})
        dropped |= {id(add), id(clip)}
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]


def _is_hard_sigmoid_sixth(n: Node) -> bool:
    """HardSigmoid(x, 1/6, 1/2): HardSwish's gate."""
    alpha, beta = n.attrs.get("alpha", 0.2), n.attrs.get("beta", 0.5)
    return n.op_type == "HardSigmoid" and abs(alpha * 6 - 1) <= 1e-6 and beta == 0.5


def _x_times_gate(nodes: list[Node], outputs: set[str], is_gate, op: str) -> list[Node]:
    """``Mul(x, gate(x))`` (either order), for a gate node ``is_gate`` accepts -> ``op(x)``."""
    consumer = single_consumer(nodes, outputs)
    replaced: dict[int, Node | None] = {}
    for gate in nodes:
        if gate.domain or not is_gate(gate):
            continue
        mul = consumer.get(gate.outputs[0])
        x = gate.inputs[0]
        if mul is not None and mul.op_type == "Mul" and not mul.domain and _other(mul, gate.outputs[0]) == x:
            replaced[id(mul)] = Node(f"{gate.name}+{mul.name}", op, "", [x], list(mul.outputs))
            replaced[id(gate)] = None
    return [replaced.get(id(n), n) for n in nodes if replaced.get(id(n), n) is not None]


def _readers(nodes: list[Node]) -> dict[str, list[Node]]:
    """Each tensor's readers among ``nodes``, in order (a node reading it twice once)."""
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for x in dict.fromkeys(n.inputs):
            readers.setdefault(x, []).append(n)
    return readers


def _softplus_threshold(nodes: list[Node], constants: dict, outputs: set[str], rank: dict[str, int]) -> list[Node]:
    """``Where(Greater(s, t), x, Softplus(s))`` with a constant t >= 15 and s = x -> ``Softplus(x)``; also
    s = ``Mul(x, 1)`` and ``Softplus(s) / 1`` (beta = 1), constants through CastLike (unoptimised exports)."""
    made = {o: n for n in nodes for o in n.outputs}
    readers = _readers(nodes)

    def scalar(name: str, x: str) -> float | None:
        m = made.get(name)
        return _scalar(m.inputs[0] if m is not None and m.op_type == "CastLike" and not m.domain else name,
                       constants, rank.get(x))

    def read_only_by(name: str, *ns: Node) -> bool:
        """Whether only ``ns`` read ``name``, but for CastLikes that read its type alone (they get x's)."""
        others = [m for m in readers.get(name, []) if not (m.op_type == "CastLike" and m.inputs[0] != name)]
        return name not in outputs and sorted(map(id, others)) == sorted(map(id, ns))

    def op(name: str, op_type: str) -> Node | None:
        m = made.get(name)
        return m if m is not None and m.op_type == op_type and not m.domain else None

    replaced: dict[int, Node | None] = {}
    for where in nodes:
        if where.op_type != "Where" or where.domain or len(where.inputs) != 3:
            continue
        x, cond, soft = where.inputs[1], op(where.inputs[0], "Greater"), op(where.inputs[2], "Softplus")
        div = op(where.inputs[2], "Div")
        if div is not None and scalar(div.inputs[1], x) == 1.0 and read_only_by(div.outputs[0], where):
            soft = op(div.inputs[0], "Softplus")
        if cond is None or soft is None or cond.inputs[0] != soft.inputs[0] \
                or readers.get(cond.outputs[0]) != [where] or cond.outputs[0] in outputs \
                or not read_only_by(soft.outputs[0], div if soft.outputs[0] != where.inputs[2] else where):
            continue
        mul = op(soft.inputs[0], "Mul") if soft.inputs[0] != x else None
        if soft.inputs[0] != x and (mul is None or scalar(_other(mul, x) or "", x) != 1.0
                                    or not read_only_by(mul.outputs[0], soft, cond)):
            continue
        t = scalar(cond.inputs[1], x)
        if t is not None and t >= 15:
            replaced[id(where)] = Node(f"{soft.name}+{cond.name}+{where.name}", "Softplus", "", [x],
                                       list(where.outputs))
            chain = [m for m in (soft, div, mul) if m is not None]  # (cond, a bool, is read by the Where alone)
            replaced.update({id(m): None for m in (cond, *chain)})
            for m in chain:
                for like in readers.get(m.outputs[0], []):
                    if like.op_type == "CastLike" and like.inputs[1] == m.outputs[0]:  # (the chain keeps x's type)
                        like.inputs = [like.inputs[0], x]
    return [replaced.get(id(n), n) for n in nodes if replaced.get(id(n), n) is not None]


def _layer_norm(nodes: list[Node], constants: dict, outputs: set[str], rank: dict[str, int]) -> list[Node]:
    """tf2onnx's LayerNormalization over the last axis (see the module docstring) -> LayerNormalization."""
    uses = _readers(nodes)

    def only(t: str, *ops: str) -> list[Node] | None:
        """The consumers of ``t`` if they are exactly nodes of ``ops`` (in some order) and ``t`` is internal."""
        u = uses.get(t, [])
        if t in outputs or sorted(m.op_type for m in u) != sorted(ops) or any(m.domain for m in u):
            return None
        return sorted(u, key=lambda m: ops.index(m.op_type))

    def last_axis(m: Node, x: str) -> bool:
        r, axes = rank.get(x), _axes(m, constants)
        return bool(r) and axes is not None and [a % r for a in axes] == [r - 1] and m.attrs.get("keepdims", 1) == 1

    def vector(name: str | None, r: int) -> np.ndarray | None:
        c = constants.get(name or "")
        if c is None or c.dtype != np.float32 or c.ndim > r or c.size < 2 or c.shape[-1] != c.size:
            return None
        return c.reshape(-1)

    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for mean in nodes:
        if mean.op_type != "ReduceMean" or mean.domain or not last_axis(mean, x := mean.inputs[0]):
            continue
        pair = only(mean.outputs[0], "Sub", "Neg")
        if pair is None or pair[0].inputs != [x, mean.outputs[0]]:
            continue
        sub, neg = pair
        sq = only(sub.outputs[0], "Mul")
        if sq is None or sq[0].inputs != [sub.outputs[0]] * 2:
            continue
        var = only(sq[0].outputs[0], "ReduceMean")
        if var is None or not last_axis(var[0], sq[0].outputs[0]):
            continue
        chain, t = [], var[0].outputs[0]
        for op in ("Add", "Sqrt", "Reciprocal", "Mul"):
            nxt = only(t, op)
            if nxt is None:
                break
            chain.append(nxt[0])
            t = nxt[0].outputs[0]
        if len(chain) < 4:
            continue
        add_eps, _, _, gmul = chain
        eps = _scalar(_other(add_eps, var[0].outputs[0]) or "", constants, rank.get(x))
        gamma = vector(_other(gmul, chain[2].outputs[0]), rank.get(x))
        muls = only(gmul.outputs[0], "Mul", "Mul")
        if eps is None or gamma is None or muls is None:
            continue
        a = next((m for m in muls if _other(m, gmul.outputs[0]) == x), None)
        b = next((m for m in muls if _other(m, gmul.outputs[0]) == neg.outputs[0]), None)
        if a is None or b is None or a is b or only(neg.outputs[0], "Mul") is None:
            continue
        add_beta, final = only(b.outputs[0], "Add"), only(a.outputs[0], "Add")
        if add_beta is None or final is None or only(add_beta[0].outputs[0], "Add") != final \
                or _other(final[0], a.outputs[0]) != add_beta[0].outputs[0]:
            continue
        beta = vector(_other(add_beta[0], b.outputs[0]), rank.get(x))
        if beta is None or beta.size != gamma.size:
            continue
        name = f"{mean.name}::layer_norm"
        constants[f"{name}_scale"], constants[f"{name}_bias"] = gamma, beta
        replaced[id(final[0])] = Node(name, "LayerNormalization", "", [x, f"{name}_scale", f"{name}_bias"],
                                      list(final[0].outputs), {"axis": -1, "epsilon": eps})
        dropped |= {id(m) for m in (mean, sub, neg, sq[0], var[0], *chain, a, b, add_beta[0])}
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]


def _matmul_to_gemm(nodes: list[Node], constants: dict, rank: dict[str, int]) -> list[Node]:
    """``MatMul(A, B)`` with A of rank 2 and B a constant float32 matrix -> ``Gemm(A, B)``."""
    for n in nodes:
        if n.op_type == "MatMul" and not n.domain and rank.get(n.inputs[0]) == 2 and n.inputs[1] in constants:
            b = constants[n.inputs[1]]
            if b.ndim == 2 and b.dtype == np.float32:
                n.op_type = "Gemm"
    return nodes


def _channel_values(c: np.ndarray | None, rank: int, channels: int) -> np.ndarray | None:
    """``c`` as ``channels`` float64 values if it broadcasts over a rank-``rank`` tensor per channel
    (axis 1) only, without changing its shape; else None."""
    if c is None or c.dtype.kind != "f" or c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1), (channels,))


def _fold_affine(nodes: list[Node], constants: dict, outputs: set[str]) -> list[Node]:
    """Fold constant per-channel Mul/Add/Sub/Div chains after a Conv or Gemm into its weights and bias."""
    consumer = single_consumer(nodes, outputs)
    dropped: set[int] = set()
    after: dict[int, list[Node]] = {}  # a moved Squeeze (and activation), placed where the Squeeze was
    for n in nodes:
        if n.op_type not in ("Conv", "Gemm") or n.domain or len(n.outputs) != 1 or id(n) in dropped \
                or len(n.inputs) < 2 or n.inputs[1] not in constants:
            continue
        w = constants[n.inputs[1]]
        if n.op_type == "Gemm" and w.ndim != 2:
            continue
        channels = w.shape[0] if n.op_type == "Conv" else w.shape[0 if n.attrs.get("transB", 0) else 1]
        rank = w.ndim if n.op_type == "Conv" else 2
        scale, shift = np.ones(channels), np.zeros(channels)
        x, chain, squeeze, end = n.outputs[0], [], None, None
        while (m := consumer.get(x)) is not None and not m.domain:
            if m.op_type == "Squeeze" and squeeze is None and n.op_type == "Conv":
                axes = _axes(m, constants)
                if not axes or any(a % rank < 2 for a in axes):
                    break
                squeeze, rank = m, rank - len(axes)
                chain.append(m)
            elif m.op_type in AFFINE and len(m.inputs) == 2:
                c = _other(m, x)
                v = _channel_values(constants.get(c), rank, channels)
                if v is None or not np.isfinite(v).all() or (m.op_type == "Div" and (m.inputs[1] != c or not v.all())):
                    break
                if m.op_type == "Mul":
                    scale, shift = scale * v, shift * v
                elif m.op_type == "Div":
                    scale, shift = scale / v, shift / v
                elif m.op_type == "Add":
                    shift = shift + v
                elif m.inputs[0] == x:  # x - c
                    shift = shift - v
                else:  # c - x
                    scale, shift = -scale, v - shift
                chain.append(m)
                end = m
            else:
                break
            x = m.outputs[0]
        if end is None:
            continue
        weights = folded_weights(n, scale, shift, constants)
        if weights is None:
            continue
        read_folded_weights(n, weights, constants, "affine")
        dropped |= {id(m) for m in chain}
        n.name = "+".join([n.name] + [m.name for m in chain if m is not squeeze])
        if squeeze is None or chain.index(squeeze) > chain.index(end):
            n.outputs = list(end.outputs)
            if squeeze is not None:  # (after the last folded node: it stays where it is)
                dropped.discard(id(squeeze))
            continue
        # Conv -> Squeeze -> affine -> [activation]: Conv(folded) -> [activation] -> Squeeze
        moved = [squeeze]
        act = consumer.get(end.outputs[0])
        if act is not None and act.op_type in ACTIVATIONS and not act.domain and act.inputs[0] == end.outputs[0] \
                and len(act.outputs) == 1:
            act.inputs = [f"{n.name}::out", *act.inputs[1:]]
            act.outputs, squeeze.outputs = [f"{act.name}::out"], list(act.outputs)
            moved = [act, squeeze]
            dropped.add(id(act))
        else:
            squeeze.outputs = list(end.outputs)
        n.outputs = [f"{n.name}::out"]
        squeeze.inputs = [moved[-2].outputs[0] if len(moved) > 1 else n.outputs[0], *squeeze.inputs[1:]]
        after[id(moved[-1] if len(moved) > 1 else end)] = moved
    out = []
    for n in nodes:
        if id(n) not in dropped:
            out.append(n)
        out.extend(after.get(id(n), ()))
    return out


# Keras recurrent layers: tf2onnx's Loop over the cell -> GRU / RNN

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
            axes = _axes(n, self.constants)
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
        z = _other(s.node(p, "Mul"), h)
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
        r = _other(s.node(b.inputs[0], "Mul"), h)
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


def _recurrent_loops(graph: Graph, nodes: list[Node], outputs: set[str]) -> list[Node]:
    """tf2onnx's Loop over a Keras GRU or SimpleRNN cell (see the module docstring) -> GRU / RNN."""
    outer = _Scope(nodes, graph.constants, inputs=tuple(i.name for i in graph.inputs))
    used = {x for n in nodes for x in n.inputs} | outputs
    rank = ranks(graph, nodes)
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
    one, t0 = s.value(_other(s.node(t_next, "Add"), t) or ""), outer.value(loop.inputs[2])
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
        new.append(_axis_node(graph, "Slice", x, f"{name}::X", 0, (0, steps, 1)))
        x = new[-1].outputs[0]
    if not zero:
        new.append(_axis_node(graph, "Unsqueeze", h0, f"{name}::initial_h", 0))
        h0 = new[-1].outputs[0]
    y, y_h = f"{name}::Y", f"{name}::Y_h"
    attrs = {"hidden_size": hidden, "activations": activations} | ({"linear_before_reset": lbr} if op == "GRU" else {})
    new.append(Node(f"{name}::{op}", op, "", [x, f"{name}::W", f"{name}::R", f"{name}::B", "", "" if zero else h0],
                    [y, y_h], attrs))
    return new + [_axis_node(graph, "Squeeze", o, to, a) for o, to, a in ((y, seq, 1), (y_h, final, 0)) if to in used]


def _axis_node(graph: Graph, op: str, x: str, out: str, axis: int, bounds: tuple | None = None) -> Node:
    """``op`` (Squeeze, Unsqueeze, or Slice to ``bounds`` = (start, end, step)) of ``x`` on one axis,
    written for the graph's opset (axes as inputs from 13, Slice bounds as inputs from 10)."""
    values = {"axes": [axis]} | ({} if bounds is None else {"starts": [bounds[0]], "ends": [bounds[1]]})
    if op == "Slice" and bounds[2] != 1:
        values["steps"] = [bounds[2]]
    if graph.opset < (10 if op == "Slice" else 13):
        return Node(out, op, "", [x], [out], values)
    order = ("starts", "ends", "axes", "steps") if op == "Slice" else ("axes",)
    for k in values:
        graph.constants[f"{out}::{k}"] = np.array(values[k], np.int64)
    return Node(out, op, "", [x, *(f"{out}::{k}" for k in order if k in values)], [out])


def _split_to_sequence(graph: Graph, nodes: list[Node], outputs: set[str]) -> list[Node]:
    """``SequenceAt(SplitToSequence(x, split), i)`` with constant split and positions -> ``Slice(x)`` or
    ``Gather(x, i)`` (see the module docstring); a sequence with any other reader stays."""
    readers = _readers(nodes)
    dropped: set[int] = set()
    for n in nodes:
        split = n.inputs[1] if len(n.inputs) > 1 and n.inputs[1] else None
        if n.op_type != "SplitToSequence" or n.domain or n.outputs[0] in outputs \
                or (split is not None and split not in graph.constants):
            continue
        sizes = None if split is None else [int(v) for v in graph.constants[split].reshape(-1)]
        scalar = split is not None and graph.constants[split].ndim == 0
        axis, ats, new = n.attrs.get("axis", 0), readers.get(n.outputs[0], []), []
        for at in ats:
            pos = graph.constants.get(at.inputs[1]) if at.op_type == "SequenceAt" and not at.domain else None
            i = None if pos is None or pos.size != 1 else int(pos.reshape(-1)[0])
            listed = sizes is not None and not scalar
            if i is None or (scalar and i < 0) or (listed and not -len(sizes) <= i < len(sizes)):
                break
            if sizes is None and not n.attrs.get("keepdims", 1):
                new.append(Node(at.name, "Gather", "", [n.inputs[0], at.inputs[1]], list(at.outputs), {"axis": axis}))
                continue
            if sizes is None:
                bounds = (i, i + 1 if i != -1 else 2**63 - 1, 1)
            elif listed:
                i %= len(sizes)
                bounds = (sum(sizes[:i]), sum(sizes[:i + 1]), 1)
            else:
                bounds = (i * sizes[0], (i + 1) * sizes[0], 1)
            new.append(_axis_node(graph, "Slice", n.inputs[0], at.outputs[0], axis, bounds))
        if not ats or len(new) != len(ats):
            continue
        for at, m in zip(ats, new):
            at.op_type, at.inputs, at.attrs = m.op_type, m.inputs, m.attrs
        dropped.add(id(n))
    return [n for n in nodes if id(n) not in dropped]


def _expanded_bias(graph: Graph, nodes: list[Node]) -> list[Node]:
    """A Conv/ConvTranspose bias ``Expand([CastLike](c), shape)`` of a one-element constant -> a constant
    vector (see the module docstring); the nodes that computed it are left to _live."""
    made = {o: n for n in nodes for o in n.outputs}
    for n in nodes:
        if n.op_type not in ("Conv", "ConvTranspose") or n.domain or len(n.inputs) != 3 \
                or n.inputs[1] not in graph.constants or n.inputs[2] in graph.constants:
            continue
        expand = made.get(n.inputs[2])
        if expand is None or expand.op_type != "Expand" or expand.domain:
            continue
        c = expand.inputs[0]
        if c in made and made[c].op_type == "CastLike" and not made[c].domain:
            c = made[c].inputs[0]
        w, value = graph.constants[n.inputs[1]], graph.constants.get(c)
        if value is None or value.size != 1 or w.ndim < 3:
            continue
        channels = w.shape[0] if n.op_type == "Conv" else w.shape[1] * n.attrs.get("group", 1)
        graph.constants[f"{n.outputs[0]}::bias"] = np.full(channels, value.reshape(-1)[0], w.dtype)
        n.inputs = [*n.inputs[:2], f"{n.outputs[0]}::bias"]
    return nodes


def _pad_into_conv(graph: Graph, nodes: list[Node], outputs: set[str]) -> list[Node]:
    """``Conv(Pad(x, pads))``, a constant zero padding of spatial axes read by the Conv alone -> ``Conv(x)``
    with ``pads`` added to its own (explicit: auto_pad NOTSET)."""
    consumer = single_consumer(nodes, outputs)
    dropped: set[int] = set()
    for pad in nodes:
        conv = consumer.get(pad.outputs[0])
        if pad.op_type != "Pad" or pad.domain or conv is None or conv.op_type != "Conv" or conv.domain \
                or conv.inputs[0] != pad.outputs[0] or conv.inputs[1] not in graph.constants \
                or conv.attrs.get("auto_pad", "NOTSET") != "NOTSET" or pad.attrs.get("mode", "constant") != "constant":
            continue
        rank = graph.constants[conv.inputs[1]].ndim
        if graph.opset < 11:
            pads, value, axes = pad.attrs.get("pads", pad.attrs.get("paddings")), pad.attrs.get("value", 0.0), None
        else:
            ins = pad.inputs + [""] * (4 - len(pad.inputs))
            if any(i and i not in graph.constants for i in ins[1:]):
                continue
            pads = graph.constants[ins[1]]
            value = graph.constants[ins[2]].reshape(-1)[0] if ins[2] else 0.0
            axes = graph.constants[ins[3]] if ins[3] else None
        axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.reshape(axes, -1)]
        pads = [int(p) for p in np.reshape(pads, -1)]
        if value != 0 or len(pads) != 2 * len(axes) or min(pads, default=0) < 0:
            continue
        before, after = [0] * rank, [0] * rank
        for j, a in enumerate(axes):
            before[a], after[a] = pads[j], pads[j + len(axes)]
        if any(before[:2] + after[:2]):
            continue
        own = list(conv.attrs.get("pads", [0] * 2 * (rank - 2)))
        conv.attrs["pads"] = [p + q for p, q in zip(own, before[2:] + after[2:])]
        conv.inputs = [pad.inputs[0], *conv.inputs[1:]]
        dropped.add(id(pad))
    return [n for n in nodes if id(n) not in dropped]


def _reverse_sequence(graph: Graph, nodes: list[Node]) -> list[Node]:
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
        sl = _axis_node(graph, "Slice", n.inputs[0], n.outputs[0], time, (-1, -2**63, -1))
        n.op_type, n.inputs, n.attrs = "Slice", sl.inputs, sl.attrs
    return nodes
