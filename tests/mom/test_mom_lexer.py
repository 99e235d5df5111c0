"""The MOM scanner (mom.md 1.1): rule order, numbers, strings, symbols, comments, line numbers."""

from __future__ import annotations

import pytest

from mom.lexer import RULES, Token, tokenize


def kinds(text: str) -> list[tuple[str, str]]:
    """:returns: (kind, text) of each token of ``text``."""
    return [(token.kind, token.text) for token in tokenize(text)]


def test_rule_order_is_moms_alphabetical_order_with_default_last():
    """The alternation tries the rules in MOM's order: alphabetical by method name, default last."""
    names = [name for name, _ in RULES]
    assert names[-1] == "default"
    assert names[:-1] == sorted(names[:-1])


@pytest.mark.parametrize("bracket", list("(){}[]"))
def test_brackets_are_their_own_kind(bracket):
    """Each bracket character is a token whose kind is the character itself."""
    assert kinds(bracket) == [(bracket, bracket)]


@pytest.mark.parametrize(
    "text, numtype",
    [
        ("0", "integer"),
        ("42", "integer"),
        ("-5", "integer"),
        ("-0", "integer"),
        ("0x1F", "hex"),
        ("0XaB", "hex"),
        ("0o17", "octal"),
        ("0o9", "octal"),
        ("1.5", "float"),
        (".3", "float"),
        ("-.5", "float"),
        ("10.0e3", "float"),
        ("00.5", "float"),
        ("0123.5", "float"),
        ("1.5E-3", "float"),
        ("100e-2", "float"),
        ("1e3", "float"),
        ("-2E+4", "float"),
        ("0e5", "float"),
    ],
)
def test_numbers_lex_as_one_number_token_of_their_type(text, numtype):
    """Integers, hex, lower-case octal, floats and exponent forms each lex as one number token."""
    [token] = tokenize(text)
    assert (token.kind, token.text, token.numtype) == ("number", text, numtype)


def test_negative_number_is_one_token_but_spaced_minus_is_an_operator():
    """``-5`` is a single number, while ``- 5`` is the operator then a number."""
    assert kinds("-5") == [("number", "-5")]
    assert kinds("- 5") == [("operator", "-"), ("number", "5")]


def test_minus_between_numbers_starts_a_negative_number():
    """``5-3`` lexes as the numbers 5 and -3 (first match wins, not an infix minus)."""
    assert kinds("5-3") == [("number", "5"), ("number", "-3")]


def test_digits_followed_by_letters_split_into_number_and_symbol():
    """``125f56`` lexes as the number 125 followed by the symbol ``f56``."""
    assert kinds("125f56") == [("number", "125"), ("symbol", "f56")]


def test_no_unit_suffixes():
    """``1G`` is a number and a symbol: the language has no memory units."""
    assert kinds("1G") == [("number", "1"), ("symbol", "G")]


def test_upper_case_octal_prefix_is_zero_then_symbol():
    """Only a lower-case ``0o`` starts an octal; ``0O17`` is 0 then the symbol ``O17``."""
    assert kinds("0O17") == [("number", "0"), ("symbol", "O17")]


def test_leading_zero_integer_swallows_the_rest():
    """``017`` matches no number rule, so the default rule swallows everything from there on."""
    assert tokenize("017") == []
    assert kinds("1 017 2") == [("number", "1")]


def test_trailing_dot_number_swallows_the_rest():
    """``1.`` is the integer 1 followed by a ``.`` that swallows the rest of the input."""
    assert kinds("1. 2") == [("number", "1")]


def test_exponent_letter_alone_is_a_symbol():
    """``e3`` is a symbol, not a number."""
    assert kinds("e3") == [("symbol", "e3")]


@pytest.mark.parametrize("text", ["a-b", "Host.mem_free", "_x", "guest.io_tune", "a.b.c", "x-1.y"])
def test_symbols_may_contain_dashes_and_dots(text):
    """A symbol starts with a letter or underscore and may hold letters, digits, ``_ - .``."""
    assert kinds(text) == [("symbol", text)]


