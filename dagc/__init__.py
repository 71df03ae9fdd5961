"""dagc: compile neural networks with DAG architectures into fast numba code for the forward
pass, Jacobian, Hessian-vector products and NTK, and measure their transition to linearity.

The Python API: `compile` (an architecture file, bundled name, YAML text, dict or networkx
DiGraph -> `CompiledNet`, whose `to_torch` and `to_jax` export it) and `load_results` (a
results store -> pandas DataFrame). docs/tutorial.md walks through them.
"""

from .errors import DagcError
from .runtime import CompiledNet, compile

__version__ = "0.1.0"
__all__ = ["CompiledNet", "DagcError", "compile", "load_results", "__version__"]


def __getattr__(name: str):
    # load_results pulls in the report code (and pandas): only when asked for
    if name == "load_results":
        from .results import load_results

        return load_results
    raise AttributeError(f"module 'dagc' has no attribute {name!r}")
