"""The public StreamingSession: wires the StreamiNNC converter to the streaming runtime, so users
hand it the window model they trained (the runtime itself never imports converters)."""
from __future__ import annotations

from typing import Any

from .converters.stream import to_streaming
from .errors import ModelError
from .model import ModelSource, load_model
from .runtimes.stream import StreamingSession as _StepSession
from .runtimes.stream import is_step_model


class StreamingSession(_StepSession):
    """Stream a window CNN hop by hop (StreamiNNC); see ``edgekit.runtimes.stream.StreamingSession``.

    ``model`` is the window model (path, bytes or ModelProto, input (N, C, L)), converted with
    ``to_streaming(model, hop, split, window)``, or a StreamingModel / saved step model used as is.
    """

    def __init__(self, model: ModelSource | Any, hop: int | None = None, split: str | list[str] | None = None,
                 window: int | None = None, allow_nan: bool = False) -> None:
        if getattr(model, "step_model", None) is None:
            model = load_model(model)
            if not is_step_model(model):
                if hop is None:
                    raise ModelError("hop is required to stream a window model")
                model = to_streaming(model, hop, split=split, window=window)
        super().__init__(model, hop, allow_nan=allow_nan)
