"""The generated modules of the bundled architectures are checked in; they must be current."""

import ast
from pathlib import Path

from dagc.backend import cache, kernels
from dagc.backend import render as codegen
from dagc.frontend import spec
from dagc.ir import graph

GENERATED = Path(__file__).resolve().parents[2] / "generated"


def test_checked_in_modules_match_a_fresh_render(tmp_path):
    fresh = {}
    for name in spec.bundled_names():
        path = cache.write_module(graph.build(spec.load(name)), tmp_path)
        fresh[path.name] = path.read_text()
    checked_in = {p.name: p.read_text() for p in GENERATED.glob("*.py")}
    assert sorted(checked_in) == sorted(fresh), (
        "generated/ is stale: regenerate it as the README's Development section says")
    for name, text in fresh.items():
        assert checked_in[name] == text, f"generated/{name} differs from a fresh render"


def test_module_depends_on_structure_not_width(tmp_path):
    paths = {cache.write_module(graph.build(spec.load("densenet3"), width), tmp_path)
             for width in (8, 64, 2048)}
    assert len(paths) == 1


def test_block_names_appear_in_the_module():
    text = codegen.render(graph.build(spec.load("densenet3")))
    for block in ("h1", "h2", "h3", "out"):
        assert f"# {block} = " in text or f"# {block}\n" in text
    compile(text, "generated.py", "exec")  # plain, valid Python


def imported_kernels(tree: ast.Module) -> list[str]:
    return [alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.module == "dagc.backend.kernels" for alias in node.names]


def test_modules_hold_only_per_architecture_code():
    """The shared kernels are imported by name, never copied in; every imported kernel is
    called; the legend of variable prefixes is in the docstring."""
    shared = {name for name in vars(kernels) if not name.startswith("_")}
    for path in GENERATED.glob("*.py"):
        text = path.read_text()
        tree = ast.parse(text)
        defined = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
        assert defined <= {"forward", "backward", "hvp", "hessian_state", "hvp_factored", "ntk",
                           "limits"}
        assert not defined & shared
        imported = imported_kernels(tree)
        assert imported and set(imported) <= shared
        called = {c.func.id for c in ast.walk(tree)
                  if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
        assert set(imported) <= called, set(imported) - called
        assert "Naming. A block B owns" in ast.get_docstring(tree)


def test_no_kernel_is_called_with_a_literal_integer():
    """numba compiles a separate Literal[int] specialization of a kernel for every constant
    integer argument (a start of 0, say): offsets and starts must reach kernels as int64
    values or inside slices."""
    literal_calls = []
    for path in GENERATED.glob("*.py"):
        tree = ast.parse(path.read_text())
        functions = [f for f in tree.body if isinstance(f, ast.FunctionDef)]
        callees = {f.name for f in functions} | set(imported_kernels(tree))
        for function in functions:
            constants = {t.id for node in ast.walk(function) if isinstance(node, ast.Assign)
                         and isinstance(node.value, ast.Constant)
                         and type(node.value.value) is int
                         for t in node.targets if isinstance(t, ast.Name)}
            for call in ast.walk(function):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                        and call.func.id in callees
                        and any((isinstance(a, ast.Constant) and type(a.value) is int)
                                or (isinstance(a, ast.Name) and a.id in constants)
                                for a in call.args)):
                    literal_calls.append(f"{path.name}:{call.lineno} {ast.unparse(call)}")
    assert not literal_calls, literal_calls
