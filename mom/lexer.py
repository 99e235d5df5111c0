"""Pure: the MOM policy-language scanner, token for token as MOM's SPARK scanner cuts its input.

MOM builds one regular-expression alternation out of its ``t_*`` methods in *alphabetical* order,
with ``t_default`` last, and Python's ``re`` takes the first alternative that matches rather than
the longest. That order is therefore part of the language, and ``RULES`` below keeps it. Its
consequences are deliberate here:

- ``-5`` is one number token; ``(- 5)`` needs the space.
- Symbols may hold ``-`` and ``.`` (``a-b``, ``Host.mem_free``); ``e3`` is a symbol.
- ``0o17`` is octal (lower-case ``o`` only), ``017`` and ``0o`` lex as nothing useful.
- A character that no rule accepts (``@``, ``;``, ``=``) silently swallows the rest of the input.
- A ``#`` comment eats its newline, and that newline is not counted: each comment line shifts
  the line numbers of everything after it by one, exactly as MOM reports them.
- String escapes are kept verbatim (``"a\\"b"`` is the four characters ``a\\"b``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Token kinds. The brackets are their own kinds, as in MOM.
NUMBER = "number"
STRING = "string"
SYMBOL = "symbol"
OPERATOR = "operator"
OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = frozenset(OPENERS.values())

# The operators MOM's scanner accepts, longest first so that "<=" is not read as "<" then "=".
# MOM also lists and/or/not/min/max/null/valid there, but the symbol rule always takes those
# first, so they can never come out as operators and are left out.
OPERATORS = ("<=", ">=", "<<", ">>", "==", "!=", "+", "-", "*", "/", "<", ">")

# (rule name, pattern) in MOM's alternation order. The float pattern is MOM's
# ``-?(0|([1-9][0-9]*))*(\.[0-9]+)...`` rewritten without the nested repetition: the group
# matches exactly the strings of digits, and the rewrite avoids exponential backtracking on a
# long run of digits that has no dot after it.
RULES: tuple[tuple[str, str], ...] = (
    ("builtin_op", r"[(){}\[\]]"),
    ("float", r"-?[0-9]*\.[0-9]+(?:[Ee][+-]?[0-9]+)?"),
    ("hex", r"0[Xx][0-9A-Fa-f]+"),
    ("integer", r"-?(?:0(?![0-9oXx])|[1-9][0-9]*)(?![0-9eE])"),
    ("integer_with_exponent", r"-?(?:0(?![0-9oXx])|[1-9][0-9]*)[Ee][+-]?[0-9]+"),
    ("octal", r"0o[0-9]+"),
    ("pound_comment", r"\#.*?\n"),
    ("single_quote_string", r"'(?:[^'\\]|\\.)*'"),
    ("string", r'"(?:[^"\\]|\\.)*"'),
    ("symbol", r"[A-Za-z_][A-Za-z0-9_\-.]*"),
    ("user_op", "|".join(re.escape(op) for op in OPERATORS)),
    ("whitespace", r"\s+"),
    ("default", r"[\s\S]+"),
)

_SCANNER = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in RULES))

# How a number token is turned into a value: int(text, 0) or float(text).
_NUMBER_TYPES = {
    "float": "float",
    "integer_with_exponent": "float",  # Python reads exponents only as floats: 100e-2 is 1.0
    "integer": "integer",
    "hex": "hex",
    "octal": "octal",
}


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind, its source text, the line MOM would report, and a number's type.

    :ivar kind: ``number``, ``string``, ``symbol``, ``operator``, or a bracket character.
    :ivar text: the source text; for strings it still has its quotes (see ``value``).
    :ivar line: the line number as MOM counts it (comment newlines are not counted).
    :ivar numtype: for numbers, ``integer``, ``hex``, ``octal`` or ``float``; otherwise None.
    """

    kind: str
    text: str
    line: int
    numtype: str | None = None

    @property
    def value(self) -> str:
        """The token's text, without the quotes for a string (escapes stay as written)."""
        if self.kind == STRING:
            return self.text[1:-1]
        return self.text

    def __repr__(self) -> str:
        return f"Token({self.kind!r}, {self.text!r}, line={self.line})"


def tokenize(text: str) -> list[Token]:
    """Cut ``text`` into tokens the way MOM's scanner does; never fails.

    :param text: policy source.
    :returns: the tokens in order; comments and whitespace are dropped, and everything from the
        first character no rule accepts to the end of the input is dropped too.
    """
    tokens: list[Token] = []
    line = 1
    pos = 0
    end = len(text)
    while pos < end:
        match = _SCANNER.match(text, pos)
        assert match is not None  # the default rule matches any non-empty rest
        rule = match.lastgroup
        piece = match.group()
        pos = match.end()
        if rule == "default":
            break
        if rule == "whitespace":
            line += piece.count("\n")
        elif rule == "builtin_op":
            tokens.append(Token(piece, piece, line))
        elif rule in _NUMBER_TYPES:
            tokens.append(Token(NUMBER, piece, line, _NUMBER_TYPES[rule]))
        elif rule in ("string", "single_quote_string"):
            tokens.append(Token(STRING, piece, line))
        elif rule == "symbol":
            tokens.append(Token(SYMBOL, piece, line))
        elif rule == "user_op":
            tokens.append(Token(OPERATOR, piece, line))
        # pound_comment: dropped, and its newline deliberately not counted.
    return tokens
