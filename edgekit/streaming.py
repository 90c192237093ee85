"""The public StreamingSession: wires the streaming converters to the streaming runtime, so users
hand it the model they trained (the runtime itself never imports converters): a window CNN
(StreamiNNC) or an LMUFormer (its step model, one frame per step, run by the fused LMUFormer kernel)."""
from __future__ import annotations

from typing import Any

from .converters.lmu import config_of, to_step
from .converters.stream import to_streaming
from .errors import ModelError
from .model import ModelSource, load_model
from .runtimes.lmu_stream import engine_factory, is_lmuformer_step
from .runtimes.stream import StreamingSession as _StepSession
from .runtimes.stream import is_step_model, step_model_of


class StreamingSession(_StepSession):
    """Stream a window CNN hop by hop (StreamiNNC) or an LMUFormer frame by frame; see
    ``edgekit.runtimes.stream.StreamingSession``.

    ``model`` is a window model (path, bytes or ModelProto, input (N, C, L)), converted with
    ``to_streaming(model, hop, split, window)``; an LMUFormer from ``build_lmuformer`` (recognised by
    its metadata), converted with ``to_step`` (hop 1, no ``hop`` needed); or a StreamingModel /
    StepModel / saved step model used as is. An LMUFormer step runs as one fused kernel call per
    frame (``edgekit.runtimes.lmu_stream``), its products split over ``threads`` threads; other
    step models run on the edgekit plan (``threads`` is ignored).
    """

    def __init__(self, model: ModelSource | Any, hop: int | None = None, split: str | list[str] | None = None,
                 window: int | None = None, allow_nan: bool = False, threads: int = 1) -> None:
        if getattr(model, "step_model", None) is None:
            model = load_model(model)
            if not is_step_model(model):
                if config_of(model) is not None:
                    model = to_step(model)
                elif hop is None:
                    raise ModelError("hop is required to stream a window model")
                else:
                    model = to_streaming(model, hop, split=split, window=window)
        engine = engine_factory(threads) if is_lmuformer_step(step_model_of(model)) else None
        super().__init__(model, hop, allow_nan=allow_nan, engine=engine)
