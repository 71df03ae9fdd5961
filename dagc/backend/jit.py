"""The one numba decorator of dagc's compiled code (shared kernels, activations and the
generated modules), with the reason for each flag.

- ``cache=True``: compiled machine code is kept on disk beside the source, so a second
  process loads it instead of compiling again (compiling every pass is the slowest step of
  a cold start).
- ``error_model="numpy"``: division by zero gives inf/NaN as in numpy instead of raising;
  the check numba's default model inserts stops loops from vectorizing.
- ``no_cfunc_wrapper=True``: nothing calls these functions from C, and the wrapper is a
  measurable share of compile time.
- No ``fastmath``: it would let LLVM reassociate sums and contract multiply-adds, and every
  result must be reproducible bit for bit across widths, machines and code changes.
- No ``parallel``: numba's thread pool and BLAS's would compete for the same cores.
"""

from numba import njit

jit = njit(cache=True, error_model="numpy", no_cfunc_wrapper=True)
