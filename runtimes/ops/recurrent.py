"""LSTM, GRU and RNN (opsets 7 to 22; ``layout`` from 14) on ``kernels.recurrent``: every direction,
optional B, sequence_lens (per-batch lengths, read at run time), initial states, peepholes, clip,
input_forget, linear_before_reset, the activation lists onnxruntime accepts, and any subset of the
outputs. Constant weights are packed once here; weights given at run time are packed at each call."""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels import activation as act
from ..kernels import recurrent as kr
from .registry import In, Kernel, Out, Unsupported, aligned_bytes, register

# op -> (gates, activations per direction, default activations)
SPECS = {"LSTM": (4, 3, ("Sigmoid", "Tanh", "Tanh")), "GRU": (3, 2, ("Sigmoid", "Tanh")), "RNN": (1, 1, ("Tanh",))}
KINDS = {"LSTM": kr.LSTM, "GRU": kr.GRU, "RNN": kr.RNN}
# activation name (lower case, as onnxruntime matches it) -> (code, uses alpha, uses beta, defaults)
ACTIVATIONS = {
    "sigmoid": (act.SIGMOID, False, False, (0.0, 0.0)),
    "tanh": (act.TANH, False, False, (0.0, 0.0)),
    "relu": (act.RELU, False, False, (0.0, 0.0)),
    "leakyrelu": (act.LEAKY_RELU, True, False, (0.01, 0.0)),
    "hardsigmoid": (act.HARD_SIGMOID, True, True, (0.2, 0.5)),
    "affine": (kr.AFFINE, True, True, (0.0, 0.0)),
    "scaledtanh": (kr.SCALED_TANH, True, True, (0.0, 0.0)),
    "thresholdedrelu": (kr.THRESHOLDED_RELU, True, False, (0.0, 0.0)),
    "elu": (kr.ELU, True, False, (1.0, 0.0)),
    "softsign": (kr.SOFTSIGN, False, False, (0.0, 0.0)),
    "softplus": (kr.SOFTPLUS, False, False, (0.0, 0.0)),
}
F32 = np.dtype(np.float32)


def _activations(node: Node, dirs: int) -> tuple[list[int], list[float]]:
    """Codes (three per direction, unused ones identity) and (alpha, beta) pairs of the activation
    list (``count`` per direction), alphas and betas consumed in order by the functions that take
    them (onnxruntime's rule)."""
    _, count, default = SPECS[node.op_type]
    names = list(node.attrs.get("activations", default * dirs))
    if len(names) != count * dirs:
        raise ValueError(f"{node.op_type} takes {count * dirs} activations here, got {names}")
    alphas = iter(float(v) for v in node.attrs.get("activation_alpha", []))
    betas = iter(float(v) for v in node.attrs.get("activation_beta", []))
    codes, params = [], []
    for d in range(dirs):
        for k in range(3):
            if k >= count:
                codes.append(act.IDENTITY)
                params += [0.0, 0.0]
                continue
            name = names[d * count + k]
            if name.lower() not in ACTIVATIONS:
                raise Unsupported(f"activation {name!r} (edgekit and onnxruntime know {sorted(ACTIVATIONS)})")
            code, uses_alpha, uses_beta, (alpha, beta) = ACTIVATIONS[name.lower()]
            codes.append(code)
            params += [next(alphas, alpha) if uses_alpha else alpha, next(betas, beta) if uses_beta else beta]
    return codes, params


def _check(name: str, t, shape: tuple[int, ...], dtype: np.dtype = F32) -> None:
    """Unsupported unless input ``name`` has ``dtype``; ValueError unless it has ``shape``."""
    if t.dtype != dtype:
        raise Unsupported(f"{name} of type {t.dtype} (edgekit computes float32 with int32 lengths)")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")


def _arg(inputs: list, index: int, name: str, shape: tuple[int, ...], dtype: np.dtype = F32) -> tuple:
    """(kernel argument, given): In(index) or a writable copy of a constant; zeros when omitted."""
    t = inputs[index] if index < len(inputs) else None
    if t is None:
        return np.zeros(shape, dtype), False
    _check(name, t, shape, dtype)
    return (np.array(t.value, dtype) if t.is_const else In(index)), True


