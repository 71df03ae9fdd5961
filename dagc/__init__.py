"""dagc: compile neural networks with DAG architectures into fast numba code for the forward
pass, Jacobian, Hessian-vector products and NTK, and measure their transition to linearity."""

from .errors import DagcError
from .runtime import CompiledNet, compile

__version__ = "0.1.0"
__all__ = ["CompiledNet", "DagcError", "compile", "__version__"]
