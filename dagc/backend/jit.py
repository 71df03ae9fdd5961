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

`jit_uncached` is the same without the disk cache, for functions that take other jitted
functions as arguments (the activation registry's elementwise loops): numba's cache index
pickles such a signature with a weak reference to the function passed, which is dead when
the index is read back by another process, so saving the next specialization can fail with
"underlying object has vanished", and no such entry is ever loaded anyway. Their callers are
cached, with the loop compiled into them, so nothing is lost.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numba
from numba import njit
from numba.core.dispatcher import Dispatcher

from . import locations

# Before any cached function is defined: numba raises at definition when it finds nowhere to
# write its cache, which would make `import dagc` fail without a writable HOME.
_NUMBA_DIR = locations.numba_cache_dir(Path(__file__).resolve().parents[1])
if _NUMBA_DIR is not None and not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = str(_NUMBA_DIR)

jit = njit(cache=True, error_model="numpy", no_cfunc_wrapper=True)
jit_uncached = njit(cache=False, error_model="numpy", no_cfunc_wrapper=True)

_PLAIN: dict[tuple[str, str | None], types.ModuleType] = {}


def without_jit(module: types.ModuleType) -> types.ModuleType:
    """A copy of `module` whose jitted functions run as plain Python, and call plain Python
    versions of each other and of the jitted functions of the modules they use (kernels,
    activations): nothing in it ever compiles (for tests, and for stepping through in a
    debugger). Each module is copied once per process.
    """
    key = (module.__name__, getattr(module, "__file__", None))
    if key not in _PLAIN:
        copy = types.ModuleType(module.__name__, module.__doc__)
        namespace = copy.__dict__
        namespace.update(vars(module))
        for name, value in vars(module).items():
            namespace[name] = _plain_value(value, module.__name__, namespace)
        _PLAIN[key] = copy
    return _PLAIN[key]


def _plain_value(value, owner: str, namespace: dict):
    """`value` as the plain copy of module `owner` (whose globals are `namespace`) sees it."""
    if isinstance(value, Dispatcher):
        function = value.py_func
        if function.__module__ != owner:  # imported: its own module's plain version
            return getattr(without_jit(sys.modules[function.__module__]), function.__name__)
        return types.FunctionType(function.__code__, namespace, function.__name__,
                                  function.__defaults__, function.__closure__)
    if isinstance(value, types.ModuleType) and value.__name__ != owner \
            and any(isinstance(v, Dispatcher) for v in vars(value).values()):
        return without_jit(value)
    return value
