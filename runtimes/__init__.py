"""edgekit.runtimes: execution of ONNX graphs on Numba kernels (plans, sessions, kernels, servers)."""
