"""The cache of generated modules: their names, atomic writing, and verified loading.

A generated module is `<name>_<hash>.py`, the hash over its own text and a digest of the shared
source files its compiled code depends on (`DEPENDENCIES`). numba's on-disk cache checks only
the generated file's own timestamp, yet the machine code of a generated function has the
kernels and activations it calls compiled into it: with the dependencies in the name, a changed
kernel or activation gives a new module name, so stale numba cache entries are never loaded.

Any file in the cache directory is checked against its name before it is imported: an empty,
truncated or modified module is rewritten atomically by `write_module` and refused by
`load_module`, never run (docs/design.md, the cache's guarantees).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from ..errors import DagcError
from ..ir.graph import IR
from . import jit as jit_module
from . import locations
from . import render as codegen

_PACKAGE = Path(__file__).resolve().parents[1]

DEPENDENCIES = (
    _PACKAGE / "backend" / "kernels.py",
    _PACKAGE / "ops" / "activations.py",
    _PACKAGE / "ops" / "gaussian.py",
    _PACKAGE / "ops" / "gaussian_closed.py",
    _PACKAGE / "backend" / "jit.py",
)
"""The shared source files every generated module's compiled code depends on."""

_HASH_LENGTH = 12
_LOADED: dict[tuple[Path, bool], ModuleType] = {}


def cache_dir() -> Path:
    """Where generated modules (and numba's cache beside them) live: $DAGC_CACHE_DIR or
    ~/.cache/dagc, plus `generated`; a private temporary directory, with one warning, when
    that one is not private and writable (`dagc.backend.locations`)."""
    return locations.generated_dir()


@functools.cache
def dependencies_digest() -> str:
    """sha256 over the shared source files (read once per process: they are the code
    running, which cannot change under it)."""
    digest = hashlib.sha256()
    for path in DEPENDENCIES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def content_hash(source: str) -> str:
    """The hash in a module's name: its text and the shared sources it depends on."""
    text = dependencies_digest().encode() + b"\n" + source.encode()
    return hashlib.sha256(text).hexdigest()[:_HASH_LENGTH]


def module_name(ir: IR, source: str) -> str:
    """`<architecture name>_<content hash>`, the file's stem."""
    return f"{ir.name}_{content_hash(source)}"


def is_intact(path: Path, source: str | None = None) -> bool:
    """Whether the file at `path` holds the text its name promises (or, given, `source`)."""
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        return False
    if source is not None and text != source:
        return False
    return path.stem.endswith("_" + content_hash(text))


def write_module(ir: IR, directory: str | Path) -> Path:
    """Render and write `<name>_<hash>.py` into `directory` unless it is already there, intact.

    Written to a temporary file and then linked into place, so readers never see a partial
    file and an intact module is never touched (numba's cache checks its mtime). A damaged
    one (empty, truncated, edited) is replaced atomically.
    """
    source = codegen.render(ir)
    directory = Path(directory)
    path = directory / f"{module_name(ir, source)}.py"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not is_intact(path, source):
            _write_atomically(path, source)
    except OSError as err:
        raise DagcError(f"{directory}: cannot write the generated module: "
                        f"{err.strerror or err}") from None
    return path


def _write_atomically(path: Path, source: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(source)
        os.chmod(tmp, 0o644)  # a shared cache must be readable by its other users
        if path.exists():
            os.replace(tmp, path)  # damaged: readers see the old file or the new, whole
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race, with the same text or to be verified
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_module(path: str | Path, jit: bool = True) -> ModuleType:
    """Import a generated module once per process (twice: jitted and plain Python).

    The text is read once, checked against the hash in the file's name, and executed from
    memory, so what runs is what was verified. With `jit=False` every function of the module,
    and of the kernels and activations it calls, runs as plain Python: nothing is compiled.
    """
    path = Path(path).resolve()
    key = (path, jit)
    if key not in _LOADED:
        module = _import_verified(path)
        _LOADED[key] = module if jit else jit_module.without_jit(module)
    return _LOADED[key]


def _import_verified(path: Path) -> ModuleType:
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as err:
        raise DagcError(f"{path}: cannot read the generated module: {err}") from None
    if not path.stem.endswith("_" + content_hash(text)):
        raise DagcError(f"{path}: the generated module does not match the hash in its name "
                        "(damaged or edited); compile again to rewrite it")
    name = f"dagc_generated_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    # numba locates its on-disk cache from the code's file name, hence compile with the path
    code = compile(text, str(path), "exec")
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - the verified text of our own generated module
    except BaseException:
        del sys.modules[name]
        raise
    return module
