"""StreamingSession: push samples of a live signal, get the window CNN's outputs once per hop.

It runs the StreamiNNC step model (see ``edgekit.converters.stream``) on an Engine, by default
edgekit's plan as one compiled program (``stream_engine``): a push copies the new samples into the
engine's own input buffer, each completed hop is one run that also updates the states in place.
Nothing is allocated per hop but the output arrays handed to the caller, and those only while the
caller keeps earlier ones; a chunk of exactly one hop, pushed when no samples are pending, is
checked, copied in, run and its output copied out by one call (``Engine.feed``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx

from edgekit.arrays import as_array
from edgekit.errors import InputError, ModelError
from edgekit.metadata import STREAM_KEY
from edgekit.model import ModelSource, load_model

from .kernels.shift import all_finite, copy_if_finite
from .kernels.program import NOT_FINITE, RAN
from .step_program import NO_ROWS
from .stream_engine import Engine, EngineFactory, metadata, plan_engine

__all__ = ["Engine", "EngineFactory", "StreamingSession", "is_step_model", "step_model_of"]


_refs = sys.getrefcount  # an array only the session's list of spares refers to counts 2 here


@dataclass
class _State:
    input: str
    output: str
    shape: tuple
    dtype: np.dtype
    fill: Any
    batched: bool

    def shape_for(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.shape[1:]) if self.batched else tuple(self.shape)


class StreamingSession:
    """Streaming inference of a StreamiNNC step model: ``push`` samples, get outputs per completed hop.

    ``model`` is a ``StreamingModel`` or a saved step model from
    ``edgekit.converters.stream.to_streaming``; ``edgekit.StreamingSession`` also takes the window
    model itself and converts it first. ``hop``, when given, must be the step model's hop.
    ``push`` returns nothing for the first
    ``warmup_hops`` hops (until a full window has been seen); from then on the entry of the hop
    ending at sample T is the window model's output for samples [T - delay - L, T - delay).
    ``engine`` runs the step instead of the edgekit plan (an ``EngineFactory``, e.g. a fused kernel).
    """

    def __init__(self, model: ModelSource | Any, hop: int | None = None, allow_nan: bool = False,
                 engine: EngineFactory | None = None) -> None:
        self._make_engine = engine or plan_engine  # (step model, input shapes) -> Engine
        step = step_model_of(model)
        if step is None:
            raise ModelError("not a StreamiNNC step model: convert the window model with "
                             "edgekit.converters.stream.to_streaming, or use edgekit.StreamingSession")
        meta = metadata(step)
        if hop is not None and hop != meta["hop"]:
            raise ModelError(f"this step model advances {meta['hop']} samples per hop, not {hop}")
        self._step = step
        self.hop: int = meta["hop"]
        self.window: int = meta["window"]
        self.delay: int = meta["delay"]
        self.warmup_hops: int = meta["warmup_hops"]
        self.input_name: str = meta["input"]
        self.output_names: list[str] = list(meta["outputs"])
        self.channels: int = meta["channels"]
        self.allow_nan = allow_nan
        self._states = [_State(s["input"], s["output"], tuple(s["shape"]), np.dtype(s["dtype"]), s["fill"],
                               s["batched"]) for s in meta["states"]]
        x = next(i for i in step.graph.input if i.name == self.input_name)
        self.dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(x.type.tensor_type.elem_type))
        self._float32 = self.dtype == np.float32  # float32 chunks are checked for NaN/Inf as they are copied in
        dim = x.type.tensor_type.shape.dim[0]
        self._static_batch: int | None = dim.dim_value if dim.HasField("dim_value") else None
        self._engine: Engine | None = None
        self._feed: Callable[[np.ndarray, np.ndarray], int] | None = None  # the one-call hop, once a batch is bound
        self._engine_batch = 0
        self._batch: int | None = None
        self._fill = 0
        self._hops = 0
        if self._static_batch is not None:
            self._bind(self._static_batch)

    @property
    def hops(self) -> int:
        """Hops completed since the start (or the last reset)."""
        return self._hops

    @property
    def pending(self) -> int:
        """Samples pushed that do not complete a hop yet."""
        return self._fill

    def push(self, chunk: np.ndarray) -> list[list[np.ndarray]]:
        """Feed new samples, (N, C, n) or (C, n) when N = 1; one output list per hop completed."""
        feed = self._feed
        if feed is not None and not self._fill and type(chunk) is np.ndarray:  # (no subclass: a masked array)
            rows = (chunk if chunk.ndim == 2 and self._batch == 1  # (the call checks its shape)
                    else chunk.reshape(self._hop_rows) if chunk.shape == self._hop_3d else None)
            if rows is not None:
                spare = self._spare  # earlier hops' output arrays, reused once the caller has let go of them
                if spare is None:
                    out = NO_ROWS
                else:
                    out = spare[0]
                    if _refs(out) != 3:  # (the list, ``out`` and the argument)
                        out = spare[1] if _refs(spare[1]) == 2 else self._new_output(None)
                try:  # exactly one hop: checked, copied in, run and its output copied out by one call
                    ran = feed(rows, out)
                except TypeError:  # arrays the call does not take: the general path and, for a chunk
                    ran = None  # (read-only?), a guard from now on (a refusal costs about 70 us, the guard 0.1)
                    if spare and not (out.flags.writeable and out.dtype == np.float32
                                      and out.shape == self._engine.result_shape):  # a result made read-only,
                        self._new_output(out)  # retyped or reshaped in place, then let go: not reused
                    elif not hasattr(feed, "guards"):
                        self._feed = _guarded(feed)
                if ran == RAN:
                    hops = self._hops = self._hops + 1
                    if hops <= self.warmup_hops:
                        return []
                    return [[out]] if spare is not None else [[o.copy() for o in self._outputs]]
                if ran == NOT_FINITE and not self.allow_nan:  # (nothing written: allow_nan takes the general path)
                    raise _non_finite()
        a = self._checked(chunk)
        n = a.shape[2]
        if n == 0:
            return []
        check = self._float32 and not self.allow_nan
        if check and (self._batch is None or n > self.hop - self._fill) and not all_finite(a):
            raise _non_finite()  # before a first chunk binds the batch, or before a first hop runs
        if self._batch is None:
            self._bind(a.shape[0])
        xbuf, run, feedback, outputs = self._xbuf, self._engine.run, self._feedback, self._outputs
        results = []
        pos = 0
        while pos < n:
            take = min(self.hop - self._fill, n - pos)
            if take == n:  # the whole chunk (often exactly one hop) lands in one copy, checked on the way
                dst = xbuf[:, :, self._fill:self._fill + take] if take < self.hop else xbuf
                if check and not copy_if_finite(dst, a):
                    raise _non_finite()
                if not check:
                    np.copyto(dst, a)
            else:
                xbuf[:, :, self._fill:self._fill + take] = a[:, :, pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == self.hop:
                run()
                for state_in, state_out in feedback:
                    np.copyto(state_in, state_out)
                self._fill = 0
                self._hops += 1
                if self._hops > self.warmup_hops:
                    results.append([o.copy() for o in outputs])
        return results

    def reset(self) -> None:
        """Start a new stream: initial states, no pending samples (a dynamic batch may change)."""
        self._fill = 0
        self._hops = 0
        if self._engine is not None:
            for s in self._states:
                self._engine.inputs[s.input].fill(s.fill)
        if self._static_batch is None:
            self._batch = None
            self._feed = None  # the next push binds a batch

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything needed to resume this stream bit-exactly (numpy arrays and ints)."""
        out: dict[str, Any] = {"hop": self.hop, "window": self.window, "hops": self._hops, "pending": self._fill,
                               "batch": self._batch or 0}
        if self._engine is not None:
            out["pending_samples"] = self._engine.inputs[self.input_name][:, :, :self._fill].copy()
            out.update({f"state/{s.input}": self._engine.inputs[s.input].copy() for s in self._states})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()`` output (also in a new process); InputError if it does not fit."""
        keys = ("hop", "window", "hops", "pending", "batch")
        try:
            counters = [state[k] for k in keys]
            hop, window, hops, fill, batch = whole = [int(v) for v in counters]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a StreamingSession state_dict: {exc!r}") from None
        if any(isinstance(v, (bool, np.bool_)) or w != v for w, v in zip(whole, counters)):
            raise InputError(f"state counters must be whole numbers, got {dict(zip(keys, counters))}")
        if (hop, window) != (self.hop, self.window):
            raise InputError(f"state is for hop {hop} / window {window}, this session has {self.hop} / {self.window}")
        if not 0 <= fill < self.hop or hops < 0:
            raise InputError(f"state counters are out of range (pending {fill}, hops {hops})")
        if batch == 0:
            self.reset()
            return
        if self._static_batch is not None and batch != self._static_batch:
            raise InputError(f"state is for batch {batch}, the model has batch {self._static_batch}")
        known = {f"state/{s.input}" for s in self._states}
        unknown = sorted(k for k in state if k.startswith("state/") and k not in known)
        if unknown:  # (a checkpoint of another model with the same sizes, e.g. the spiking form)
            raise InputError(f"state has entries this session's model does not: {', '.join(unknown)}")
        arrays = {s.input: state.get(f"state/{s.input}") for s in self._states}
        arrays[self.input_name] = state.get("pending_samples")
        expect = {s.input: (s.shape_for(batch), s.dtype) for s in self._states}
        expect[self.input_name] = ((batch, self.channels, fill), self.dtype)
        for name, (shape, dtype) in expect.items():
            a = arrays[name]
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
                raise InputError(f"state entry for {name!r} must be a {dtype} array of shape {shape}, got "
                                 f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
        self._bind(batch)
        for s in self._states:
            np.copyto(self._engine.inputs[s.input], arrays[s.input])
        self._engine.inputs[self.input_name][:, :, :fill] = arrays[self.input_name]
        self._fill, self._hops = fill, hops

    def _bind(self, batch: int) -> None:
        """Compile (or reuse) the step for ``batch`` streams and put the initial states in its buffers."""
        if self._engine is None or self._engine_batch != batch:
            shapes = {s.input: s.shape_for(batch) for s in self._states}
            shapes[self.input_name] = (batch, self.channels, self.hop)
            self._engine = eng = self._make_engine(self._step, shapes)
            self._engine_batch = batch
            self._xbuf = eng.inputs[self.input_name]
            self._feedback = [(eng.inputs[s.input], eng.outputs[s.output]) for s in self._states
                              if eng.outputs[s.output] is not eng.inputs[s.input]]
            self._outputs = [eng.outputs[name] for name in self.output_names]
            self._hop_3d, self._hop_rows = (batch, self.channels, self.hop), (batch * self.channels, self.hop)
            self._spare = [np.empty(eng.result_shape, np.float32) for _ in range(2)] if eng.result_shape else None
        self._batch = batch
        self._feed = self._engine.feed if not self._feedback else None  # (the float32 states are fed back by run)
        for s in self._states:
            self._engine.inputs[s.input].fill(s.fill)

    def _new_output(self, old: np.ndarray | None) -> np.ndarray:
        """A fresh output array in place of the spare ``old`` (the first one when None: the caller
        holds both)."""
        i = 1 if self._spare[1] is old else 0
        out = self._spare[i] = np.empty(self._engine.result_shape, np.float32)
        return out

    def _checked(self, chunk: Any) -> np.ndarray:
        """Validate a chunk without touching the session's state."""
        a = chunk if type(chunk) is np.ndarray else as_array(chunk, "chunk")
        if a.dtype != self.dtype:
            raise InputError(f"chunk has dtype {a.dtype}, the model takes {self.dtype} (convert with .astype)")
        if a.ndim == 2:
            if (self._batch or 1) != 1:
                raise InputError(f"a (C, n) chunk is for a batch of 1; this stream has batch {self._batch}")
            a = a[None]
        elif a.ndim != 3:
            raise InputError(f"chunk must be (N, C, n) or (C, n), got shape {list(a.shape)}")
        if a.shape[1] != self.channels:
            raise InputError(f"chunk has {a.shape[1]} channels, the model takes {self.channels}")
        if self._batch is not None and a.shape[0] != self._batch:
            raise InputError(f"chunk has batch {a.shape[0]}, this stream has batch {self._batch} (reset() first)")
        if not self._float32 and not self.allow_nan and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise _non_finite()  # float32 chunks are checked by push on their way in
        return a


