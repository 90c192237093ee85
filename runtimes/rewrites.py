"""Graph rewrites done once per model, before fusion: patterns exporters (tf2onnx for Keras) write as
chains of small nodes become fewer, equivalent nodes that runtimes/fusion.py can then fuse.

- ``Add(x, 3) -> Clip(0, 6) -> Mul(1/6)`` (or ``Div(6)``) is ``HardSigmoid(x, 1/6, 1/2)``, and
  ``Mul(x, HardSigmoid(x, 1/6, 1/2))`` is ``HardSwish(x)`` (Keras hard_sigmoid / hard_swish), and
  ``Mul(x, Sigmoid(x))`` is ``Swish(x)`` (SiLU as PyTorch and Keras export it), which then fuses into a
  preceding Conv or Gemm like any activation.
- Keras LayerNormalization as tf2onnx decomposes it (mean = ReduceMean(x); var = ReduceMean((x - mean)^2);
  g = gamma / Sqrt(var + eps); y = x * g + (beta - mean * g), with Neg/Sub/Mul/Add/Reciprocal) over the
  last axis is ``LayerNormalization(x, gamma, beta, axis=-1, epsilon=eps)``.
- ``MatMul(A, B)`` with A of rank 2 and B a constant float32 matrix is ``Gemm(A, B)`` (Keras Dense).
- Constant per-output-channel ``Mul`` / ``Add`` / ``Sub`` / ``Div`` after a Conv or Gemm with
  constant weights fold into its weights and bias (Keras BatchNorm written as Mul + Add, a Dense or
  Conv1D bias written as Add), also through a Squeeze of spatial axes (Conv1D as Conv2D + Squeeze),
  which then moves after the chain together with a following activation, so the activation fuses.

Every rewrite fires only when the intermediate tensors have a single consumer and are not graph
outputs, and when the constants cannot broadcast the result to another shape (so outputs are the
same up to float rounding of the folded weights). Ranks come from a small propagation over the
graph (``ranks``); a tensor of unknown rank blocks the rewrites that need it.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Graph, Node

from .fusion import constant_nodes, folded_weights, read_folded_weights, single_consumer
from .ops.activation import ACTIVATIONS

AFFINE = ("Mul", "Add", "Sub", "Div")
SAME_RANK = set(ACTIVATIONS) | {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
    "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Neg", "Abs", "Sqrt",
    "Reciprocal", "Exp", "Log", "Erf", "Cast", "Identity", "Softmax", "LogSoftmax", "Dropout", "Transpose",
    "LRN", "Pad", "Resize", "Upsample", "Floor", "Ceil", "Round", "Sign", "Not", "CumSum"}
BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "And", "Or", "Xor",
             "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "PRelu", "Mod"}


def rewrite(graph: Graph, nodes: list[Node]) -> list[Node]:
    """Return ``nodes`` (in execution order) with the patterns above rewritten; ``graph.constants``
    gains the Constant nodes' values and the folded weights."""
    outputs = {o.name for o in graph.outputs}
    nodes = constant_nodes(nodes, graph.constants, outputs)
    nodes = _hard_sigmoid(nodes, graph.constants, outputs, ranks(graph, nodes))
    nodes = _x_times_gate(nodes, outputs, _is_hard_sigmoid_sixth, "HardSwish")
    nodes = _x_times_gate(nodes, outputs, lambda n: n.op_type == "Sigmoid", "Swish")
    nodes = _layer_norm(nodes, graph.constants, outputs, ranks(graph, nodes))
    nodes = _matmul_to_gemm(nodes, graph.constants, ranks(graph, nodes))
    return _fold_affine(nodes, graph.constants, outputs)


def ranks(graph: Graph, nodes: list[Node]) -> dict[str, int]:
    """Rank of every tensor it can tell without shapes (graph inputs, constants, then op by op)."""
    r = {name: v.ndim for name, v in graph.constants.items()}
    r.update({i.name: len(i.shape) for i in graph.inputs if i.shape is not None})
    for n in nodes:
        ins = [r.get(x) for x in n.inputs if x]
        out = None
        if n.domain or not ins or ins[0] is None:
            pass
        elif n.op_type in SAME_RANK:
            out = ins[0]
        elif n.op_type in BROADCAST:
            out = max(ins) if None not in ins else None
        elif n.op_type in ("Gemm", "Flatten"):
            out = 2
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


def _layer_norm(nodes: list[Node], constants: dict, outputs: set[str], rank: dict[str, int]) -> list[Node]:
    """tf2onnx's LayerNormalization over the last axis (see the module docstring) -> LayerNormalization."""
    uses: dict[str, list[Node]] = {}
    for n in nodes:
        for x in set(n.inputs):
            uses.setdefault(x, []).append(n)

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
