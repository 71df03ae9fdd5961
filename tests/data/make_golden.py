"""Golden outputs of every pass and metric of every bundled architecture, from the code as it
is before the restructure (issue 20): the restructure must reproduce them bit for bit."""
import sys

import numpy as np

import dagc
from dagc import measure

out = {}
names = ["bottleneck3", "densenet3", "mlp3", "randdag", "resnet3", "softout", "sparse3"]
for name in names:
    for width in (8, 12):
        net = dagc.compile(name, width=width)
        w = net.init(seed=1)
        rng = np.random.default_rng([width, 7])
        X = rng.standard_normal((3, net.n_in))
        C = rng.standard_normal((3, net.n_out))
        v = rng.standard_normal(net.n_params)
        key = f"{name}/{width}"
        out[f"{key}/forward"] = net.forward(w, X)
        out[f"{key}/jacobian"] = net.jacobian(w, X)
        out[f"{key}/vjp"] = net.vjp(w, X, C)
        F, g = net.mse_gradient(w, X, C)
        out[f"{key}/mse_f"] = F
        out[f"{key}/mse_g"] = g
        for o in range(net.n_out):
            out[f"{key}/hvp{o}"] = net.hvp(w, X[0], v, output=o)
        out[f"{key}/ntk"] = net.ntk(w, X)
        out[f"{key}/ntk12"] = net.ntk(w, X, X[:2])
        H = net.factored_hessian(w, X, np.arange(3) % net.n_out)
        Cc = rng.standard_normal((3, H.size))
        HC, GC = H.apply(Cc)
        out[f"{key}/factored_HC"] = HC
        out[f"{key}/factored_GC"] = GC
        out[f"{key}/hessian_norms"] = measure.hessian_norms(net, w, X)
        if width == 8:
            opts = measure.Options(inputs=2, ball_points=2, directions=2, train_size=4,
                                   max_steps=50)
            for metric in measure.METRICS:
                res = measure.measure(net, metric, 3, opts)
                for k, val in sorted(res.items()):
                    out[f"{key}/metric/{metric}/{k}"] = np.array(val)
        print(key, flush=True)
np.savez_compressed(sys.argv[1], **out)
