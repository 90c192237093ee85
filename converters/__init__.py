"""edgekit.converters: ONNX -> ONNX rewrites, one module per technique; no execution here."""
