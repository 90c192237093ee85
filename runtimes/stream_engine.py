"""The engine that runs a StreamiNNC step model hop by hop: edgekit's plan as one StepProgram.

The step model (``edgekit.converters.stream``) gives each layer a shift buffer B = Concat(history,
new) along time, and cuts the next history out of B with a Slice. Here:
- the Slices are dropped and next states are read from B's buffer (``cut_states``);
- the history input is B's own first columns and, when the new columns are the pushed samples or a
  1-D pool's output read by nothing else, they are written straight into B's last columns, so the
  Concat disappears;
- float32 states are copied back inside the program, at the end of the hop;
- a float32 hop of pushed samples can be checked, copied in and run by one call that also hands
  over the result (``Engine.feed``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.metadata import STREAM_KEY

from .kernels import pool as kp
from .kernels.layout import copy_blocks
from .kernels.shift import WINDOW_POOL_INTO, shift_history
from .ops.layout import block_table
from .plan import Plan
from .step_program import StepProgram

POOL_CODES = {fn: code for code, fn in kp.WINDOW_POOL.items()}


@dataclass
class Engine:
    """Bound buffers of one compiled step: write ``inputs`` in place, call ``run``, read ``outputs``
    (the same arrays after every run). A state output that is its input array (updated in place by
    ``run``) is not copied back. ``feed``, when given, does a whole hop in one call: ``feed(chunk,
    out)`` with the hop's samples as (N*C, W) rows in C order writes them into the stream input, runs
    and, for a model of one output, copies it into ``out`` unless ``out`` is empty (else of the
    output's shape), and returns ``kernels.program.RAN`` if they are all finite; else it returns
    NOT_FINITE, or NOT_A_HOP for rows of another shape, with nothing written or run. It raises
    TypeError for arrays it does not take (the session's general path then checks and copies the
    chunk), as ``StepProgram.feeder``'s does for any but writeable float32 2-D C-contiguous ones."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    run: Callable[[], None]
    feed: Callable[[np.ndarray, np.ndarray], int] | None = None
    result_shape: tuple[int, ...] | None = None
    """The shape of the ``out`` that ``feed`` fills (None: ``out`` must be empty)."""


EngineFactory = Callable[[onnx.ModelProto, dict[str, tuple[int, ...]]], Engine]
"""Builds the engine of a step model for its input shapes (default: ``plan_engine``)."""


def metadata(step: onnx.ModelProto) -> dict[str, Any]:
    """The step model's StreamiNNC metadata (schema in docs/streaming.md)."""
    return json.loads({p.key: p.value for p in step.metadata_props}[STREAM_KEY])


def plan_engine(step_model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> Engine:
    """The edgekit plan of ``step_model`` for these input shapes, rewritten as the module docstring
    says and run as one StepProgram (one compiled call per hop where every kernel is known to it)."""
    from .session import InferenceSession

    meta = metadata(step_model)
    states = {s["input"]: s["output"] for s in meta["states"]}
    model, cuts = cut_states(step_model, set(states.values()))
    session = InferenceSession(model)
    plan = session.plan(tuple(shapes[i.name] for i in session.get_inputs()))
    outputs = dict(plan.outputs)
    outputs.update({o: plan.outputs[t][:, :, a:b] for o, (t, a, b) in cuts.items()})
    readers: dict[str, int] = {o.name: 1 for o in step_model.graph.output}  # read by the caller
    for n in session.prepared.nodes:  # every node the plans run, views (Identity, Reshape...) included
        for x in n.inputs:
            readers[x] = readers.get(x, 0) + 1
    inputs, steps, in_place = _write_in_place(plan, states, cuts, readers)
    feedback = [(i, o) for i, o in states.items() if inputs[i].dtype == np.float32 and inputs[i].ndim == 3]
    whole = {o: plan.outputs[cuts[o][0]] if o in cuts else outputs[o] for _, o in feedback}
    steps += [(shift_history, (whole[o], inputs[i].shape[2], cuts[o][1])) if i in in_place
              else _copy_step(inputs[i], outputs[o], whole[o]) for i, o in feedback]
    program = StepProgram(steps, also=[*inputs.values(), *outputs.values()])
    inputs = {name: program.view(a) for name, a in inputs.items()}
    outputs = {name: program.view(a) for name, a in outputs.items()}
    outputs.update({o: inputs[i] for i, o in feedback})
    stream_input = inputs[meta["input"]]
    result = outputs[meta["outputs"][0]] if len(meta["outputs"]) == 1 else None
    if result is not None and not program.hands_over(result):
        result = None  # (handed over by a copy in Python)
    feed = program.feeder(stream_input, result)
    return Engine(inputs, outputs, program.run, feed, result.shape if feed is not None and result is not None else None)


def _write_in_place(plan: Plan, states: dict[str, str], cuts: dict[str, tuple[str, int, int]],
                    readers: dict[str, int]) -> tuple[dict[str, np.ndarray], list, set[str]]:
    """The engine's input arrays and the plan's steps, with every shift-buffer Concat that can be
    removed removed: its history input becomes a view of B's first columns, and its new columns are
    written into B's last ones by their producer (the pushed samples, or a 1-D full-window pool).
    ``readers`` counts the nodes (and the caller, for step-model outputs) reading each tensor.
    Also returns the history inputs so kept in their buffers."""
    inputs = dict(plan.input_buffers)
    steps = list(plan.steps)
    nodes = plan.step_nodes
    cut_from: dict[str, int] = {}
    for t, _, _ in cuts.values():
        cut_from[t] = cut_from.get(t, 0) + 1
    producer = {o: i for i, n in enumerate(nodes) for o in n.outputs}
    dropped, in_place = set(), set()
    for i, node in enumerate(nodes):
        if steps[i][0] is not copy_blocks or node.op_type != "Concat" or len(node.inputs) != 2:
            continue
        history, new = node.inputs
        buf = steps[i][1][0]
        if (history not in states or history not in inputs or readers[history] != 1 or buf.ndim != 3
                or node.attrs.get("axis") not in (2, -1) or cuts.get(states[history], ("",))[0] != node.outputs[0]
                or cut_from[node.outputs[0]] != 1 or readers.get(node.outputs[0], 0) != 1 or readers[new] != 1):
            continue  # B only feeds the next layer and its own next state; the parts are read only here
        h = inputs[history].shape[2]
        if new in inputs and new not in states:  # the pushed samples
            inputs[new] = buf[:, :, h:]
        elif new in producer and steps[producer[new]][0] in POOL_CODES:
            j = producer[new]
            fn, (x, out, k, stride) = steps[j]
            steps[j] = (WINDOW_POOL_INTO[POOL_CODES[fn]], (x, out, buf, k, stride, h))
        else:
            continue
        inputs[history] = buf[:, :, :h]
        in_place.add(history)
        dropped.add(i)
    return inputs, [s for i, s in enumerate(steps) if i not in dropped], in_place


def _copy_step(dst: np.ndarray, src: np.ndarray, src_base: np.ndarray) -> tuple:
    """A copy_blocks step writing ``src``, a view into (or the same as) the C-contiguous ``src_base``,
    into the C-contiguous state buffer ``dst`` (a history kept in its shift buffer moves by
    ``shift_history`` instead)."""
    table = block_table([(0, _offset(src, src_base), 0, list(src.shape),
                          [s // src.itemsize for s in src.strides], [s // dst.itemsize for s in dst.strides])])
    return copy_blocks, (dst, table, src_base)


def _offset(view: np.ndarray, base: np.ndarray) -> int:
    """Element offset of ``view``'s first element in ``base``."""
    return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // view.itemsize


def cut_states(step: onnx.ModelProto, state_outputs: set[str]) -> tuple[onnx.ModelProto, dict[str, tuple[str, int, int]]]:
    """``step`` without the Slices that make a next state (one of ``state_outputs``) from columns
    [a, b) of a 3-D tensor t, t made a model output instead, and {state output: (t, a, b)}."""
    inits = {i.name: i for i in step.graph.initializer}
    typed = {v.name: v for v in step.graph.value_info}
    names = {o.name for o in step.graph.output}
    cuts, kept = {}, []
    for n in step.graph.node:
        consts = [numpy_helper.to_array(inits[i]).tolist() if i in inits else None for i in n.input[1:]]
        if (n.op_type == "Slice" and n.output[0] in names and n.output[0] in state_outputs and len(consts) == 3 and consts[2] in ([2], [-1])
                and None not in consts and n.input[0] in typed and len(consts[0]) == 1
                and len(typed[n.input[0]].type.tensor_type.shape.dim) == 3 and 0 <= consts[0][0] <= consts[1][0]):
            cuts[n.output[0]] = (n.input[0], consts[0][0], consts[1][0])
        else:
            kept.append(n)
    if not cuts:
        return step, {}
    model = onnx.ModelProto()
    model.CopyFrom(step)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    outputs = [o for o in step.graph.output if o.name not in cuts]
    outputs += [typed[t] for t in dict.fromkeys(t for t, _, _ in cuts.values()) if t not in names]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model, cuts
