"""Side-by-side speed tables of edgekit against onnxruntime (`python -m benchmarks`)."""
