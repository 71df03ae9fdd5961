"""The generated modules of the bundled architectures are checked in; they must be current."""

from pathlib import Path

from dagc import codegen, graph, spec

GENERATED = Path(__file__).parent.parent / "generated"


def test_checked_in_modules_match_a_fresh_render(tmp_path):
    fresh = {}
    for name in spec.bundled_names():
        path = codegen.write_module(graph.build(spec.load(name)), tmp_path)
        fresh[path.name] = path.read_text()
    checked_in = {p.name: p.read_text() for p in GENERATED.glob("*.py")}
    assert sorted(checked_in) == sorted(fresh), (
        "generated/ is stale: regenerate it as the README's Development section says")
    for name, text in fresh.items():
        assert checked_in[name] == text, f"generated/{name} differs from a fresh render"


def test_module_depends_on_structure_not_width(tmp_path):
    paths = {codegen.write_module(graph.build(spec.load("densenet3"), width), tmp_path)
             for width in (8, 64, 2048)}
    assert len(paths) == 1


def test_block_names_appear_in_the_module():
    text = codegen.render(graph.build(spec.load("densenet3")))
    for block in ("h1", "h2", "h3", "out"):
        assert f"# {block} = " in text or f"# {block}\n" in text
    compile(text, "generated.py", "exec")  # plain, valid Python
