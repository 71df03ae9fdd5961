"""Training metrics: gradient descent run to convergence as the paper's Section 4 uses it.

``ntk_change`` follows the empirical NTK along the path (its largest relative change and the
PL* ratio min_t lambda_min(K_t) / lambda_min(K_0)); ``lin_gap`` trains the network and its
linearization side by side and measures how far apart their outputs get on held-out points.
Both record the step size, the distance travelled, the loss curve and the regime (lazy,
catapult, divergent): a network in the linear regime trains like its linearization, its NTK
stays nearly constant and lambda_min(K) stays away from 0 (the PL* condition).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import DagcError
from ..runtime import CompiledNet
from .inputs import generator, heldout_inputs, regression_set
from .options import Options, check_finite, check_int, check_matrix, check_number, check_vector
from .registry import Metric, register

__all__ = ["ntk_matrix", "train", "TrainResult", "step_size", "critical_step", "regime",
           "REGIMES", "KernelPath", "LinearizedModel", "sampled_step", "travel_distance"]

# A loss above this multiple of its start is divergence: training stops there, while the
# weights are still finite, so the cell still reports where it went.
DIVERGENCE = 1e6
# The regime codes a cell stores (fields are numbers).
LAZY, CATAPULT, DIVERGENT = 0.0, 1.0, 2.0
REGIMES = {LAZY: "lazy", CATAPULT: "catapult", DIVERGENT: "divergent"}


def ntk_matrix(net: CompiledNet, w: np.ndarray, X: np.ndarray,
               X2: np.ndarray | None = None) -> np.ndarray:
    """The empirical NTK between the rows of X and of X2 (default X) as one (n * n_out,
    n2 * n_out) matrix: entry (i * n_out + a, j * n_out + b) = grad f_a(x_i) . grad f_b(x2_j)."""
    K = net.ntk(w, X) if X2 is None else net.ntk(w, X, X2)
    if net.n_out == 1:
        return K
    n1, n2, o = K.shape[0], K.shape[1], net.n_out
    return np.ascontiguousarray(K.transpose(0, 2, 1, 3).reshape(n1 * o, n2 * o))


def critical_step(K0: np.ndarray, n: int) -> float:
    """2n / lambda_max(K0): the largest stable step of gradient descent on the linearized
    model's mean-squared loss 1/(2n) sum_i ||f(x_i) - y_i||^2 (its top NTK mode is multiplied
    by 1 - eta lambda_max / n each step). `DagcError` if K0 has no positive eigenvalue."""
    return 2.0 / _top_eigenvalue(K0 / n)


def step_size(net: CompiledNet, options: Options, K0: np.ndarray, n: int) -> float:
    """The step of `options`: ``lr`` times d^(2p-1) when ``lr`` > 0 (d: the smallest in-degree
    of an output neuron, p: the file's ``output_scale``, so that the function moves by O(1)
    under either output scaling), else ``lr_factor`` times `critical_step` (which scales like
    d^(2p-1) by itself, since K0 does like d^(1-2p))."""
    if options.lr > 0.0:
        d = min(int(b.in_degree.min()) for b in net.ir.outputs)
        return options.lr * float(d) ** (2.0 * net.ir.spec.output_scale - 1.0)
    # 2c / lambda_max(K0 / n) is, for c = 1/2, the 1 / lambda_max(K0 / n) of every stored
    # ntk_change result, bit for bit.
    return 2.0 * options.lr_factor / _top_eigenvalue(K0 / n)


def _top_eigenvalue(K: np.ndarray) -> float:
    lam_max = float(np.linalg.eigvalsh(check_finite(K, "K0"))[-1])
    if not lam_max > 0.0:
        raise DagcError(f"training: the NTK at w0 has no positive eigenvalue ({lam_max!r})")
    return lam_max


def sampled_step(step: int) -> bool:
    """Whether the NTK along the path is measured after ``step`` steps: at 1, 2, 4, 8, ...
    (and, by `KernelPath.finish`, at the last step): log2(T) kernels for T steps, dense early,
    where a catapult moves the kernel."""
    return step >= 1 and step & (step - 1) == 0


@dataclass(frozen=True)
class TrainResult:
    """Outcome of `train`: final weights, step size, steps taken, initial and final
    full-batch loss, the loss after every step (``losses[0]`` = loss0) and whether it blew
    up (the loss exceeded `DIVERGENCE` times loss0 or became non-finite; ``w`` is then the
    last finite point)."""

    w: np.ndarray
    eta: float
    steps: int
    loss0: float
    loss: float
    losses: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    diverged: bool = False


StepHook = Callable[[int, np.ndarray, np.ndarray | None], None]


def train(net: CompiledNet, w0: np.ndarray, X: np.ndarray, Y: np.ndarray, loss_drop: float,
          max_steps: int, K0: np.ndarray | None = None, eta: float | None = None,
          batch_size: int = 0, rng: np.random.Generator | None = None,
          on_step: StepHook | None = None) -> TrainResult:
    """Gradient descent on L(w) = 1/(2n) sum_i ||f(w; x_i) - y_i||^2 from w0 until L <= L(w0)
    / ``loss_drop``, ``max_steps`` steps, or divergence.

    ``eta`` defaults to half the critical step, 1 / lambda_max(K0 / n) (K0 computed if not
    given): the largest step that is monotone for the linearized model. With ``batch_size``
    b > 0, each step is SGD on b samples drawn without replacement from ``rng`` (the loss
    checked for stopping stays the full-batch one). ``on_step(t, w_t, batch)`` is called after
    every step with the batch's indices (None for full batch). Raises `DagcError` for NaN or
    inf in w0, X, Y or K0.
    """
    w0 = check_vector(w0, "w0", net.n_params)
    X = check_matrix(X, "X", net.n_in)
    Y = check_matrix(Y, "Y", net.n_out)
    loss_drop = check_number(loss_drop, "loss_drop", 1.0, strict=True)
    check_int(max_steps, "max_steps", minimum=0)
    check_int(batch_size, "batch_size", minimum=0)
    n = len(X)
    if batch_size > n:
        raise DagcError(f"batch_size: {batch_size} is more than the {n} training points")
    if eta is None:
        K0 = ntk_matrix(net, w0, X) if K0 is None else check_finite(K0, "K0")
        eta = critical_step(K0, n) / 2.0
    if batch_size and rng is None:
        raise DagcError("rng: SGD (batch_size > 0) needs a random generator for its batches")
    w = w0.copy()
    grad, previous = np.empty_like(w), np.empty_like(w)
    batch = _batch(rng, n, batch_size)
    loss0 = loss = _loss_and_gradient(net, w, X, Y, batch, grad)
    losses = [loss0]
    target = loss0 / loss_drop
    steps, diverged = 0, False
    while loss > target and steps < max_steps:
        w -= eta * grad
        grad, previous = previous, grad
        used, batch = batch, _batch(rng, n, batch_size)
        loss = _loss_and_gradient(net, w, X, Y, batch, grad)
        steps += 1
        if not math.isfinite(loss):  # step back to the last finite point
            w += eta * previous
            steps, loss, diverged = steps - 1, losses[-1], True
            break
        losses.append(loss)
        if on_step is not None:
            on_step(steps, w, used)
        if loss > DIVERGENCE * loss0:
            diverged = True
            break
    return TrainResult(w=w, eta=eta, steps=steps, loss0=loss0, loss=loss,
                       losses=np.array(losses), diverged=diverged)


def _batch(rng: np.random.Generator | None, n: int, size: int) -> np.ndarray | None:
    """The sample indices of the next SGD step, sorted; None for full-batch descent."""
    return None if not size else np.sort(rng.choice(n, size, replace=False))


def _loss_and_gradient(net: CompiledNet, w: np.ndarray, X: np.ndarray, Y: np.ndarray,
                       batch: np.ndarray | None, grad: np.ndarray) -> float:
    """The full-batch loss at w; writes into ``grad`` the gradient of the step that leaves w
    (full batch, or the mean over ``batch``)."""
    if batch is None:
        outputs, _ = net.mse_gradient(w, X, Y, out=grad)
    else:
        net.mse_gradient(w, X[batch], Y[batch], out=grad)
        outputs = net.forward(w, X)
    return 0.5 * float(np.sum((outputs - Y)**2)) / len(X)


def regime(result: TrainResult, edge_start: float, edge_end: float) -> float:
    """LAZY, CATAPULT or DIVERGENT from the loss curve and the kernel at both ends, where
    edge = eta lambda_max(K) / (2n) (above 1 the step is unstable for that kernel):

    - divergent: the loss blew up, or the final kernel is unstable for the step (the loss
      would grow again), or after training it is above its start;
    - catapult: otherwise, if the loss rose above its start at some step or the step was
      unstable for K0 (training converged only because lambda_max(K) fell: the catapult);
    - lazy: otherwise (the loss never rose and the step was stable throughout).
    """
    losses = result.losses
    if result.diverged or edge_end > 1.0 or (result.steps and losses[-1] > losses[0]):
        return DIVERGENT
    if losses.max() > losses[0] or edge_start > 1.0:
        return CATAPULT
    return LAZY


class KernelPath:
    """The NTK on the training points along a path, at `sampled_step` steps: its largest
    relative change ||K_t - K_0||_F / ||K_0||_F, the PL* ratio min_t lambda_min(K_t) /
    lambda_min(K_0) and the kernel's spectrum at the last observed point."""

    def __init__(self, net: CompiledNet, X: np.ndarray, K0: np.ndarray):
        self.net, self.X, self.K0 = net, X, K0
        eigenvalues = np.linalg.eigvalsh(K0)
        self.min0, self.max0 = float(eigenvalues[0]), float(eigenvalues[-1])
        if self.min0 == 0.0:
            raise DagcError("ntk_change: lambda_min(K0) = 0 (repeated training points?): the "
                            "relative change of lambda_min is undefined")
        self.norm0 = np.linalg.norm(K0)
        self.max_change, self.pl_ratio = 0.0, 1.0
        self.last_step = 0
        self.change = 0.0
        self.min_end, self.max_end = self.min0, self.max0

    def on_step(self, step: int, w: np.ndarray, _batch: np.ndarray | None = None) -> None:
        """A `train` hook: observe the kernel at the sampled steps."""
        if sampled_step(step):
            self.observe(step, w)

    def finish(self, result: TrainResult) -> None:
        """Observe the path's end, unless it was just sampled."""
        if result.steps != self.last_step:
            self.observe(result.steps, result.w)

    def observe(self, step: int, w: np.ndarray) -> None:
        K = ntk_matrix(self.net, w, self.X)
        self.change = float(np.linalg.norm(K - self.K0) / self.norm0)
        eigenvalues = np.linalg.eigvalsh(K)
        self.min_end, self.max_end = float(eigenvalues[0]), float(eigenvalues[-1])
        self.max_change = max(self.max_change, self.change)
        self.pl_ratio = min(self.pl_ratio, self.min_end / self.min0)
        self.last_step = step


