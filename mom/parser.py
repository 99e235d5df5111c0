"""Pure: the MOM policy-language grammar, from tokens to a tree of ``Token`` and ``Form`` nodes.

The grammar is MOM's::

    program      ::= value+
    value        ::= number | symbol | string | operator | list | bracket_list | curly_list
    list         ::= '(' value* ')'
    bracket_list ::= '[' value* ']'        # the same thing as a list
    curly_list   ::= '{' value* '}'        # a list headed by the symbol ``eval`` (a progn)

A ``Form`` is a Python list of nodes (so code that is data, such as ``def`` parameter lists, can
be inspected as a list), which also remembers its bracket and the line of its opening bracket.
Any syntax error is ``PolicyError("parse error")``; MOM prints a SPARK diagnostic and raises that
same message. An input with no tokens at all, which makes MOM fail with an ``IndexError``, is
``PolicyError("empty program")`` here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import errors
from .lexer import CLOSERS, OPENERS, SYMBOL, Token, tokenize


class Form(list):
    """A parenthesised form: a list of nodes, plus where it came from.

    :ivar bracket: the opening bracket, ``(``, ``[`` or ``{``. A ``{`` form starts with the
        synthetic symbol ``eval`` the parser inserted.
    :ivar line: the line of the opening bracket, as MOM counts lines.
    """

    __slots__ = ("bracket", "line")

    def __init__(self, items: Iterable[Node] = (), *, bracket: str = "(", line: int = 0) -> None:
        super().__init__(items)
        self.bracket = bracket
        self.line = line

    def __repr__(self) -> str:
        return f"Form({list.__repr__(self)}, bracket={self.bracket!r}, line={self.line})"


Node = Token | Form


def parse_tokens(tokens: Sequence[Token]) -> list[Node]:
    """Build the forms of a program from its tokens.

    :param tokens: the output of ``tokenize``.
    :returns: the top-level values, in order (at least one).
    :raises PolicyError: ``parse error`` on unbalanced or mismatched brackets; ``empty program``
        when there are no tokens.
    """
    if not tokens:
        raise errors.empty_program()
    # An explicit stack instead of recursion, so that deep nesting cannot exhaust Python's.
    top: list[Node] = []
    open_forms: list[Form] = []
    for token in tokens:
        current: list[Node] = open_forms[-1] if open_forms else top
        if token.kind in OPENERS:
            form = Form(bracket=token.kind, line=token.line)
            if token.kind == "{":
                form.append(Token(SYMBOL, "eval", token.line))
            open_forms.append(form)
        elif token.kind in CLOSERS:
            if not open_forms or OPENERS[open_forms[-1].bracket] != token.kind:
                raise errors.parse_error(token.line)
            done = open_forms.pop()
            (open_forms[-1] if open_forms else top).append(done)
        else:
            current.append(token)
    if open_forms:
        raise errors.parse_error(tokens[-1].line)
    return top


def parse(text: str) -> list[Node]:
    """Scan and parse policy source, like MOM's ``Parser.get_code``.

    :param text: policy source.
    :returns: the top-level forms.
    :raises PolicyError: ``parse error`` or ``empty program``.
    """
    return parse_tokens(tokenize(text))


def unparse(node: Node) -> str:
    """Write a node back as source text that parses to an equal node.

    :param node: a token or form from ``parse``.
    :returns: the source, on one line; strings keep their quotes and escapes.
    """
    if isinstance(node, Token):
        return node.text
    items: Sequence[Node] = node
    if node.bracket == "{" and items and _is_eval(items[0]):
        items = items[1:]
    return node.bracket + " ".join(unparse(item) for item in items) + OPENERS[node.bracket]


def _is_eval(node: Node) -> bool:
    """Whether ``node`` is the ``eval`` symbol the parser puts at the head of a ``{}`` form."""
    return isinstance(node, Token) and node.kind == SYMBOL and node.text == "eval"


__all__ = ["Form", "Node", "parse", "parse_tokens", "unparse"]
