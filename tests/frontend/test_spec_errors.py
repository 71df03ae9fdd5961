"""Bad architecture and graph files (docs/design.md, Architecture files).

Every bad input must raise one `DagcError` whose message is a single line naming the file and
the culprit (block, neuron, key), before anything is written: no generated module, no cache
file, and no side effect of the file's content (no PWNED file from a YAML tag).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagc
from dagc.backend import render as codegen
from dagc.errors import DagcError
from dagc.frontend import expr, spec
from dagc.ir import graph

GOOD = """\
name: good
width: 8
inputs: {x: 4}
blocks:
  h1: {size: width, act: tanh, from: [x]}
  h2: {size: width, act: tanh, from: [h1]}
  out: {size: 1, from: [h2]}
"""


def arch(blocks: str, inputs: str = "{x: 4}", head: str = "name: t\nwidth: 8\n") -> str:
    """An architecture file with the given `blocks` body (one block per line)."""
    body = textwrap.indent(textwrap.dedent(blocks).strip() + "\n", "  ")
    return f"{head}inputs: {inputs}\nblocks:\n{body}"


def fails(tmp_path: Path, monkeypatch, text: str | bytes, *culprits: str,
          filename: str = "arch.yaml", names: Path | None = None, **kwargs) -> str:
    """Compile `text` written to `filename` and return the error message after checking it:
    one line, naming the file (`names`, default the architecture file) and every culprit, and
    nothing written anywhere under tmp_path (the cache directory included)."""
    path = tmp_path / filename
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DAGC_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)  # a YAML tag running `touch PWNED` would write here
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DagcError) as info:
        dagc.compile(path, jit=False, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert str(names or path) in message, message
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not in {message!r}"
    assert sorted(tmp_path.rglob("*")) == before, "something was written"
    assert not cache.exists()
    return message


def test_good_file_compiles(tmp_path, monkeypatch):
    """The control: the base file of the cases below is fine, and compiling writes a module."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
    net = dagc.compile(path, jit=False)
    assert (net.width, net.width_m, net.depth, net.n_params) == (8, 8, 3, 4 * 8 + 8 * 8 + 8)
    assert len(list((tmp_path / "cache" / "generated").glob("good_*.py"))) == 1
    assert issubclass(DagcError, ValueError)


# --- cycles -----------------------------------------------------------------------------------

CYCLES = [
    pytest.param("""
        h1: {size: 4, act: tanh, from: [x, h2]}
        h2: {size: 4, act: tanh, from: [h1]}
        out: {size: 1, from: [h2]}""", {"h1", "h2"}, id="two-blocks"),
    pytest.param("""
        h: {size: 4, act: tanh, from: [x, h]}
        out: {size: 1, from: [h]}""", {"h"}, id="self-loop"),
    pytest.param("""
        a: {size: 4, act: tanh, from: [x, {block: c, fan_in: 2}]}
        b: {size: 4, act: tanh, from: [a]}
        c: {size: 4, act: tanh, from: [b]}
        out: {size: 1, from: [c]}""", {"a", "b", "c"}, id="three-blocks-sparse"),
    pytest.param("""
        a: {size: 4, act: tanh, from: [x], add: [b]}
        b: {size: 4, act: tanh, from: [a]}
        out: {size: 1, from: [b]}""", {"a", "b"}, id="through-add"),
]


@pytest.mark.parametrize(("blocks", "on_cycle"), CYCLES)
def test_cycle_names_the_blocks_on_it(tmp_path, monkeypatch, blocks, on_cycle):
    message = fails(tmp_path, monkeypatch, arch(blocks), "cycle")
    listed = message.split("cycle:")[1].replace("->", " ").split()
    assert set(listed) == on_cycle
    assert listed[0] == listed[-1]  # printed as a closed path


# --- one table of bad block files: (text, culprits) -------------------------------------------

def block_case(blocks, *culprits, inputs="{x: 4}", head="name: t\nwidth: 8\n", id):
    return pytest.param(arch(blocks, inputs, head), culprits, id=id)


