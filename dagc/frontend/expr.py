"""Size expressions in `width`: integers, + - * / //, unary minus and parentheses.

Parsed by a small recursive-descent parser into a tree of tuples and evaluated with exact
rational arithmetic, so `width/4` is accepted only when it divides evenly. Nothing is ever
passed to `eval`.
"""

from __future__ import annotations

import re
import reprlib
from fractions import Fraction

from ..errors import DagcError

_TOKEN = re.compile(r"\s*(?:([0-9]+)|(width)\b|(//|[-+*/()]))")
MAX_LENGTH = 200  # characters of an expression: keeps the recursive parser far from the limit
MAX_SIZE = 10**8  # neurons in a block (and fan-in)

Expr = tuple  # ("num", int) | ("width",) | ("neg", Expr) | (op, Expr, Expr)

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring = 3, 4, 4, 60


def show(value) -> str:
    """Short repr of a value read from a file, for one-line messages. Bounded whatever the
    value: a YAML alias bomb (nested lists of aliases) must not expand in an error message."""
    if isinstance(value, int) and value.bit_length() > 1000:  # repr() refuses > 4300 digits
        return f"an integer of {int(value.bit_length() * 0.30103)} digits"
    text = _REPR.repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


def parse(text: str | int, where: str) -> Expr:
    """Parse a size expression; `where` names it in errors (file and block)."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise DagcError(f"{where}: expected an integer or an expression in width, "
                        f"got {show(text)}")
    if isinstance(text, int):
        return ("num", text)
    if len(text) > MAX_LENGTH:
        raise DagcError(f"{where}: size expression too long ({len(text)} characters, "
                        f"at most {MAX_LENGTH})")
    tokens = _tokenize(text, where)
    tree, rest = _sum(tokens, where, text)
    if rest:
        raise DagcError(f"{where}: cannot parse size expression {text!r} near {rest[0]!r}")
    return tree


def evaluate(tree: Expr, width: int | None, where: str) -> int:
    """Evaluate to a positive integer; `width` may be None when the tree does not use it."""
    value = _value(tree, width, where)
    if value.denominator != 1 or value <= 0:
        raise DagcError(f"{where}: size must be a positive integer, got {value} (width={width})")
    if value > MAX_SIZE:
        raise DagcError(f"{where}: size {value} is too large (width={width}, at most {MAX_SIZE:,})")
    return int(value)


def uses_width(tree: Expr) -> bool:
    """Whether the expression's value depends on `width`."""
    return tree[0] == "width" or any(isinstance(t, tuple) and uses_width(t) for t in tree[1:])


def exact(tree: Expr, width: int, where: str) -> Fraction:
    """The exact rational value at any `width`, unchecked (neither integral, positive nor
    bounded): how a size behaves as width grows (the infinite-width limits)."""
    return _value(tree, width, where)


def _tokenize(text: str, where: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise DagcError(f"{where}: cannot parse size expression {text!r} at {text[pos:]!r}")
        tokens.append(match.group(match.lastindex))
        pos = match.end()
    if not tokens:
        raise DagcError(f"{where}: empty size expression")
    return tokens


def _sum(tokens, where, text):
    left, tokens = _product(tokens, where, text)
    while tokens and tokens[0] in "+-":
        op, (right, tokens) = tokens[0], _product(tokens[1:], where, text)
        left = (op, left, right)
    return left, tokens


def _product(tokens, where, text):
    left, tokens = _unary(tokens, where, text)
    while tokens and tokens[0] in ("*", "/", "//"):
        op, (right, tokens) = tokens[0], _unary(tokens[1:], where, text)
        left = (op, left, right)
    return left, tokens


def _unary(tokens, where, text):
    if not tokens:
        raise DagcError(f"{where}: size expression {text!r} ends too early")
    head, rest = tokens[0], tokens[1:]
    if head == "-":
        inner, rest = _unary(rest, where, text)
        return ("neg", inner), rest
    if head == "(":
        inner, rest = _sum(rest, where, text)
        if not rest or rest[0] != ")":
            raise DagcError(f"{where}: unbalanced parentheses in {text!r}")
        return inner, rest[1:]
    if head == "width":
        return ("width",), rest
    if head.isdigit():
        return ("num", int(head)), rest
    raise DagcError(f"{where}: unexpected {head!r} in size expression {text!r}")


def _value(tree: Expr, width: int | None, where: str) -> Fraction:
    kind = tree[0]
    if kind == "num":
        return Fraction(tree[1])
    if kind == "width":
        if width is None:
            raise DagcError(f"{where}: the size uses `width` but no width is set (file or --width)")
        return Fraction(width)
    if kind == "neg":
        return -_value(tree[1], width, where)
    left, right = _value(tree[1], width, where), _value(tree[2], width, where)
    if kind in ("/", "//") and right == 0:
        raise DagcError(f"{where}: division by zero in size expression")
    return {
        "+": lambda: left + right,
        "-": lambda: left - right,
        "*": lambda: left * right,
        "/": lambda: left / right,
        "//": lambda: Fraction(left // right),
    }[kind]()
