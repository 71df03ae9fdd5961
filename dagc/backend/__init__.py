"""Backend: IR -> generated Python module (templates), shared numba kernels, module cache."""