BAD = [
    # unknown sources
    block_case("h: {size: 4, act: tanh, from: [x, nope]}", "block h", "'nope'", id="from-unknown"),
    block_case("h: {size: 4, act: tanh, from: [X]}", "block h", "'X'", id="from-wrong-case"),
    block_case("h: {size: 4, act: tanh, from: [{block: nope, fan_in: 2}]}", "block h", "'nope'",
               id="fan-in-unknown"),
    block_case("h: {size: 4, from: [x], add: [nope]}", "block h", "'nope'", id="add-unknown"),
    # activations
    block_case("h: {size: 4, act: tanhh, from: [x]}\nout: {size: 1, from: [h]}", "block h",
               "'tanhh'", "known: identity", id="act-typo"),
    block_case("h: {size: 4, act: Tanh, from: [x]}\nout: {size: 1, from: [h]}", "block h",
               "'Tanh'", id="act-case"),
    block_case("h: {size: 4, act: 'os.system', from: [x]}\nout: {size: 1, from: [h]}",
               "block h", "'os.system'", id="act-dotted"),
    block_case("h: {size: 4, act: 3, from: [x]}\nout: {size: 1, from: [h]}", "block h", "3",
               id="act-number"),
    block_case("h: {size: 4, act: [tanh], from: [x]}\nout: {size: 1, from: [h]}", "block h",
               "['tanh']", id="act-list"),
    block_case("h: {size: 4, from: [x]}\nout: {size: 1, from: [h]}", "block h", "`act`",
               id="act-missing-on-hidden"),
    # names that are not identifiers
    block_case("1h: {size: 4, from: [x]}", "block", "'1h'", id="name-digit-first"),
    block_case("h-1: {size: 4, from: [x]}", "block", "'h-1'", id="name-dash"),
    block_case("'h 1': {size: 4, from: [x]}", "block", "'h 1'", id="name-space"),
    block_case("h.1: {size: 4, from: [x]}", "block", "'h.1'", id="name-dot"),
    block_case("héllo: {size: 4, from: [x]}", "block", "'héllo'", id="name-non-ascii"),
    block_case("'': {size: 4, from: [x]}", "block", "''", id="name-empty"),
    block_case("\"h\\n\": {size: 4, from: [x]}", "block", "'h\\n'", id="name-trailing-newline"),
    block_case("3: {size: 4, from: [x]}", "block", "3", id="name-number"),
    block_case("on: {size: 4, from: [x]}", "block", "True", "quote", id="name-yaml-boolean"),
    block_case("h: {size: 4, from: [x]}", "input", "'x-1'", inputs="{x-1: 4}", id="input-name"),
    block_case("h: {size: 4, from: [x]}", "name", "'my-arch'", head="name: my-arch\n",
               id="arch-name"),
    block_case("h: {size: 4, from: [x]}", "name", "'ok\\n'", head="name: \"ok\\n\"\n",
               id="arch-name-newline"),
    block_case("h: {size: 4, from: [x]}", "name", "None", head="name:\n", id="arch-name-null"),
    block_case("h: {size: 4, from: [x]}", "name", "too long", head=f"name: {'a' * 101}\n",
               id="arch-name-too-long"),
    block_case(f"{'b' * 101}: {{size: 4, from: [x]}}", "block", "too long", id="block-too-long"),
    block_case("h: {size: 4, from: [1]}", "block h", "from", "1", id="from-number"),
    block_case("h: {size: 4, from: [x], add: [null]}", "block h", "add", "None", id="add-null"),
    # sizes that are not positive integers
    block_case("h: {size: 0, from: [x]}", "block h", "size", "0", id="size-zero"),
    block_case("h: {size: -3, from: [x]}", "block h", "size", "-3", id="size-negative"),
    block_case("h: {size: width/3, from: [x]}", "block h", "size", "8/3", id="size-width/3"),
    block_case("h: {size: width - 8, from: [x]}", "block h", "size", "0", id="size-zero-expr"),
    block_case("h: {size: -width, from: [x]}", "block h", "size", "-8", id="size-neg-expr"),
    block_case("h: {size: 7/2, from: [x]}", "block h", "size", "7/2", id="size-fraction"),
    block_case("h: {size: 2.5, from: [x]}", "block h", "2.5", id="size-float"),
    block_case("h: {size: 3.0, from: [x]}", "block h", "3.0", id="size-integral-float"),
    block_case("h: {size: true, from: [x]}", "block h", "True", id="size-true"),
    block_case("h: {size: false, from: [x]}", "block h", "False", id="size-false"),
    block_case("h: {size: null, from: [x]}", "block h", "None", id="size-null"),
    block_case("h: {size: [4], from: [x]}", "block h", "[4]", id="size-list"),
    block_case("h: {from: [x]}", "block h", "size", id="size-missing"),
    block_case("h: {size: width/0, from: [x]}", "block h", "division by zero", id="size-div0"),
    block_case("h: {size: 1000000000, from: [x]}", "block h", "too large", id="size-huge"),
    block_case("h: {size: 4, from: [x]}", "input x", "8/3", inputs="{x: width/3}",
               id="input-size"),
    block_case("h: {size: 4, from: [x]}", "input x", "0", inputs="{x: 0}", id="input-size-0"),
    # unparsable size expressions
    *[block_case(f"h: {{size: {json.dumps(text)}, from: [x]}}", "block h", "size",
                 id=f"parse-{text!r}"[:40])
      for text in ["width +", "(width", "width)", "2**3", "1e3", "0x10", "4 5", "width % 3",
                   "wid", "widthwidth", "W", "width.0", "", "   ", "__import__('os')", "٣",
                   "(" * 150 + "1" + ")" * 150]],
    # fan_in
    block_case("h: {size: 4, from: [{block: x, fan_in: 5}]}", "block h", "fan_in 5", "x",
               id="fan-in-exceeds-source"),
    block_case("h: {size: 4, from: [{block: x, fan_in: 0}]}", "block h", "fan_in", id="fan-in-0"),
    block_case("h: {size: 4, from: [{block: x, fan_in: width/3}]}", "block h", "fan_in", "8/3",
               id="fan-in-width/3"),
    block_case("h: {size: 4, from: [{block: x, fan_in: 2.5}]}", "block h", "fan_in", "2.5",
               id="fan-in-float"),
    block_case("h: {size: 4, from: [{block: x, fan_in: 2, seed: 1}]}", "block h", "from",
               id="fan-in-extra-key"),
    block_case("h: {size: 4, from: [{block: x}]}", "block h", "from", id="fan-in-missing"),
    # add between blocks of different sizes
    block_case("""
        h1: {size: width, act: tanh, from: [x]}
        h2: {size: 2*width, act: tanh, from: [h1], add: [h1]}
        out: {size: 1, from: [h2]}""", "block h2", "add: h1", "8", "16", id="add-sizes"),
    block_case("h: {size: 4, from: [x], add: x}", "block h", "add", id="add-not-list"),
    block_case("""
        h1: {size: 4, act: tanh, from: [x]}
        out: {size: 4, from: [h1], add: [x, x]}""", "block out", "add: x", id="add-twice"),
    # inputs and outputs
    pytest.param("name: t\nblocks:\n  h: {size: 4, from: [x]}\n", ("inputs",), id="no-inputs"),
    block_case("h: {size: 4, from: [x]}", "inputs", inputs="{}", id="inputs-empty"),
    block_case("h: {size: 4, from: [x]}", "inputs", inputs="[x]", id="inputs-list"),
    pytest.param("name: t\ninputs: {x: 4}\nblocks: {}\n", ("blocks",), id="no-blocks"),
    pytest.param("name: t\ninputs: {x: 4}\n", ("blocks", "graph"), id="blocks-missing"),
    pytest.param("name: t\ninputs: {x: 4}\nblocks: [h]\n", ("blocks",), id="blocks-list"),
    block_case("h: {size: 4, from: [x]}", "input y feeds nothing", inputs="{x: 4, y: 2}",
               id="input-feeds-nothing"),
    block_case("x: {size: 4, from: [x]}", "block x", "input", id="block-named-like-input"),
    block_case("h: 4", "block h", id="block-not-mapping"),
    block_case("h: {size: 4, from: []}", "block h", "from", id="from-empty"),
    block_case("h: {size: 4, from: x}", "block h", "from", id="from-not-list"),
    block_case("h: {size: 4, from: [x, x]}", "block h", "'x'", "twice", id="from-twice"),
    block_case("h: {size: 4, from: [x], bias: 'yes'}", "block h", "bias", id="bias-string"),
    # unknown keys
    block_case("h: {size: 4, from: [x]}", "widht", head="name: t\nwidht: 8\n",
               id="unknown-top-key"),
    block_case("h: {size: 4, activation: tanh, from: [x]}", "block h", "activation",
               id="unknown-block-key"),
    block_case("h: {size: 4, from: [x]}", "act", head="name: t\nact: tanh\n",
               id="top-act-with-blocks"),
    # top-level values
    block_case("h: {size: 4, from: [x]}", "width", "0", head="width: 0\n", id="width-0"),
    block_case("h: {size: 4, from: [x]}", "width", "-8", head="width: -8\n", id="width-neg"),
    block_case("h: {size: 4, from: [x]}", "width", "2.5", head="width: 2.5\n", id="width-float"),
    block_case("h: {size: 4, from: [x]}", "width", "True", head="width: true\n",
               id="width-bool"),
    block_case("h: {size: 4, from: [x]}", "width", "'8'", head="width: '8'\n", id="width-str"),
    block_case("h: {size: 4, from: [x]}", "width", "too large", head=f"width: {'9' * 4000}\n",
               id="width-4000-digits"),
    block_case("h: {size: 4, from: [x]}", "graph_seed", "-1", head="graph_seed: -1\n",
               id="graph-seed-neg"),
    block_case("h: {size: 4, from: [x]}", "graph_seed", "True", head="graph_seed: true\n",
               id="graph-seed-bool"),
    block_case("h: {size: width, from: [x]}", "width", "no width", head="name: t\n",
               id="width-unset"),
    # duplicate keys
    block_case("h: {size: 4, from: [x]}\nh: {size: 2, from: [x]}", "duplicate key 'h'",
               id="duplicate-block"),
    block_case("h: {size: 4, from: [x]}", "duplicate key 'width'", head="width: 8\nwidth: 9\n",
               id="duplicate-top-key"),
    block_case("h: {size: 4, from: [x]}", "duplicate key 'x'", inputs="{x: 4, x: 2}",
               id="duplicate-input"),
    block_case("h: {size: 4, act: tanh, act: sin, from: [x]}", "duplicate key 'act'",
               id="duplicate-block-key"),
    block_case("h: {size: 4, from: [{block: x, block: x, fan_in: 2}]}", "duplicate key 'block'",
               id="duplicate-fan-in-key"),
]