@pytest.mark.parametrize("word", ["and", "or", "not", "min", "max", "null", "valid", "nil"])
def test_word_operators_are_symbols(word):
    """``and``, ``or``, ``not``... lex as symbols, because the symbol rule comes first."""
    assert kinds(word) == [("symbol", word)]


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "<", ">", "<=", ">=", "<<", ">>", "==", "!="])
def test_operators(op):
    """Each punctuation operator lexes as one operator token, longest first."""
    assert kinds(op) == [("operator", op)]


def test_lone_equals_or_bang_swallows_the_rest():
    """``=`` and ``!`` alone are no operator: the default rule swallows the rest of the input."""
    assert kinds("1 = 2") == [("number", "1")]
    assert kinds("1 ! 2") == [("number", "1")]
    assert kinds("=== 1") == [("operator", "==")]


def test_unknown_character_swallows_the_rest_of_the_input():
    """``1 2 @ 3 4`` lexes as 1 and 2 only; ``;`` does the same."""
    assert kinds("1 2 @ 3 4") == [("number", "1"), ("number", "2")]
    assert kinds("(a) ; (b)") == [("(", "("), ("symbol", "a"), (")", ")")]


def test_non_ascii_letter_swallows_the_rest():
    """Symbols are ASCII only: a non-ASCII letter ends the input."""
    assert kinds("a é b") == [("symbol", "a")]


def test_double_quoted_string_keeps_escapes():
    """A string keeps its escapes verbatim: ``"a\\"b"`` has the value ``a\\"b``."""
    [token] = tokenize(r'"a\"b"')
    assert token.kind == "string"
    assert token.value == r"a\"b"


def test_single_quoted_string():
    """Single-quoted strings are strings too (VDSM writes parameters with Python ``repr``)."""
    [token] = tokenize(r"'it\'s'")
    assert (token.kind, token.value) == ("string", r"it\'s")


def test_string_may_span_lines_without_counting_them():
    """A newline inside a string is part of it and does not advance the line number."""
    tokens = tokenize('"a\nb" x')
    assert tokens[0].value == "a\nb"
    assert tokens[1].line == 1


def test_unterminated_string_swallows_the_rest():
    """An unterminated string matches no rule, so the default rule swallows it and the rest."""
    assert kinds('x "abc') == [("symbol", "x")]


def test_comment_is_dropped():
    """A ``#`` comment up to its newline is dropped."""
    assert kinds("1 # two\n3") == [("number", "1"), ("number", "3")]


def test_comment_newline_is_not_counted():
    """A comment's newline does not advance the line counter, so later lines shift by one."""
    tokens = tokenize("# first\n# second\nx\ny")
    assert [(t.text, t.line) for t in tokens] == [("x", 1), ("y", 2)]


def test_comment_without_final_newline_swallows_the_rest():
    """A comment at the very end without a newline is no comment token; it is swallowed anyway."""
    assert kinds("x # end") == [("symbol", "x")]


def test_line_numbers_count_newlines_in_whitespace():
    """Line numbers start at 1 and count the newlines of whitespace."""
    tokens = tokenize("a\n\n b\r\n\tc")
    assert [(t.text, t.line) for t in tokens] == [("a", 1), ("b", 3), ("c", 4)]


def test_empty_input_has_no_tokens():
    """Empty and blank input give no tokens."""
    assert tokenize("") == []
    assert tokenize(" \n\t") == []


def test_token_value_of_non_string_is_its_text():
    """A non-string token's value is its text."""
    assert Token("symbol", "x", 1).value == "x"


def test_long_digit_run_lexes_quickly():
    """A long run of digits does not make the float rule backtrack exponentially."""
    text = "1" * 5000 + "x"
    assert kinds(text) == [("number", "1" * 5000), ("symbol", "x")]
