"""Benchmarks of dagc against equivalent JAX and PyTorch (torch.func) networks.

Run `python -m bench --help`. Modules: `network` (the framework-neutral description of a
compiled net), `peers` (the JAX and PyTorch implementations), `timing` (interleaved rounds,
medians of ratios), `machine` (machine info and its measured limits), `lanczos` (Hessian
norms), `probes` (fresh-process compile time and memory), `targets` (the issue-4 targets),
`suite` (what is measured) and `report` (markdown and JSON).
"""