@pytest.mark.parametrize(("text", "culprits"), BAD)
def test_bad_block_file(tmp_path, monkeypatch, text, culprits):
    fails(tmp_path, monkeypatch, text, *culprits)


def test_default_name_from_file_stem_must_be_identifier(tmp_path, monkeypatch):
    text = arch("h: {size: 4, from: [x]}", head="")
    fails(tmp_path, monkeypatch, text, "name", "'my-arch'", filename="my-arch.yaml")


@pytest.mark.parametrize(("text", "culprit"), [
    pytest.param("", "empty", id="empty"),
    pytest.param("# only a comment\n", "empty", id="comment-only"),
    pytest.param("\n   \n\n", "empty", id="blank"),
    pytest.param("---\n", "empty", id="null-document"),
    pytest.param("name: [unclosed\n", "invalid YAML", id="unclosed-list"),
    pytest.param("a: b: c\n", "invalid YAML", id="nested-colon"),
    pytest.param("name: t\n\tinputs: {x: 4}\n", "invalid YAML", id="tab"),
    pytest.param("name: 'unterminated\n", "invalid YAML", id="unterminated-string"),
    pytest.param("name: a\n---\nname: b\n", "invalid YAML", id="two-documents"),
    pytest.param("a: " + "[" * 800 + "]" * 800, "invalid YAML", id="nested-too-deep"),
    pytest.param("? [a, b]\n: 1\n", "invalid YAML", id="list-as-key"),
    pytest.param("{{a: 1}: 2}\n", "invalid YAML", id="mapping-as-key"),
    pytest.param("- a\n- b\n", "list", id="list"),
    pytest.param("just text\n", "str", id="scalar"),
    pytest.param("42\n", "int", id="number"),
    pytest.param("!!binary aGVsbG8=\n", "bytes", id="binary"),
    pytest.param(b"name: \xff\xfe\n", "cannot read", id="not-utf8"),
    # typed scalars that PyYAML's safe constructors fail on with plain Python exceptions
    pytest.param("name: 2001-13-45\n", "invalid YAML", id="bad-date"),
    pytest.param("name: !!timestamp xyz\n", "invalid YAML", id="bad-timestamp"),
    pytest.param("width: !!int abc\n", "invalid YAML", id="bad-int-tag"),
    pytest.param("width: !!float abc\n", "invalid YAML", id="bad-float-tag"),
    pytest.param("name: !!bool maybe\n", "invalid YAML", id="bad-bool-tag"),
    pytest.param("width: 0x_\n", "invalid YAML", id="bad-hex"),
    pytest.param("width: " + "9" * 5000 + "\n", "invalid YAML", id="5000-digits"),
])
def test_bad_yaml(tmp_path, monkeypatch, text, culprit):
    fails(tmp_path, monkeypatch, text, culprit)