def _guarded(feed: Callable[[np.ndarray, np.ndarray], int]) -> Callable[[np.ndarray, np.ndarray], int | None]:
    """``feed`` called only with aligned, writeable float32 chunks, made C-contiguous (None for
    others): once a stream has pushed a chunk the compiled call refused, such as a read-only
    ``np.frombuffer`` view or columns sliced out of a recording, checking costs less than letting the
    call refuse it again."""
    def guarded(chunk: np.ndarray, out: np.ndarray) -> int | None:
        if not chunk.flags.behaved or chunk.dtype != np.float32:
            return None
        return feed(chunk if chunk.flags.c_contiguous else np.ascontiguousarray(chunk), out)
    guarded.guards = feed
    return guarded


def _non_finite() -> InputError:
    return InputError("chunk contains NaN or Inf, which would poison the stream's state "
                      "(allow_nan=True, or --allow-nan in `edgekit stream`, streams it anyway)")


def step_model_of(model: Any) -> onnx.ModelProto | None:
    """The step model held by a StreamingModel or given as a saved step model; None for other models."""
    step = getattr(model, "step_model", None)
    if isinstance(step, onnx.ModelProto):
        return step
    proto = load_model(model)
    return proto if is_step_model(proto) else None


def is_step_model(proto: onnx.ModelProto) -> bool:
    """Whether ``proto`` carries the step-model metadata written by the StreamiNNC converter."""
    return any(p.key == STREAM_KEY for p in proto.metadata_props)
