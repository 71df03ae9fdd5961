"""The wheel (docs/design.md): built from the source tree, installed into a fresh virtual
environment, it compiles and runs architectures on its own (templates and bundled
architectures inside the package, console script `dagc`), never touching the source tree.

Building needs hatchling: from the local installation when there is one, else pip fetches it
from PyPI. Set DAGC_OFFLINE=1 to skip this test without network access.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import INLINE

import dagc

ROOT = Path(__file__).resolve().parent.parent
HAVE_HATCHLING = importlib.util.find_spec("hatchling") is not None

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DAGC_OFFLINE")) and not HAVE_HATCHLING,
    reason="DAGC_OFFLINE is set and building the wheel needs hatchling from PyPI")

# Runs inside the venv, from a directory outside the source tree; prints what it found.
PROBE = textwrap.dedent("""\
    import json, sys
    import numpy as np
    import dagc
    from dagc.backend import render as codegen
    from dagc.frontend import spec

    user_file, = sys.argv[1:]
    tiny = dagc.compile(user_file)
    w = tiny.init(seed=3)
    X = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    mlp = dagc.compile("mlp3", width=8)
    w_mlp = mlp.init(seed=1)
    X_mlp = np.linspace(-1.0, 1.0, 32).reshape(2, 16)
    print(json.dumps({
        "files": sorted({m.__file__ for name, m in sys.modules.items()
                         if name == "dagc" or name.startswith("dagc.")}),
        "templates": str(codegen.templates_dir()),
        "bundled": str(spec.BUNDLED_DIR),
        "bundled_names": spec.bundled_names(),
        "tiny_module": tiny.module.__file__,
        "tiny_jitted": hasattr(tiny.module.forward, "py_func"),
        "w": w.tolist(), "X": X.tolist(), "Y": tiny.forward(w, X).tolist(),
        "mlp_module": mlp.module.__file__,
        "mlp_Y": mlp.forward(w_mlp, X_mlp).tolist(),
    }))
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)]
    if HAVE_HATCHLING:
        command.insert(4, "--no-isolation")
    build = subprocess.run(command, capture_output=True, text=True, timeout=600,
                           cwd=tmp_path_factory.mktemp("build-cwd"))
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    wheels = list(out.glob("dagc-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv that sees numpy/numba from this interpreter but gets dagc from the wheel."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=300)
    python = root / "bin" / "python"
    # This interpreter's site directories (a venv's or the system's, wherever the tests run)
    # go on the new venv's path after its own. Listed in a .pth file they are plain path
    # entries, so their own .pth files, among them the checkout's editable install, do not run.
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([str(python), "-c", where], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()
    inherited = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    Path(purelib, "inherited.pth").write_text("\n".join(inherited) + "\n")
    # This interpreter's pip runs inside the venv and installs into it; --force-reinstall
    # so that pip does not count the checkout's editable install as dagc already there.
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                              "--force-reinstall", "--quiet", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return root


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "dagc" / "backend" / "templates").glob("*.j2")}
    assert templates and {f"dagc/backend/templates/{t}" for t in templates} <= names
    bundled = {p.name for p in (ROOT / "dagc" / "architectures").glob("*.yaml")}
    assert bundled and {f"dagc/architectures/{a}" for a in bundled} <= names
    assert {"dagc/__init__.py", "dagc/__main__.py", "dagc/cli/__init__.py",
            "dagc/backend/render.py", "dagc/backend/kernels.py", "dagc/backend/cache.py",
            "dagc/ops/activations.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "generated/", "bench/"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names
                                                if n.endswith("entry_points.txt"))).decode()
    assert re.search(r"^dagc = dagc\.cli:main$", metadata, re.M)


def test_installed_wheel_compiles_and_runs(venv, tmp_path):
    """From a directory outside the source tree: a user's YAML file and a bundled name."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    user_file = work / "tiny.yaml"
    user_file.write_text(INLINE["tiny"])
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["DAGC_CACHE_DIR"] = str(cache)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE, str(user_file)],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.splitlines()[-1])

    site = venv / "lib"
    for path in found["files"] + [found["templates"], found["bundled"]]:
        assert Path(path).is_relative_to(site), f"{path} is not from the wheel"
        assert not Path(path).is_relative_to(ROOT)
    assert Path(found["templates"]).name == "templates"
    assert found["bundled_names"] == dagc.frontend.spec.bundled_names()
    for module in (found["tiny_module"], found["mlp_module"]):
        assert Path(module).parent == cache / "generated"
    assert found["tiny_jitted"]

    # tiny: y = (1/2) W2 tanh(W1 x / sqrt(3)), W1 (4, 3) then W2 (1, 4) in the flat vector
    w, X = np.array(found["w"]), np.array(found["X"])
    W1, W2 = w[:12].reshape(4, 3), w[12:16].reshape(1, 4)
    expected = np.tanh(X @ W1.T / np.sqrt(3)) @ W2.T / 2
    np.testing.assert_allclose(found["Y"], expected, rtol=1e-12, atol=1e-14)

    # mlp3 by name: the same numbers as the source tree gives
    mlp = dagc.compile("mlp3", width=8, directory=tmp_path / "src-gen", jit=False)
    X_mlp = np.linspace(-1.0, 1.0, 32).reshape(2, 16)
    np.testing.assert_allclose(found["mlp_Y"], mlp.forward(mlp.init(seed=1), X_mlp),
                               rtol=1e-12, atol=1e-14)


def test_installed_console_script(venv, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["DAGC_CACHE_DIR"] = str(tmp_path / "cache")
    script = venv / "bin" / "dagc"
    inspect = subprocess.run([str(script), "inspect", "densenet3", "--width", "64"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert inspect.returncode == 0, inspect.stderr
    assert "width m = 80" in inspect.stdout and str(venv) in inspect.stdout  # bundled file
    compiled = subprocess.run([str(script), "compile", "sparse3", "-o", str(tmp_path / "out")],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
    assert compiled.returncode == 0, compiled.stderr
    assert Path(compiled.stdout.strip()).parent == tmp_path / "out"
    bad = subprocess.run([str(script), "inspect", "mlp3", "--width", "0"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("dagc: error: ")
