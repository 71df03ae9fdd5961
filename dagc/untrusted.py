"""Text and files from outside dagc: read only regular files, within a size bound, and print
what a user wrote only with its control characters escaped (docs/guarantees.md).

A FIFO or a device named where a file is expected would block forever or never end, and an
escape sequence in a node id or a path would drive the user's terminal: every file that dagc
parses goes through `read_regular`, every message it prints through `printable`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import DagcError

MAX_MESSAGE = 1000  # characters of one error line: enough for every message dagc writes itself
_CONTROL = {code: repr(chr(code))[1:-1] for code in (*range(0x20), *range(0x7F, 0xA0))}


def printable(text: str, limit: int | None = None) -> str:
    """`text` with control characters escaped as `repr` would (ESC -> \\x1b, newline -> \\n),
    cut to `limit` characters with a note of how much was left out."""
    text = str(text).translate(_CONTROL)
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text


def check_regular(path: str | Path, what: str = "") -> None:
    """Raise a `DagcError` unless `path` is missing or a regular file (never opens it);
    errors start with `what` and the path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise DagcError(f"{what}{printable(path)}: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise DagcError(f"{what}{printable(path)}: cannot read: not a regular file")


def read_regular(path: str | Path, limit: int, what: str = "") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; errors start with `what` (such
    as "--db ") and the path.

    Opened without blocking (a FIFO with no writer would hang `open`) and checked on the
    open descriptor, so a file swapped for a FIFO or a device after a check is refused too.
    Raises FileNotFoundError for a missing file (callers word that themselves).
    """
    shown = printable(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise DagcError(f"{what}{shown}: cannot read: {err.strerror or err}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise DagcError(f"{what}{shown}: cannot read: not a regular file")
    if info.st_size > limit:
        os.close(fd)
        raise DagcError(f"{what}{shown}: {info.st_size:,} bytes, more than the "
                        f"{limit:,} dagc reads")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew while read
        raise DagcError(f"{what}{shown}: more than the {limit:,} bytes dagc reads")
    return data