@pytest.mark.parametrize("text", [
    "!!python/object/apply:os.system ['touch PWNED']\n",
    "name: !!python/object/apply:os.system ['touch PWNED']\n",
    "inputs: {x: 4}\nblocks:\n  h: {size: !!python/object/apply:os.system ['touch PWNED'], "
    "from: [x]}\n",
    "name: !!python/name:os.system\n",
    "name: !!python/object/new:subprocess.Popen [['touch', 'PWNED']]\n",
    "name: !!python/module:os\n",
    "name: !custom tag\n",
])
def test_yaml_tags_never_construct_objects(tmp_path, monkeypatch, text):
    fails(tmp_path, monkeypatch, text, "invalid YAML", "tag")
    assert not (tmp_path / "PWNED").exists()


BOMB = ("[&a [lol, lol, lol, lol, lol, lol, lol, lol, lol], "
        + ", ".join(f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefg", "bcdefgh",
                                                                         strict=True))
        + "]")  # nine lists of nine ... 9**8 leaves, a few kB of text


@pytest.mark.parametrize("where", ["size", "from", "bias", "act", "name", "width", "fan_in"])
def test_yaml_alias_bomb_does_not_explode_in_the_message(tmp_path, monkeypatch, where):
    """Aliases make a small file a huge value; errors must show it briefly, and fast."""
    blocks = {"size": "h: {size: BOMB, from: [x]}", "from": "h: {size: 1, from: BOMB}",
              "bias": "h: {size: 1, from: [x], bias: BOMB}",
              "act": "h: {size: 1, from: [x], act: BOMB}",
              "fan_in": "h: {size: 1, from: [{block: x, fan_in: BOMB}]}"}
    head = {"name": "name: BOMB\n", "width": "width: BOMB\n"}.get(where, "name: t\n")
    text = arch(blocks.get(where, "h: {size: 1, from: [x]}"), head=head).replace("BOMB", BOMB)
    message = fails(tmp_path, monkeypatch, text)
    assert len(message) < 500 + len(str(tmp_path))


