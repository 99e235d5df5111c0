"""The MOM grammar (mom.md 1.2): lists, bracket lists, curly blocks, parse errors."""

from __future__ import annotations

import pytest

from mom.errors import PolicyError
from mom.lexer import Token
from mom.parser import Form, parse, unparse


def shape(node):
    """:returns: a node as nested Python lists of token texts, for comparison."""
    if isinstance(node, Token):
        return node.text
    return [shape(item) for item in node]


def test_program_is_a_sequence_of_values():
    """A program is one or more values, atoms or lists, in order."""
    assert [shape(n) for n in parse('1 x "s" (a b)')] == ["1", "x", '"s"', ["a", "b"]]


def test_nested_lists():
    """Lists nest to any depth."""
    assert shape(parse("(a (b (c)) ())")[0]) == ["a", ["b", ["c"]], []]


def test_bracket_list_is_a_list():
    """``[...]`` parses to the same list as ``(...)``."""
    assert shape(parse("[+ 1 2]")[0]) == shape(parse("(+ 1 2)")[0])
    assert isinstance(parse("[x]")[0], list)


def test_curly_list_is_headed_by_eval():
    """``{a b}`` parses to a list headed by the symbol ``eval``."""
    [form] = parse("{a b}")
    assert shape(form) == ["eval", "a", "b"]
    assert form[0].kind == "symbol"


def test_empty_curly_list_is_just_eval():
    """``{}`` parses to the list holding ``eval`` alone."""
    assert shape(parse("{}")[0]) == ["eval"]


def test_form_remembers_bracket_and_line():
    """A form records its opening bracket and that bracket's line."""
    forms = parse("\n\n(a\n b) {c}")
    assert (forms[0].bracket, forms[0].line) == ("(", 3)
    assert (forms[1].bracket, forms[1].line) == ("{", 4)


@pytest.mark.parametrize(
    "text", ["(", ")", "(a", "a)", "(a))", "(]", "[)", "{)", "(a}", "((a)", "}"]
)
def test_unbalanced_or_mismatched_brackets_are_a_parse_error(text):
    """Unbalanced or mismatched brackets raise ``PolicyError("parse error")``."""
    with pytest.raises(PolicyError) as caught:
        parse(text)
    assert str(caught.value) == "parse error"


def test_parse_error_records_the_line():
    """A parse error keeps the message bare but records the offending line."""
    with pytest.raises(PolicyError) as caught:
        parse("(a)\n\n)")
    assert (str(caught.value), caught.value.line) == ("parse error", 3)


@pytest.mark.parametrize("text", ["", "  \n", "# only a comment\n", "@ (a)", "017"])
def test_program_without_tokens_is_an_empty_program_error(text):
    """A program with no tokens raises ``PolicyError("empty program")`` (MOM: IndexError)."""
    with pytest.raises(PolicyError) as caught:
        parse(text)
    assert str(caught.value) == "empty program"


def test_swallowed_closing_bracket_is_a_parse_error():
    """A bad character before a closing bracket swallows it, which then fails to parse."""
    with pytest.raises(PolicyError, match="^parse error$"):
        parse("(a @ b)")


def test_deep_nesting_parses_without_recursion():
    """Thousands of nested brackets parse (the parser keeps its own stack)."""
    depth = 5000
    [form] = parse("(" * depth + ")" * depth)
    assert isinstance(form, Form)


@pytest.mark.parametrize(
    "text", ['(if (< a 1) {(x "s") 2} [3 0x1F])', "{}", "(a {b {c}} [])", "-5 .5 'q'"]
)
def test_unparse_round_trips(text):
    """``unparse`` writes source that parses back to the same tree."""
    forms = parse(text)
    again = parse(" ".join(unparse(form) for form in forms))
    assert [shape(f) for f in again] == [shape(f) for f in forms]


def test_form_repr_shows_bracket_and_line():
    """A form's repr names its bracket and line, for debugging."""
    assert "bracket='('" in repr(parse("(a)")[0])