def _plan(kind: int, seq: int, batch: int, inp: int, hid: int, dirs: int, gates: int, flags: tuple,
          codes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's int64 plan (fields of kernels.recurrent) and its aligned ``packed`` and ``work``
    buffers; ``flags`` are (layout, reverse, want_y, pack, has_clip, peep, input_forget or
    linear_before_reset)."""
    gh = gates * hid
    dgh = dirs * gh
    packed_at = np.cumsum([0, inp * dgh, dirs * hid * gh, dgh, dirs * hid, dirs * 3 * hid])  # W', R', bias, Rb_h, P
    work_at = np.cumsum([0, seq * batch * dgh, batch * gh, dirs * batch * hid, dirs * batch * hid, batch * hid])
    head = [kind, seq, batch, inp, hid, dirs, *flags, *packed_at[:5], *work_at[:5]]
    plan = np.array(head + codes + list(np.arange(inp) * dgh) + list(np.arange(hid) * gh), np.int64)
    packed = aligned_bytes(4 * int(packed_at[-1])).view(np.float32)
    work = aligned_bytes(4 * int(work_at[-1])).view(np.float32)
    return plan, packed, work


@register("LSTM", "GRU", "RNN")
def build_recurrent(node: Node, inputs: list, opset: int) -> Kernel:
    """One ``recurrent_kernel`` step; absent optional inputs become zeros (lengths: the sequence)."""
    op = node.op_type
    if opset < 7:
        raise Unsupported(f"{op} before opset 7 (onnxruntime runs it from opset 7)")
    gates, _, _ = SPECS[op]
    x, w, r = inputs[0], inputs[1], inputs[2]
    if x.dtype != F32:
        raise Unsupported(f"{op} on {x.dtype} (edgekit computes float32)")
    if len(x.shape) != 3 or len(w.shape) != 3 or len(r.shape) != 3:
        raise ValueError(f"X, W and R must be 3-D, got {list(x.shape)}, {list(w.shape)}, {list(r.shape)}")
    layout = int(node.attrs.get("layout", 0)) if opset >= 14 else 0
    if layout not in (0, 1):
        raise ValueError(f"layout must be 0 or 1, got {layout}")
    seq, batch, inp = (x.shape[1], x.shape[0], x.shape[2]) if layout else x.shape
    direction = node.attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    if "clip" in node.attrs and not float(node.attrs["clip"]) > 0:
        raise ValueError(f"clip must be positive, got {node.attrs['clip']}")
    hid = int(node.attrs.get("hidden_size", r.shape[-1]))
    gh = gates * hid
    _check("W", w, (dirs, gh, inp))
    _check("R", r, (dirs, gh, hid))
    state = (batch, dirs, hid) if layout else (dirs, batch, hid)
    b, _ = _arg(inputs, 3, "B", (dirs, 2 * gh))
    lens, given = _arg(inputs, 4, "sequence_lens", (batch,), np.dtype(np.int32))
    if not given:
        lens = np.full(batch, seq, np.int32)
    h0, _ = _arg(inputs, 5, "initial_h", state)
    c0, _ = _arg(inputs, 6, "initial_c", state) if op == "LSTM" else (np.zeros(state, F32), False)
    p, peep = _arg(inputs, 7, "P", (dirs, 3 * hid)) if op == "LSTM" else (np.zeros((dirs, 3 * hid), F32), False)
    flag = int(node.attrs.get("input_forget", 0)) if op == "LSTM" else int(node.attrs.get("linear_before_reset", 0))
    codes, act_params = _activations(node, dirs)
    weights = (w, r, inputs[3] if len(inputs) > 3 else None, inputs[7] if op == "LSTM" and len(inputs) > 7 else None)
    pack_now = not all(t is None or t.is_const for t in weights)  # weights fed: packed at each call

    y_shape = (batch, seq, dirs, hid) if layout else (seq, dirs, batch, hid)
    shapes = [y_shape, state, state][:2 if op != "LSTM" else 3]
    if len(node.outputs) > len(shapes):
        raise ValueError(f"{op} has at most {len(shapes)} outputs, got {len(node.outputs)}")
    outs = [Out(j) if j < len(node.outputs) else np.empty(s, F32) for j, s in enumerate(shapes)]
    yc = outs[2] if op == "LSTM" else np.empty(state, F32)

    flags = (layout, int(direction == "reverse"), int(bool(node.outputs[0])), int(pack_now), int("clip" in node.attrs),
             int(peep), flag)
    plan, packed, work = _plan(KINDS[op], seq, batch, inp, hid, dirs, gates, flags, codes)
    params = np.array([float(node.attrs.get("clip", 0.0))] + act_params, np.float32)
    w_arg, r_arg = (In(1), In(2)) if pack_now else (np.zeros((1, 1, 1), F32),) * 2
    if not pack_now:
        kr.pack_weights(np.array(w.value, F32), np.array(r.value, F32), b, p, packed, plan)
        b, p = np.zeros((1, 1), F32), np.zeros((1, 1), F32)
    args = (In(0), w_arg, r_arg, b, p, lens, h0, c0, outs[0], outs[1], yc, packed, work, plan, params)
    return Kernel(kr.recurrent_kernel, args, [(s, F32) for s in shapes[:len(node.outputs)]])