def test_yaml_merge_keys_are_supported_and_explicit_keys_win(tmp_path, monkeypatch):
    """`<<: *anchor` is plain YAML: it must not be mistaken for a duplicate or unknown key."""
    path = tmp_path / "merge.yaml"
    path.write_text(arch("""
        h1: &hidden {size: width, act: tanh, from: [x]}
        h2: {<<: *hidden, from: [h1]}
        out: {size: 1, from: [h2]}"""))
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
    net = dagc.compile(path, jit=False)
    assert net.layers == {"x": 0, "h1": 1, "h2": 2, "out": 3}
    assert net.n_params == 4 * 8 + 8 * 8 + 8


def test_api_arguments(tmp_path, monkeypatch):
    """Overrides given to compile (as the CLI does) are checked like the file's values."""
    for kwargs, culprit in [({"width": 0}, "width"), ({"width": -1}, "width"),
                            ({"width": 2.5}, "width"), ({"width": True}, "width"),
                            ({"graph_seed": -1}, "graph_seed"),
                            ({"graph_seed": True}, "graph_seed"),
                            ({"width": 10**12}, "width"), ({"width": 10**5000}, "width")]:
        path = tmp_path / "good.yaml"
        path.write_text(GOOD)
        monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
        with pytest.raises(DagcError, match=culprit) as info:
            dagc.compile(path, jit=False, **kwargs)
        assert "\n" not in str(info.value)
        assert not (tmp_path / "cache").exists()
    with pytest.raises(DagcError, match="no_such_arch"):
        dagc.compile("no_such_arch")
    with pytest.raises(DagcError, match="bundled"):
        dagc.compile(str(tmp_path / "missing.yaml"))
    with pytest.raises(DagcError):
        dagc.compile(str(tmp_path))  # a directory is not an architecture file
    for arch in (5, None, b"mlp3", "mlp3\x00", "x" * 5000, "a/" * 3000, "", "mlp3\n"):
        with pytest.raises(DagcError) as info:
            dagc.compile(arch)
        assert "\n" not in str(info.value) and "\x00" not in str(info.value)
        assert len(str(info.value)) < 500


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_graph_file_that_never_ends_is_refused(tmp_path):
    """A device as graph file must not be read forever."""
    (tmp_path / "arch.yaml").write_text("name: g\ngraph: /dev/zero\n")
    code = "import dagc\ntry:\n    dagc.compile('arch.yaml')\nexcept dagc.DagcError as e:\n" \
           "    print(e)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "DAGC_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("/dev/zero: ") and "not a regular file" in done.stdout


# --- neuron-level graph files -----------------------------------------------------------------

def node_link(edges, nodes=None, directed=True, key="links", **extra) -> str:
    nodes = nodes if nodes is not None else sorted({n for e in edges for n in e[:2]})
    node_list = [n if isinstance(n, dict) else {"id": n} for n in nodes]
    return json.dumps({"directed": directed, "multigraph": False, "graph": {},
                       "nodes": node_list,
                       key: [{"source": u, "target": v} for u, v in edges], **extra})


