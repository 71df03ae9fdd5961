"""Training metrics: how much the neural tangent kernel (NTK) changes while full-batch
gradient descent fits a small regression set (``ntk_change``).

A network in the linear regime trains like its linearization: its NTK stays (nearly)
constant along the path, and lambda_min(K) stays away from 0, which is the PL* condition the
paper's convergence argument needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DagcError
from ..runtime import CompiledNet
from .inputs import regression_set
from .options import Options, check_finite, check_int, check_matrix, check_number, check_vector
from .registry import Metric, register

__all__ = ["ntk_matrix", "train", "TrainResult"]


def ntk_matrix(net: CompiledNet, w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The empirical NTK at the rows of X as one symmetric (n * n_out, n * n_out) matrix:
    entry (i * n_out + a, j * n_out + b) = grad f_a(x_i) . grad f_b(x_j)."""
    K = net.ntk(w, X)
    if net.n_out == 1:
        return K
    n, o = len(X), net.n_out
    return np.ascontiguousarray(K.transpose(0, 2, 1, 3).reshape(n * o, n * o))


@dataclass(frozen=True)
class TrainResult:
    """Outcome of `train`: final weights, step size, steps taken, initial and final loss."""

    w: np.ndarray
    eta: float
    steps: int
    loss0: float
    loss: float


def train(net: CompiledNet, w0: np.ndarray, X: np.ndarray, Y: np.ndarray, loss_drop: float,
          max_steps: int, K0: np.ndarray | None = None) -> TrainResult:
    """Full-batch gradient descent on L(w) = 1/(2n) sum_i ||f(w; x_i) - y_i||^2 from w0, with
    step eta = 1 / lambda_max(K0 / n), until L <= L(w0) / loss_drop or ``max_steps`` steps.

    eta = 1 / lambda_max is the largest step that is monotone for the linearized model (the
    top NTK mode is removed in one step; 2 / lambda_max would be the stability edge), and it
    makes the number of steps independent of width, so widths are compared at equal progress.
    Raises `DagcError` for NaN or inf in w0, X, Y or K0, and if the loss becomes non-finite.
    """
    w0 = check_vector(w0, "w0", net.n_params)
    X = check_matrix(X, "X", net.n_in)
    Y = check_matrix(Y, "Y", net.n_out)
    loss_drop = check_number(loss_drop, "loss_drop", 1.0, strict=True)
    check_int(max_steps, "max_steps", minimum=0)
    n = len(X)
    K0 = ntk_matrix(net, w0, X) if K0 is None else check_finite(K0, "K0")
    eta = _critical_step(K0 / n)
    w = w0.copy()
    grad = np.empty_like(w)
    # Each call gives the loss at w and, in grad, the gradient of the step that leaves w.
    outputs, _ = net.mse_gradient(w, X, Y, out=grad)
    loss0 = loss = 0.5 * float(np.sum((outputs - Y)**2)) / n
    target = loss0 / loss_drop
    steps = 0
    while loss > target and steps < max_steps:
        w -= eta * grad
        outputs, _ = net.mse_gradient(w, X, Y, out=grad)
        loss = 0.5 * float(np.sum((outputs - Y)**2)) / n
        steps += 1
        if not math.isfinite(loss):
            raise DagcError(f"ntk_change: gradient descent diverged at step {steps} "
                            f"(eta = {eta:.3g})")
    return TrainResult(w=w, eta=eta, steps=steps, loss0=loss0, loss=loss)


def _critical_step(K: np.ndarray) -> float:
    """1 / lambda_max(K), or `DagcError` if K has no positive eigenvalue."""
    lam_max = float(np.linalg.eigvalsh(check_finite(K, "K0"))[-1])
    if not lam_max > 0.0:
        raise DagcError(f"ntk_change: the NTK at w0 has no positive eigenvalue ({lam_max!r})")
    return 1.0 / lam_max


# --------------------------------------------------------------------------------------------
# The metric


def _measure_ntk_change(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    w0 = net.init(seed)
    X, Y = regression_set(net, seed, options.train_size)
    K0 = ntk_matrix(net, w0, X)
    result = train(net, w0, X, Y, options.loss_drop, options.max_steps, K0=K0)
    KT = ntk_matrix(net, result.w, X)
    # The PL* argument of the paper needs lambda_min(K) to stay away from 0 during training;
    # its relative change is the quantity that matters, reported beside the Frobenius change.
    min0 = float(np.linalg.eigvalsh(K0)[0])
    minT = float(np.linalg.eigvalsh(KT)[0])
    if min0 == 0.0:
        raise DagcError("ntk_change: lambda_min(K0) = 0 (repeated training points?): the "
                        "relative change of lambda_min is undefined")
    return {
        "value": float(np.linalg.norm(KT - K0) / np.linalg.norm(K0)),
        "weight_change": float(np.linalg.norm(result.w - w0)),
        "steps": float(result.steps),
        "loss_ratio": result.loss / result.loss0 if result.loss0 > 0.0 else 0.0,
        "converged": float(result.loss <= result.loss0 / options.loss_drop),
        "min_eig_change": abs(minT - min0) / abs(min0),
        "eta": result.eta,
    }


register(Metric(
    name="ntk_change",
    function=_measure_ntk_change,
    reads=("train_size", "loss_drop", "max_steps"),
    definition="||K_T - K_0||_F / ||K_0||_F, the relative change of the empirical NTK on "
               "train_size points after full-batch gradient descent (step 1 / lambda_max(K_0 "
               "/ n)) until the loss falls by loss_drop or max_steps steps",
    label="||K_T - K_0||_F / ||K_0||_F",
    expected_slope=-1.0,
    slope_reason="In the lazy regime the weights travel O(1) (weight_change does not decay) "
                 "and each step changes K by the curvature along the gradient, a sum of "
                 "random-sign terms of order 1/m (see linearization), not the worst-case "
                 "Hessian norm m^-1/2.",
    fields={"value": "||K_T - K_0||_F / ||K_0||_F",
            "weight_change": "||w_T - w_0||, the distance travelled",
            "steps": "gradient-descent steps taken",
            "loss_ratio": "L(w_T) / L(w_0)",
            "converged": "1.0 when the loss fell by loss_drop, else 0.0",
            "min_eig_change": "|lambda_min(K_T) - lambda_min(K_0)| / lambda_min(K_0)",
            "eta": "the step size 1 / lambda_max(K_0 / n)"},
))
