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
- tf2onnx's ``Loop`` over a Keras GRU or SimpleRNN cell is one ``GRU`` / ``RNN`` node, and its
  ``ReverseSequence`` of whole sequences a reversed Slice (``runtimes/recurrent_loops.py``).
- ``QLinearConv``, ``QLinearMatMul`` and com.microsoft ``QGemm`` with constant weights are DequantizeLinear,
  a float32 Conv, MatMul or Gemm on the integer weights, and a requantization; ``MatMulInteger`` and
  ``ConvInteger`` the same with a Cast to int32, when their sums are exact; com.microsoft ``QLinearAdd``
  and its kin are their float32 op between DequantizeLinear and QuantizeLinear (``runtimes/ops/qlinear.py``).
- An ``If`` whose condition is a constant reads only the outer names of the branch it takes, so what
  only the other branch reads is not computed.

Every rewrite fires only when the intermediate tensors have a single consumer and are not graph
outputs, and when the constants cannot broadcast the result to another shape (so outputs are the
same up to float rounding of the folded weights). Ranks come from a small propagation over the
graph (``ranks``); a tensor of unknown rank blocks the rewrites that need it.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Graph, Node, axis_node, live_nodes, other_input, outer_names, squeeze_axes

from .fusion import constant_nodes, folded_weights, read_folded_weights, single_consumer
from .ops.activation import ACTIVATIONS
from .ops.qlinear import qlinear_nodes
from .recurrent_loops import recurrent_loops, reverse_sequence

AFFINE = ("Mul", "Add", "Sub", "Div")
SAME_RANK = set(ACTIVATIONS) | {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
    "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Neg", "Abs", "Sqrt",
    "Reciprocal", "Exp", "Log", "Erf", "Cast", "Identity", "Softmax", "LogSoftmax", "Dropout", "Transpose",
    "DequantizeLinear", "QuantizeLinear", "Requantize",
    "LRN", "Pad", "Resize", "Upsample", "Floor", "Ceil", "Round", "Sign", "Not", "CumSum", "Slice"}
BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "And", "Or", "Xor",
             "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "PRelu", "Mod"}


def rewrite(graph: Graph, nodes: list[Node]) -> list[Node]:
    """Return ``nodes`` (in execution order) with the patterns above rewritten; ``graph.constants``
    gains the Constant nodes' values and the folded weights."""
    outputs = {o.name for o in graph.outputs}
    nodes = live_nodes(_constant_ifs(constant_nodes(nodes, graph.constants, outputs), graph.constants), outputs)
    nodes = qlinear_nodes(graph, nodes)
    nodes = live_nodes(reverse_sequence(graph, recurrent_loops(graph, nodes, outputs, ranks(graph, nodes))), outputs)
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
            axes = squeeze_axes(n, graph.constants)
            if axes is not None:
                out = ins[0] + (len(axes) if n.op_type == "Unsqueeze" else -len(axes))
        elif n.op_type.startswith("Reduce"):
            axes = squeeze_axes(n, graph.constants)
            if n.attrs.get("keepdims", 1):
                out = ins[0]
            elif axes and ins[0]:
                out = ins[0] - len({a % ins[0] for a in axes})
        if out is not None:
            r[n.outputs[0]] = out
    return r


def _scalar(name: str, constants: dict, rank: int | None) -> float | None:
    """The value of a one-element float constant that cannot raise the rank of a rank-``rank`` tensor."""
    c = constants.get(name)
    if c is None or c.size != 1 or c.dtype.kind != "f" or rank is None or c.ndim > rank:
        return None
    return float(c.reshape(-1)[0])


def _hard_sigmoid(nodes: list[Node], constants: dict, outputs: set[str], rank: dict[str, int]) -> list[Node]:
    """``Add(x, 3) -> Clip(0, 6) -> Mul(1/6) | Div(6)`` -> ``HardSigmoid(x, alpha=1/6, beta=0.5)``."""
    consumer = single_consumer(nodes, outputs)
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for add in nodes:
        if add.op_type != "Add" or add.domain or len(add.inputs) != 2:
            continue
        x = next((i for i in add.inputs if _scalar(other_input(add, i) or "", constants, rank.get(i)) == 3.0), None)
        clip = consumer.get(add.outputs[0])
        if x is None or clip is None or clip.op_type != "Clip" or clip.domain or clip.inputs[0] != add.outputs[0]:
            continue
        bounds = ((clip.attrs.get("min"), clip.attrs.get("max")) if len(clip.inputs) == 1 else
                  tuple(_scalar(b, constants, 0) if b else None for b in (clip.inputs[1:] + ["", ""])[:2]))
        scale = consumer.get(clip.outputs[0])
        if bounds != (0.0, 6.0) or scale is None or scale.op_type not in ("Mul", "Div") or scale.domain:
            continue
        c = other_input(scale, clip.outputs[0])
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
        if mul is not None and mul.op_type == "Mul" and not mul.domain and other_input(mul, gate.outputs[0]) == x:
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
        if soft.inputs[0] != x and (mul is None or scalar(other_input(mul, x) or "", x) != 1.0
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
        r, axes = rank.get(x), squeeze_axes(m, constants)
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
        eps = _scalar(other_input(add_eps, var[0].outputs[0]) or "", constants, rank.get(x))
        gamma = vector(other_input(gmul, chain[2].outputs[0]), rank.get(x))
        muls = only(gmul.outputs[0], "Mul", "Mul")
        if eps is None or gamma is None or muls is None:
            continue
        a = next((m for m in muls if other_input(m, gmul.outputs[0]) == x), None)
        b = next((m for m in muls if other_input(m, gmul.outputs[0]) == neg.outputs[0]), None)
        if a is None or b is None or a is b or only(neg.outputs[0], "Mul") is None:
            continue
        add_beta, final = only(b.outputs[0], "Add"), only(a.outputs[0], "Add")
        if add_beta is None or final is None or only(add_beta[0].outputs[0], "Add") != final \
                or other_input(final[0], a.outputs[0]) != add_beta[0].outputs[0]:
            continue
        beta = vector(other_input(add_beta[0], b.outputs[0]), rank.get(x))
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
                axes = squeeze_axes(m, constants)
                if not axes or any(a % rank < 2 for a in axes):
                    break
                squeeze, rank = m, rank - len(axes)
                chain.append(m)
            elif m.op_type in AFFINE and len(m.inputs) == 2:
                c = other_input(m, x)
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
            new.append(axis_node(graph, "Slice", n.inputs[0], at.outputs[0], axis, bounds))
        if not ats or len(new) != len(ats):
            continue
        for at, m in zip(ats, new):
            at.op_type, at.inputs, at.attrs = m.op_type, m.inputs, m.attrs
        dropped.add(id(n))
    return [n for n in nodes if id(n) not in dropped]


def _expanded_bias(graph: Graph, nodes: list[Node]) -> list[Node]:
    """A Conv/ConvTranspose bias ``Expand([CastLike](c), shape)`` of a one-element constant -> a constant
    vector (see the module docstring); the nodes that computed it are dropped by live_nodes."""
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
