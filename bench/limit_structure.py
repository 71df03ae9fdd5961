"""What the DAG's structure changes in the infinite-width limit (issue 24): the limit NTK of a
chain (mlp3), a DenseNet-style DAG (densenet3) and a ResNet-style one (resnet3), all tanh of
the same depth, on one toy regression task.

    python -m bench.limit_structure

For each: the condition number of K_inf on the training inputs (how fast gradient descent
on the linearized network converges along its slowest direction), and the test error of
kernel regression with K_inf (the prediction of the infinitely wide network trained to
convergence from zero output) on a smooth target. Results: bench/results/limit_structure.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "limit_structure.json"
ARCHS = ("mlp3", "densenet3", "resnet3")
N_TRAIN, N_TEST, N_IN = 256, 512, 16


def sphere(rng, n):
    X = rng.standard_normal((n, N_IN))
    return X * np.sqrt(N_IN) / np.linalg.norm(X, axis=1, keepdims=True)


def target(X):
    """A smooth target: a linear part and a product of two coordinates (degrees 1 and 2)."""
    return X[:, 0] + X[:, 1] * X[:, 2] / 2


def main() -> None:
    import dagc

    rng = np.random.default_rng(0)
    X_train, X_test = sphere(rng, N_TRAIN), sphere(rng, N_TEST)
    y_train, y_test = target(X_train), target(X_test)
    report = {"what": __doc__.split("\n\n")[0], "n_train": N_TRAIN, "n_test": N_TEST,
              "results": {}}
    for arch in ARCHS:
        net = dagc.compile(arch, width=8)  # the limit does not depend on the width compiled
        K = net.ntk_limit(X_train)[..., 0]
        K_test = net.ntk_limit(X_test, X_train)[..., 0]
        eigenvalues = np.linalg.eigvalsh(K)
        prediction = K_test @ np.linalg.solve(K, y_train)
        error = float(np.mean((prediction - y_test) ** 2) / np.mean(y_test ** 2))
        report["results"][arch] = {"condition_number": float(eigenvalues[-1] / eigenvalues[0]),
                                   "lambda_min": float(eigenvalues[0]),
                                   "lambda_max": float(eigenvalues[-1]),
                                   "relative_test_mse": error}
        print(arch, json.dumps(report["results"][arch]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
