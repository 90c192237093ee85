"""Model metadata keys that a converter writes and a runtime reads: their one definition, here in the
core because converters and runtimes never import each other."""
from __future__ import annotations

STEP_KEY = "edgekit.lmuformer.step"  # an LMUFormer step's structure (converters.lmu.to_step -> runtimes.lmu_stream; docs/lmu.md)
STREAM_KEY = "edgekit.stream"  # a step model's streaming contract (converters.stream / converters.lmu -> runtimes.stream; docs/streaming.md)