class LinearizedModel:
    """f_lin(w) = f(w0) + J(w0)(w - w0), trained with the network's steps, on the training
    points and on held-out points at once.

    A gradient step on f_lin moves its outputs at any points x by -(eta / b) K0(x, X_B)
    (f_lin(X_B) - Y_B), with B the step's batch (every point for full-batch descent): the
    linear model needs only the NTK at w0 between all points and the training points
    (``net.ntk(w0, X_all, X)``, never the Jacobian J). `on_step` compares it with the
    network on the held-out points after every step.
    """

    def __init__(self, net: CompiledNet, w0: np.ndarray, X_all: np.ndarray, Y: np.ndarray,
                 K0: np.ndarray, eta: float):
        """X_all: the training points, then the held-out ones; Y: the training targets;
        K0: `ntk_matrix` (net, w0, X_all, X) with X the training points."""
        self.net, self.eta = net, eta
        self.n_train = Y.size  # flattened rows (point, output) of the training points
        self.X_heldout = X_all[len(Y):]
        self.K0 = K0
        self.outputs = net.forward(w0, X_all).reshape(-1)
        self.targets = Y.reshape(-1)
        self.scale = math.sqrt(float(np.mean(Y**2))) or 1.0
        self.gap = self.gap_end = 0.0

    def on_step(self, step: int, w: np.ndarray, batch: np.ndarray | None) -> None:
        """A `train` hook: take the step that took the network to w, then compare."""
        columns = slice(None) if batch is None else \
            (batch[:, None] * self.net.n_out + np.arange(self.net.n_out)).reshape(-1)
        residual = self.outputs[:self.n_train][columns] - self.targets[columns]
        rows = self.n_train // self.net.n_out if batch is None else len(batch)
        self.outputs -= (self.eta / rows) * (self.K0[:, columns] @ residual)
        network = self.net.forward(w, self.X_heldout).reshape(-1)
        difference = network - self.outputs[self.n_train:]
        # root mean square over held-out points of the output distance, in target units
        self.gap_end = math.sqrt(float(np.sum(difference**2)) / len(self.X_heldout)) \
            / self.scale
        self.gap = max(self.gap, self.gap_end)

    def loss(self) -> float:
        """The linearized model's training loss now."""
        residual = self.outputs[:self.n_train] - self.targets
        return 0.5 * float(np.sum(residual**2)) / (self.n_train // self.net.n_out)


# --------------------------------------------------------------------------------------------
# The metrics


def _train_size(net: CompiledNet, options: Options) -> int:
    return options.train_size or 2 * net.n_in


def _training_fields(options: Options, result: TrainResult, w0: np.ndarray, n: int,
                     lam_max0: float, lam_max_end: float) -> dict:
    """What both training metrics record about the run itself."""
    edge_start = result.eta * lam_max0 / (2 * n)
    edge_end = result.eta * lam_max_end / (2 * n)
    return {
        "weight_change": float(np.linalg.norm(result.w - w0)),
        "steps": float(result.steps),
        "loss_ratio": result.loss / result.loss0 if result.loss0 > 0.0 else 0.0,
        "converged": float(result.loss <= result.loss0 / options.loss_drop),
        "eta": result.eta,
        "loss": result.loss,
        "loss_peak": float(result.losses.max() / result.loss0) if result.loss0 > 0.0 else 0.0,
        "edge_start": edge_start,
        "edge_end": edge_end,
        "regime": regime(result, edge_start, edge_end),
        "loss_curve": [float(x) for x in result.losses],
        "train_points": float(n),
    }


def _run(net: CompiledNet, seed: int, options: Options, w0: np.ndarray, X: np.ndarray,
         Y: np.ndarray, eta: float, hook: StepHook | None) -> TrainResult:
    rng = generator(seed, "sgd_batches") if options.batch_size else None
    return train(net, w0, X, Y, options.loss_drop, options.max_steps, eta=eta,
                 batch_size=options.batch_size, rng=rng, on_step=hook)


def travel_distance(net: CompiledNet, seed: int, options: Options) -> float:
    """||w_T - w_0||: how far ntk_change's training under ``options`` moves the weights from
    w_0 = net.init(seed) (its field weight_change, bit for bit, without the kernels along the
    path); the radius ``travel`` of hessian_ball and linearization."""
    w0 = net.init(seed)
    X, Y = regression_set(net, seed, _train_size(net, options), options.targets)
    K0 = ntk_matrix(net, w0, X)
    result = _run(net, seed, options, w0, X, Y, step_size(net, options, K0, len(X)), None)
    return float(np.linalg.norm(result.w - w0))


def _measure_ntk_change(net: CompiledNet, seed: int, options: Options) -> dict:
    w0 = net.init(seed)
    X, Y = regression_set(net, seed, _train_size(net, options), options.targets)
    K0 = ntk_matrix(net, w0, X)
    path = KernelPath(net, X, K0)
    result = _run(net, seed, options, w0, X, Y, step_size(net, options, K0, len(X)),
                  path.on_step)
    path.finish(result)
    return {
        "value": path.max_change,
        "ntk_change_end": path.change,
        "pl_ratio": path.pl_ratio,
        "min_eig_change": abs(path.min_end - path.min0) / abs(path.min0),
        "lambda_max_ratio": path.max_end / path.max0,
        **_training_fields(options, result, w0, len(X), path.max0, path.max_end),
    }


def _measure_lin_gap(net: CompiledNet, seed: int, options: Options) -> dict:
    w0 = net.init(seed)
    n = _train_size(net, options)
    X, Y = regression_set(net, seed, n, options.targets)
    X_all = np.concatenate([X, heldout_inputs(net, seed, n)])
    K0_all = ntk_matrix(net, w0, X_all, X)
    K0 = np.ascontiguousarray(K0_all[:Y.size])
    eta = step_size(net, options, K0, n)
    linear = LinearizedModel(net, w0, X_all, Y, K0_all, eta)
    result = _run(net, seed, options, w0, X, Y, eta, linear.on_step)
    lam_max_end = float(np.linalg.eigvalsh(ntk_matrix(net, result.w, X))[-1])
    return {
        "value": linear.gap,
        "gap_end": linear.gap_end,
        "lin_loss": linear.loss(),
        **_training_fields(options, result, w0, n, _top_eigenvalue(K0), lam_max_end),
    }


_TRAINING_READS = ("train_size", "targets", "loss_drop", "max_steps", "lr_factor", "lr",
                   "batch_size")

_TRAINING_FIELDS = {
    "weight_change": "||w_T - w_0||, the distance travelled",
    "steps": "gradient-descent steps taken (T)",
    "loss_ratio": "L(w_T) / L(w_0)",
    "converged": "1.0 when the loss fell by loss_drop, else 0.0",
    "eta": "the step size: lr_factor * 2n / lambda_max(K_0), or lr * d^(2p-1)",
    "loss": "L(w_T), the final training loss",
    "loss_peak": "max_t L(w_t) / L(w_0): above 1 when the loss spiked (catapult)",
    "edge_start": "eta lambda_max(K_0) / (2n): above 1 the step is unstable at w_0 "
                  "(equals lr_factor)",
    "edge_end": "eta lambda_max(K_T) / (2n), the same at the end of training",
    "regime": "0 lazy, 1 catapult, 2 divergent: divergent if the loss blew up (above 1e6 L_0 "
              "or non-finite), edge_end > 1 or L_T > L_0; else catapult if loss_peak > 1 or "
              "edge_start > 1; else lazy",
    "loss_curve": "[L(w_0), L(w_1), ..., L(w_T)], the full-batch loss after every step "
                  "(a list, kept in the store's extras for plotting)",
    "train_points": "n, the training points used (train_size, or 2 n_in when it is 0)",
}

_TRAINING_SETUP = (
    "on train_size points (default 2 n_in) with targets from a teacher or random signs, "
    "gradient descent (SGD with batch_size) from w_0 at step lr_factor * 2n / lambda_max(K_0) "
    "until the loss falls by loss_drop or max_steps steps")

register(Metric(
    name="ntk_change",
    function=_measure_ntk_change,
    reads=_TRAINING_READS,
    definition="max_t ||K_t - K_0||_F / ||K_0||_F, the largest relative change of the "
               "empirical NTK on the training points along the path of training, sampled "
               "after steps 1, 2, 4, 8, ... and the last; training: " + _TRAINING_SETUP,
    label="max_t ||K_t - K_0||_F / ||K_0||_F",
    expected_slope=-1.0,
    slope_reason="In the lazy regime (lr_factor < 1) the weights travel O(1) (weight_change "
                 "does not decay) and each step changes K by the curvature along the "
                 "gradient, a sum of random-sign terms of order 1/m (see linearization), not "
                 "the worst-case Hessian norm m^-1/2. Controls that must not decay (slope 0): "
                 "the catapult (1 < lr_factor < 2: lambda_max(K) falls by a width-independent "
                 "fraction) and a mean-field output (output_scale: 1 in the file: the kernel "
                 "moves by O(1) relative to itself). Use a one-hidden-layer network for the "
                 "mean-field control: deeper ones under one step size for every layer "
                 "diverge (their hidden layers would need muP's per-layer steps).",
    fields={"value": "max_t ||K_t - K_0||_F / ||K_0||_F over the sampled steps",
            "ntk_change_end": "||K_T - K_0||_F / ||K_0||_F at the end of training",
            "pl_ratio": "min_t lambda_min(K_t) / lambda_min(K_0) over the sampled steps: the "
                        "PL* quantity (near 1 in the lazy regime)",
            "min_eig_change": "|lambda_min(K_T) - lambda_min(K_0)| / lambda_min(K_0)",
            "lambda_max_ratio": "lambda_max(K_T) / lambda_max(K_0) (below 1 after a catapult)",
            **_TRAINING_FIELDS},
))

register(Metric(
    name="lin_gap",
    function=_measure_lin_gap,
    reads=_TRAINING_READS,
    definition="max_t rms_x* ||f(w_t; x*) - f_lin(w_t^lin; x*)|| / rms(Y): the largest "
               "distance over the path between the network and its linearization at w_0, "
               "trained side by side with the same steps, on train_size held-out points x*, "
               "relative to the targets' root mean square; training: " + _TRAINING_SETUP,
    label="max_t |f - f_lin| / rms(y) (held out)",
    expected_slope=-1.0,
    slope_reason="The gap accumulates the network's curvature along the path: O(1) distance "
                 "travelled times the 1/m curvature along the gradient (as ntk_change). "
                 "Controls that must not decay: a mean-field output (output_scale: 1), where "
                 "training leaves the linear model behind, and the catapult (1 < lr_factor < "
                 "2), where the linearized model itself diverges (its top mode grows by |1 - "
                 "2 lr_factor| per step: its kernel never falls) while the network converges, "
                 "so the gap grows with the steps taken.",
    fields={"value": "max_t rms over held-out x* of ||f(w_t; x*) - f_lin(x*)|| / rms(Y)",
            "gap_end": "the same distance at the end of training",
            "lin_loss": "the linearized model's training loss after the same steps",
            **_TRAINING_FIELDS},
))
