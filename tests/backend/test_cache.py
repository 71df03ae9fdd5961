"""The module cache: names cover the shared sources, damaged files are rewritten and never
imported, and nothing compiles on import or with jit=False."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import arch_path

import dagc
from dagc import DagcError
from dagc.backend import cache, locations
from dagc.frontend import spec
from dagc.ir import graph


@pytest.fixture
def ir():
    return graph.build(spec.load(arch_path("tiny")))


def _dagc_imports(path: Path) -> set[Path]:
    """The dagc source files a module imports, directly or through other dagc modules."""
    package = Path(dagc.__file__).parent
    found, todo = set(), [path]
    while todo:
        here = todo.pop()
        for node in ast.walk(ast.parse(here.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:  # relative: from the importing module's package
                base = here.parent.joinpath(*[".."] * (node.level - 1)).resolve()
                parts = (node.module or "").split(".") if node.module else []
            elif (node.module or "").split(".")[0] == "dagc":
                base, parts = package, node.module.split(".")[1:]
            else:
                continue
            for name in [*(a.name for a in node.names), None]:
                target = base.joinpath(*parts, name) if name else base.joinpath(*parts)
                file = target.with_suffix(".py")
                if file.is_file() and file not in found:
                    found.add(file)
                    todo.append(file)
    return found


def test_the_name_covers_every_shared_source(ir, tmp_path, monkeypatch):
    """Every dagc file whose compiled code a generated module can inline (it imports it and
    it defines jitted functions) is in the name's digest."""
    source = cache.write_module(ir, tmp_path)
    imported = {p.resolve() for p in _dagc_imports(source) if "@jit" in p.read_text()}
    assert imported and imported <= {p.resolve() for p in cache.DEPENDENCIES}
    assert all(p.is_file() for p in cache.DEPENDENCIES)
    before = cache.write_module(ir, tmp_path)
    monkeypatch.setattr(cache, "dependencies_digest", lambda: "a changed kernel")
    after = cache.write_module(ir, tmp_path)
    assert after != before and after.read_text() == before.read_text()
    assert after.stem.startswith("tiny_")


@pytest.mark.parametrize("damage", ["empty", "truncated", "modified"])
def test_a_damaged_module_is_rewritten_not_imported(ir, tmp_path, damage):
    path = cache.write_module(ir, tmp_path)
    good = path.read_text()
    bad = {"empty": "", "truncated": good[:len(good) // 2],
           "modified": good.replace("return a_out", "return a_out * 2")}[damage]
    assert bad != good
    path.write_text(bad)
    with pytest.raises(DagcError, match=r"does not match the hash in its name"):
        cache.load_module(path)
    assert cache.write_module(ir, tmp_path) == path
    assert path.read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_an_intact_module_is_never_rewritten(ir, tmp_path):
    path = cache.write_module(ir, tmp_path)
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    cache.write_module(ir, tmp_path)
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp


def test_a_module_runs_from_the_verified_text(tmp_path):
    net = dagc.compile(arch_path("tiny"), directory=tmp_path, jit=False)
    assert Path(net.module.__file__) == next(tmp_path.glob("tiny_*.py"))
    w, X = net.init(3), np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    W1, W2 = w[:12].reshape(4, 3), w[12:16].reshape(1, 4)
    np.testing.assert_allclose(net.forward(w, X), np.tanh(X @ W1.T / np.sqrt(3)) @ W2.T / 2,
                               rtol=1e-14)


NOTHING_COMPILED = """\
import sys
from numba.core.dispatcher import Dispatcher
compiled = [f"{m.__name__}.{n}" for m in list(sys.modules.values())
            for n, v in list(vars(m).items()) if isinstance(v, Dispatcher) and v.signatures]
assert not compiled, compiled
"""


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAGC_CACHE_DIR=str(tmp_path / "cache"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)


def test_importing_dagc_compiles_nothing(tmp_path):
    code = ("import dagc, dagc.cli, dagc.backend.kernels, dagc.ops.activations, dagc.measure\n"
            + NOTHING_COMPILED)
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "numba").exists() or not any((tmp_path / "numba").rglob("*.nbc"))


def test_jit_false_runs_every_pass_without_compiling(tmp_path):
    code = f"""\
import numpy as np, dagc
net = dagc.compile({str(arch_path("kitchen_sink"))!r}, width=4, jit=False)
w = net.init(0)
X = np.random.default_rng(0).standard_normal((2, net.n_in))
net.forward(w, X); net.jacobian(w, X); net.vjp(w, X, np.ones((2, net.n_out)))
net.hvp(w, X[0], w, output=1); net.ntk(w, X)
net.factored_hessian(w, X).apply(np.ones((2, net.factored_hessian(w, X).size)))
""" + NOTHING_COMPILED
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


# --- where the cache lives: private, writable, or a private temporary directory -------------

def test_help_and_import_need_no_home_and_compile_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DAGC_CACHE_DIR", "NUMBA_CACHE_DIR")}
    env["HOME"] = "/nonexistent"
    code = "import runpy, sys\nsys.argv = ['dagc', '--help']\nrunpy.run_module('dagc')\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: dagc" in done.stdout and done.stderr == ""
    done = subprocess.run([sys.executable, "-c", "import dagc\n" + NOTHING_COMPILED], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    assert not Path("/nonexistent").exists()


def test_an_unwritable_cache_falls_back_to_a_private_temporary_one(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, HOME="/nonexistent", TMPDIR=str(tmp_path / "tmp"),
               DAGC_CACHE_DIR=str(tmp_path / "a_file" / "cache"))  # cannot be created
    code = (f"import dagc\nfor _ in range(2):\n"
            f"    net = dagc.compile({str(arch_path('tiny'))!r}, jit=False)\n"
            "print(net.module.__file__)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    fallback = tmp_path / "tmp" / f"dagc-{os.geteuid()}"
    assert Path(done.stdout.strip()).parent == fallback / "generated"
    assert done.stderr.count("dagc: the cache directory") == 1, done.stderr
    assert "a_file/cache/generated cannot be created" in done.stderr
    assert fallback.stat().st_mode & 0o777 == 0o700


@pytest.fixture
def configured(tmp_path, monkeypatch):
    """A cache directory of the test's own and a fresh temporary directory."""
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    locations._usable.cache_clear()
    yield tmp_path / "cache"
    locations._usable.cache_clear()


def test_a_cache_writable_by_others_is_refused(configured, tmp_path):
    (configured / "generated").mkdir(parents=True)
    (configured / "generated").chmod(0o777)
    with pytest.warns(UserWarning, match=r"generated is writable by other users; using "):
        directory = cache.cache_dir()
    assert directory == tmp_path / "tmp" / f"dagc-{os.geteuid()}" / "generated"
    (configured / "generated").chmod(0o700)
    locations._usable.cache_clear()
    assert cache.cache_dir() == configured / "generated"


def test_a_taken_temporary_name_gives_a_fresh_private_directory(configured, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "tmp" / f"dagc-{os.geteuid()}").symlink_to(tmp_path / "elsewhere")
    fallback = locations.private_temp_dir()
    assert fallback.parent == tmp_path / "tmp" and fallback.name != f"dagc-{os.geteuid()}"
    assert fallback.stat().st_mode & 0o777 == 0o700


def test_numba_gets_the_cache_when_the_package_is_read_only(configured, monkeypatch):
    package = Path(dagc.__file__).parent
    assert locations.numba_cache_dir(package) is None  # writable here: numba's default
    monkeypatch.setattr(locations, "_can_write", lambda d: "__pycache__" not in str(d))
    assert locations.numba_cache_dir(package) == configured / "numba"