def graphml(edges, directed=True, acts=None) -> str:
    acts = acts or {}
    nodes = sorted({n for e in edges for n in e})
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">',
             '<key id="act" for="node" attr.name="act" attr.type="string"/>',
             f'<graph edgedefault="{"directed" if directed else "undirected"}">']
    for n in nodes:
        data = f'<data key="act">{acts[n]}</data>' if n in acts else ""
        lines.append(f'<node id="{n}">{data}</node>')
    lines += [f'<edge source="{u}" target="{v}"/>' for u, v in edges]
    return "\n".join(lines + ["</graph>", "</graphml>"])


def edgelist(edges) -> str:
    return "".join(f"{u} {v}\n" for u, v in edges)


DAG = [("i1", "a"), ("i2", "a"), ("i1", "b"), ("a", "c"), ("b", "c"), ("i2", "c")]


def graph_fails(tmp_path, monkeypatch, filename, content, *culprits, names_graph=True):
    graph_path = tmp_path / filename
    if isinstance(content, bytes):
        graph_path.write_bytes(content)
    elif content is not None:
        graph_path.write_text(content)
    return fails(tmp_path, monkeypatch, f"name: g\ngraph: {filename}\n", *culprits,
                 names=graph_path if names_graph else None)


@pytest.mark.parametrize("filename,content", [
    ("g.json", node_link(DAG)), ("g.json", node_link(DAG, key="edges")),
    ("g.graphml", graphml(DAG)), ("g.edges", edgelist(DAG)), ("g.txt", edgelist(DAG)),
])
def test_good_graph_files_compile_to_the_same_network(tmp_path, monkeypatch, filename, content):
    """Control for the graph-file errors: the same DAG in every format gives the same IR."""
    (tmp_path / filename).write_text(content)
    (tmp_path / "arch.yaml").write_text(f"name: g\ngraph: {filename}\n")
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
    net = dagc.compile(tmp_path / "arch.yaml", jit=False)
    assert net.n_params == len(DAG)
    assert (net.n_in, net.n_out, net.depth) == (2, 1, 2)
    assert dict(net.layers) == {"i1": 0, "i2": 0, "a": 1, "b": 1, "c": 2}
    assert (net.input_names, net.output_names) == (["i1", "i2"], ["c"])


def test_networkx_written_node_link_is_read(tmp_path, monkeypatch):
    """Whatever key (links or edges) the installed networkx writes by default."""
    data = nx.node_link_data(nx.DiGraph(DAG))
    (tmp_path / "g.json").write_text(json.dumps(data))
    (tmp_path / "arch.yaml").write_text("name: g\ngraph: g.json\n")
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
    assert dagc.compile(tmp_path / "arch.yaml", jit=False).n_params == len(DAG)


CYCLIC = DAG + [("c", "d"), ("d", "b")]  # b -> c -> d -> b


@pytest.mark.parametrize("filename,content", [
    ("g.json", node_link(CYCLIC)),
    ("g.graphml", graphml(CYCLIC)),
    ("g.txt", edgelist(CYCLIC)),
])
def test_cyclic_graph_file_names_the_neurons_on_the_cycle(tmp_path, monkeypatch, filename,
                                                          content):
    message = graph_fails(tmp_path, monkeypatch, filename, content, "cycle")
    listed = message.split("cycle:")[1].replace("->", " ").split()
    assert set(listed) == {"b", "c", "d"}


