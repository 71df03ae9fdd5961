"""Where the caches live: dagc's generated modules and numba's compiled machine code.

The cache directory must be private to its user (docs/guarantees.md): numba's cache files are
pickles, loaded without a check, so anyone who can write beside them can run code as the
user. A configured directory that cannot be used (no writable HOME, a read-only or shared
directory, one owned by someone else) is replaced by a private directory under the system's
temporary directory, with one warning per process, never a crash.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
import warnings
from pathlib import Path

from ..untrusted import printable


def configured_root() -> Path:
    """$DAGC_CACHE_DIR, or ~/.cache/dagc: the cache as configured, unchecked (for messages)."""
    root = os.environ.get("DAGC_CACHE_DIR")
    if root:
        return Path(root)
    try:
        return Path.home() / ".cache" / "dagc"
    except RuntimeError:  # no HOME and no password entry
        return Path("~/.cache/dagc")


def generated_dir() -> Path:
    """The directory of generated modules (`generated` in the cache) if it is private and
    writable, else one in `private_temp_dir`."""
    return _usable(configured_root() / "generated")


@functools.cache
def _usable(directory: Path) -> Path:
    reason = problem(directory)
    if reason is None:
        return directory
    fallback = private_temp_dir() / directory.name
    warnings.warn(f"dagc: the cache directory {printable(directory)} {reason}; using "
                  f"{fallback} instead", stacklevel=3)
    fallback.mkdir(exist_ok=True)
    return fallback


def problem(directory: Path) -> str | None:
    """Why `directory` cannot hold a cache (creating it, private, if missing), or None."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as err:
        return f"cannot be created ({err.strerror or err})"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != os.geteuid():
        return "belongs to another user"
    if info.st_mode & 0o022:
        return "is writable by other users"
    if not _can_write(directory):
        return "is not writable"
    return None


def private_temp_dir() -> Path:
    """$TMPDIR/dagc-<uid>, made private to this user; a fresh directory if that name is
    taken by anything else (another user's directory, a symlink, a file)."""
    path = Path(tempfile.gettempdir()) / f"dagc-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
                and not info.st_mode & 0o077):
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="dagc-"))


def numba_cache_dir(package: Path) -> Path | None:
    """Where numba should keep the machine code of dagc's own kernels, or None for its
    default (beside their source, `package`'s __pycache__ folders). numba looks for a
    writable place when a cached function is defined, that is when dagc is imported, and
    raises if there is none (an installed package and no writable HOME): then the dagc
    cache's `numba` folder."""
    if _can_write(package / "backend" / "__pycache__") and \
            _can_write(package / "ops" / "__pycache__"):
        return None
    return generated_dir().parent / "numba"


def _can_write(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False