@pytest.mark.parametrize("filename,content,culprits", [
    pytest.param("g.txt", "a b\nb b\n", ("cycle", "b -> b"), id="self-loop"),
    pytest.param("g.json", node_link([("a", "b")], directed=False), ("undirected",),
                 id="undirected-json"),
    pytest.param("g.graphml", graphml([("a", "b")], directed=False), ("undirected",),
                 id="undirected-graphml"),
    pytest.param("g.txt", "a b\na b\n", ("'a' -> 'b'", "more than once"), id="duplicate-edge"),
    pytest.param("g.json", node_link([("a", "b"), ("a", "b")], multigraph=True),
                 ("'a' -> 'b'", "more than once"), id="duplicate-edge-json"),
    pytest.param("g.graphml", graphml([("a", "b"), ("a", "b")]),
                 ("'a' -> 'b'", "more than once"), id="duplicate-edge-graphml"),
    pytest.param("g.json", node_link([("a", "b")], nodes=["a", {"id": "b", "act": "bogus"}]),
                 ("neuron 'b'", "'bogus'"), id="unknown-act-json"),
    pytest.param("g.json", node_link([("a", "b")], nodes=["a", {"id": "b", "act": ["tanh"]}]),
                 ("neuron 'b'", "['tanh']"), id="act-list-json"),
    pytest.param("g.graphml", graphml([("a", "b")], acts={"b": "os.system"}),
                 ("neuron 'b'", "'os.system'"), id="unknown-act-graphml"),
    pytest.param("g.json", node_link([("a", "b")], nodes=["a", "b", "lonely"]),
                 ("'lonely'", "feeds nothing"), id="isolated-neuron"),
    pytest.param("g.txt", "", ("no neurons",), id="empty-edgelist"),
    pytest.param("g.json", "", ("cannot read",), id="empty-json"),
    pytest.param("g.json", "{not json", ("cannot read",), id="malformed-json"),
    pytest.param("g.json", "[1, 2]", ("list",), id="json-list"),
    pytest.param("g.json", json.dumps({"nodes": [{"id": "a"}], "links": 5}),
                 ("cannot read",), id="json-links-not-a-list"),
    pytest.param("g.json", json.dumps({"nodes": [{"id": "a"}], "links": [{"source": "a"}]}),
                 ("cannot read", "target"), id="json-link-without-target"),
    pytest.param("g.graphml", "<graphml><graph", ("cannot read",), id="malformed-graphml"),
    pytest.param("g.txt", "a b c d e\n", ("cannot read",), id="edgelist-garbage"),
    pytest.param("g.txt", b"\xff\xfe a b\n", ("cannot read",), id="not-utf8"),
])
def test_bad_graph_file(tmp_path, monkeypatch, filename, content, culprits):
    graph_fails(tmp_path, monkeypatch, filename, content, *culprits)


def test_missing_graph_file_names_both_files(tmp_path, monkeypatch):
    graph_fails(tmp_path, monkeypatch, "missing.json", None, "missing.json", "not found",
                names_graph=False)


def test_graph_file_that_is_a_directory(tmp_path, monkeypatch):
    (tmp_path / "dir.json").mkdir()
    graph_fails(tmp_path, monkeypatch, "dir.json", None, "cannot read")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs file permissions that apply (not root)")
def test_unreadable_files(tmp_path, monkeypatch):
    graph_path = tmp_path / "g.txt"
    graph_path.write_text(edgelist(DAG))
    graph_path.chmod(0)
    graph_fails(tmp_path, monkeypatch, "g.txt", None, "cannot read")
    arch_path = tmp_path / "locked.yaml"
    arch_path.write_text(GOOD)
    arch_path.chmod(0)
    with pytest.raises(DagcError, match="cannot read"):
        spec.load(arch_path)


@pytest.mark.parametrize("generator,culprits", [
    ("{generator: random_dag, fanin: 4}", ("graph", "fanin")),
    ("{generator: random_dog}", ("graph", "generator")),
    ("{generator: random_dag, layers: 0}", ("layers",)),
    ("{generator: random_dag, outputs: two}", ("outputs",)),
    ("{generator: random_dag, act: bogus}", ("'bogus'",)),
    ("{generator: random_dag, size: 0}", ("size",)),
    ("{generator: random_dag, inputs: 2, size: 2, fan_in: 100}", ("fan_in 100",)),
    ("{generator: random_dag, layers: 1000000000000}", ("too many",)),
    ("3", ("graph",)),
])
def test_bad_random_dag(tmp_path, monkeypatch, generator, culprits):
    fails(tmp_path, monkeypatch, f"name: r\nwidth: 8\ngraph: {generator}\n", *culprits)


@pytest.mark.parametrize("text,culprits", [
    ("name: g\ngraph: g.txt\ninputs: {x: 4}\n", ("inputs",)),
    ("name: g\ngraph: g.txt\nblocks: {h: {size: 1, from: [x]}}\n", ("blocks", "graph")),
    ("name: g\ngraph: g.txt\nact: bogus\n", ("act", "'bogus'")),
])
def test_bad_neuron_graph_header(tmp_path, monkeypatch, text, culprits):
    (tmp_path / "g.txt").write_text(edgelist(DAG))
    fails(tmp_path, monkeypatch, text, *culprits)


# --- properties: whatever the file says, only DagcError comes out -----------------------------

SCALARS = (st.none() | st.booleans() | st.integers(-10, 100) | st.floats(allow_nan=False)
           | st.sampled_from(["x", "h", "out", "width", "width/2", "2*width", "tanh", "relu",
                              "bogus", "", "x y", "1h", "random_dag"])
           | st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["block", "fan_in", "size", "act",
                                                         "from", "x"]), inner, max_size=3),
                      max_leaves=8)
def rarely(other, valid, one_in: int = 25):
    """Mostly `valid`, once in `one_in` draws `other`."""
    return st.integers(1, one_in).flatmap(lambda k: other if k == one_in // 2 else valid)


@st.composite
def documents(draw):
    """Architecture documents that are often valid, and otherwise wrong in one or two places
    (any value where a size, a source, an activation... belongs; unknown sources; cycles)."""
    names = [f"h{i}" for i in range(draw(st.integers(1, 4)))]
    size = rarely(VALUES, st.integers(1, 12) | st.sampled_from(["width", "width/2", "width-1"]))
    blocks = {}
    for i, name in enumerate(names):
        earlier = st.sampled_from(["x", *names[:i]])
        source = rarely(VALUES | st.sampled_from(["nope", *names[i:]]), earlier, 10)
        entry = rarely(st.fixed_dictionaries(
            {"block": source, "fan_in": rarely(VALUES, st.integers(1, 6) | st.just("width/2"))}),
            source, 5)
        blocks[name] = {"size": draw(size),
                        "from": draw(rarely(VALUES, st.lists(entry, min_size=1, max_size=3,
                                                             unique_by=_source_name))),
                        "act": draw(rarely(VALUES, st.sampled_from(spec.ACTIVATIONS)))}
        for key, value in [("bias", st.booleans()), ("add", st.lists(source, max_size=1))]:
            if draw(st.booleans()):
                blocks[name][key] = draw(rarely(VALUES, value))
    doc = {"name": draw(rarely(VALUES, st.sampled_from(["n", "if", "a_b"]))),
           "width": draw(rarely(VALUES, st.integers(1, 9))),
           "inputs": draw(rarely(VALUES, st.fixed_dictionaries({"x": size}))),
           "blocks": draw(rarely(VALUES, st.just(blocks)))}
    if draw(rarely(st.just(True), st.just(False), 10)):
        doc[draw(st.sampled_from(["graph", "act", "other", "graph_seed"]))] = draw(VALUES)
    return doc


def _source_name(entry) -> str:
    return repr(entry.get("block") if isinstance(entry, dict) else entry)


DOCUMENT = documents()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENT, st.integers(-1, 9) | st.none())
def test_random_documents_give_dagc_error_or_a_valid_ir(doc, width):
    text = yaml.safe_dump(doc)
    try:
        parsed = spec.parse(text, "fuzz.yaml")
    except DagcError as err:
        assert str(err).startswith("fuzz.yaml: ") and "\n" not in str(err)
        return
    try:
        ir = graph.build(parsed, width)
    except DagcError as err:  # may name the graph file or the width argument instead
        assert str(err) and "\n" not in str(err)
        return
    identifier = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
    assert identifier.match(ir.name)
    assert all(identifier.match(b.name) and b.size >= 1 for b in ir.blocks)
    assert ir.n_params >= 1 and ir.outputs
    ast.parse(codegen.render(ir))  # and the generated module is valid Python


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_random_text_gives_dagc_error_or_a_spec(text):
    try:
        spec.parse(text, "fuzz.yaml")
    except DagcError as err:
        assert "\n" not in str(err) and str(err).startswith("fuzz.yaml: ")


YAML_TOKENS = [
    "name", "inputs", "blocks", "width", "graph", "x", "h", "size", "from", "act", "tanh", ":",
    ": ", " ", "\n", "\n  ", "- ", "[", "]", "{", "}", ",", "'", '"', "?", "|", ">", "#", "---",
    "...", "~", "&a ", "*a", "<<: ", "!!int ", "!!float ", "!!bool ", "!!str ", "!!null ",
    "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "!!pairs ", "!!map ", "!!seq ",
    "!!python/name:os.system ", "!x ", "2001-13-45", "2001-01-01 25:00:00", "0x", "0o", "0b",
    "1e9", "1_0", ".inf", ".nan", "-1", "0", "1", "abc", "yes", "on", "\t", "%YAML 1.1\n",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=25).map("".join))
def test_yaml_soup_gives_dagc_error_or_a_spec(text):
    """Token soup exercises the YAML scanner, parser and typed-scalar constructors."""
    try:
        parsed = spec.parse(text, "soup.yaml")
        if parsed.graph is None:
            graph.build(parsed, 4)
    except DagcError as err:
        assert "\n" not in str(err) and str(err).startswith("soup.yaml: ")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789width+-*/() ._x", max_size=30), st.integers(1, 10**6))
def test_size_expressions_give_dagc_error_or_a_positive_integer(text, width):
    try:
        value = expr.evaluate(expr.parse(text, "where"), width, "where")
    except DagcError as err:
        assert str(err).startswith("where: ") and "\n" not in str(err)
        return
    assert isinstance(value, int) and 1 <= value <= expr.MAX_SIZE
