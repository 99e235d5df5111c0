"""Error messages (mom.md 1.4): MOM's exact strings and line numbers, and our documented
differences where MOM lets a Python exception escape."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mom.entity import Entity
from mom.errors import DIFFERENCES, PolicyError
from mom.evaluator import evaluate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "mom-language.md"


def error_of(text: str, **variables) -> PolicyError:
    """:returns: the PolicyError evaluating ``text`` raises."""
    with pytest.raises(PolicyError) as caught:
        evaluate(text, variables)
    return caught.value


# --- MOM's messages, exactly ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("\n(not)", "arity mismatch in doc parsing of 'c_not' on line 2"),
        ("\n(- 5)", "arity mismatch in doc parsing of 'c_sub' on line 2"),
        ("\n(if 1 2)", "arity mismatch in doc parsing of 'c_if' on line 2"),
        ("(+ 1 2 3)", "arity mismatch in doc parsing of 'c_add' on line 1"),
        ("(/ 1)", "arity mismatch in doc parsing of 'c_div' on line 1"),
        ("(def f)", "arity mismatch in doc parsing of 'c_def' on line 1"),
        ("(defun f (x))", "arity mismatch in doc parsing of 'c_def' on line 1"),
        ("(set x)", "arity mismatch in doc parsing of 'c_set' on line 1"),
        ("(setq x 1 2)", "arity mismatch in doc parsing of 'c_set' on line 1"),
        ("(defvar x)", "arity mismatch in doc parsing of 'c_defvar' on line 1"),
        ("(with Guests g)", "arity mismatch in doc parsing of 'c_with' on line 1"),
        ("(not 1 2)", "arity mismatch in doc parsing of 'c_not' on line 1"),
    ],
)
def test_fixed_arity_mismatch(text, message):
    """A fixed-arity built-in with the wrong argument count names MOM's method and the line."""
    assert str(error_of(text)) == message


@pytest.mark.parametrize(
    "text, message",
    [
        ("\n(and)", "not enough arguments for 'c_and' on line 2"),
        ("(or)", "not enough arguments for 'c_or' on line 1"),
        ("(min)", "not enough arguments for 'c_min' on line 1"),
        ("(max)", "not enough arguments for 'c_max' on line 1"),
        ("(let ((x 1)))", "not enough arguments for 'c_let' on line 1"),
        ("(let)", "not enough arguments for 'c_let' on line 1"),
    ],
)
def test_variadic_too_few_arguments(text, message):
    """A variadic built-in below its minimum reports ``not enough arguments``."""
    assert str(error_of(text)) == message


@pytest.mark.parametrize(
    "text",
    ["\n\n(with 5 g 1)", "\n\n(with Guests 5 1)", "\n\n(defvar (x) 1)", '\n\n(set "x" 1)',
     "\n\n(def 3 () 1)", "\n\n(with Guests (g) 1)", "\n\n(setq + 1)"],
)  # fmt: skip
def test_symbol_slot_not_a_symbol_is_malformed(text):
    """A non-symbol where a built-in wants a symbol is ``malformed expression on line N``."""
    assert str(error_of(text, Guests=[])) == "malformed expression on line 3"


def test_undefined_symbol_with_line():
    """Reading an undefined variable names it and its line, after a comment that shifts lines."""
    text = "(defvar a 1)\n# a comment line\n(defvar b 2)\n\n(+ a f56)"
    assert str(error_of(text)) == "undefined symbol f56 on line 4"


def test_undefined_symbol_keeps_the_dotted_name():
    """An undefined dotted name is reported whole."""
    assert str(error_of("\nHost.nope", Host=SimpleNamespace())) == (
        "undefined symbol Host.nope on line 2"
    )


def test_set_of_undefined_symbol_has_no_line():
    """``set``/``setq`` of an undefined name reports it without a line, as MOM does."""
    error = error_of("\n\n(set x 1)")
    assert str(error) == "undefined symbol x"
    assert error.line == 3
    assert str(error_of("(setq y 1)")) == "undefined symbol y"


def test_user_function_arity():
    """A user function called with the wrong argument count reports its name and line."""
    text = "(def test (a b) (+ a b))\n\n\n(test 1)"
    assert str(error_of(text)) == 'Function "test" invoked with incorrect arity on line 4'


def test_comment_lines_shift_reported_lines():
    """Each comment line makes MOM report one line less for what follows, and so do we."""
    text = "# one\n# two\n# three\n(not)"
    assert str(error_of(text)) == "arity mismatch in doc parsing of 'c_not' on line 1"


@pytest.mark.parametrize("text", ["(", ")", "(a", "(a))", "{(]}"])
def test_parse_error(text):
    """Bracket errors are exactly ``parse error``."""
    assert str(error_of(text)) == "parse error"


@pytest.mark.parametrize(
    "text, message",
    [
        ("(let 5 1)", "Expecting list as arg 1 in let"),
        ("(let x 1)", "Expecting list as arg 1 in let"),
        ("(let (5) 1)", "Expecting list of tuples in arg1 of let"),
        ("(let ((x)) 1)", "Expecting list of tuples in arg1 of let"),
        ("(let ((x 1 2)) 1)", "Expecting list of tuples in arg1 of let"),
        ("(let ((5 1)) 1)", "Expecting list of (symbol value) in let"),
        ('(let (("x" 1)) 1)', "Expecting list of (symbol value) in let"),
        ("(let ((+ 1)) 1)", "Expecting list of (symbol value) in let"),
    ],
)
def test_bad_let_shapes(text, message):
    """The three ``let`` shape errors, with no line, as in MOM."""
    assert str(error_of(text)) == message


def test_user_function_with_non_symbol_parameter_is_a_let_error():
    """A call of ``(def f (1) ...)`` fails in the ``let`` it expands to."""
    text = "(def f (1) 0) (f 2)"
    assert str(error_of(text)) == "Expecting list of (symbol value) in let"


def test_operator_token_as_value():
    """An operator evaluated as a value is an unexpected token, with its line."""
    assert str(error_of("\n(max 1 +)")) == 'Unexpected token type "operator" on line 2'


@pytest.mark.parametrize(
    "text, kind", [("\n(1 2)", "number"), ('\n("f" 1)', "string"), ("\n(0x1 2)", "number")]
)
def test_number_or_string_head(text, kind):
    """A form headed by a number or a string reports the head's kind and line."""
    assert str(error_of(text)) == f'Unexpected token type in arg 1 "{kind}" on line 2'


def test_list_head():
    """A form headed by a form is ``Expected simple token as arg 1``, without a line."""
    error = error_of("\n((f) 1)")
    assert str(error) == "Expected simple token as arg 1"
    assert error.line == 2


def test_error_inside_a_function_reports_the_inner_line():
    """An error deep inside a function reports the line of the failing form."""
    text = "(def f (x)\n  {\n    (not)\n  })\n(f 1)"
    assert str(error_of(text)) == "arity mismatch in doc parsing of 'c_not' on line 3"


# --- our messages where MOM raises Python exceptions ---------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("\n(f 1)", 'undefined function "f" on line 2'),
        ("\n()", "empty expression on line 2"),
        ("\n[]", "empty expression on line 2"),
        ("\n{}", "empty block on line 2"),
        ("\n(eval)", "empty block on line 2"),
        ("\n0o9", "invalid number 0o9 on line 2"),
        ("\n(with nothing g 1)", "undefined symbol nothing on line 2"),
        ("\n(def f x 1) (f 2)", 'Function "f" has a malformed parameter list on line 2'),
        ("(let (((a) 1)) a)", "Expecting list of (symbol value) in let"),
        ("(nil)", 'undefined function "nil" on line 1'),
    ],
)
def test_replacements_for_python_exceptions(text, message):
    """Where MOM raises KeyError, IndexError, ValueError or TypeError, we raise PolicyError."""
    assert str(error_of(text)) == message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "017", "   "])
def test_empty_program(text):
    """A program with no tokens is ``empty program`` (MOM: IndexError)."""
    assert str(error_of(text)) == "empty program"


def test_huge_integer_is_an_invalid_number():
    """An integer over Python's digit limit is an invalid number, not a ValueError."""
    assert str(error_of("9" * 5000)).startswith("invalid number 999")


@pytest.mark.parametrize(
    "text, message",
    [
        ("\n(/ 1 0)", 'error in "/" on line 2: ZeroDivisionError: division by zero'),
        (
            '\n(+ 1 "a")',
            "error in \"+\" on line 2: TypeError: unsupported operand type(s) for +: "
            "'int' and 'str'",
        ),
        ("\n(<< 1 -1)", 'error in "<<" on line 2: ValueError: negative shift count'),
        ("\n(x 1)", "error in \"x\" on line 2: TypeError: 'int' object is not callable"),
        (
            "\n(with x g 1)",
            "error in \"with\" on line 2: TypeError: 'int' object is not iterable",
        ),
        ("\n(debug)", 'error in "debug" on line 2: IndexError: tuple index out of range'),
        ("\n(abs)", 'error in "abs" on line 2: TypeError: abs() takes exactly one argument '
         "(0 given)"),
        ('\n(min 1 "a")', "error in \"min\" on line 2: TypeError: '<' not supported between "
         "instances of 'str' and 'int'"),
    ],
)  # fmt: skip
def test_python_exceptions_become_policy_errors(text, message):
    """A Python exception inside an operation becomes ``error in "HEAD" on line N: ...``."""
    assert str(error_of(text, x=1)) == message


def test_entity_errors_become_policy_errors():
    """An Entity method failing (undeclared field, missing property) becomes a PolicyError."""
    host = Entity({}, [{"mem_free": 1}])
    assert str(error_of('\n(Host.Stat "nope")', Host=host)) == (
        "error in \"Host.Stat\" on line 2: EntityError: Field 'nope' is not declared in any "
        "collector."
    )
    assert str(error_of('(Host.StatAvg "nope")', Host=host)).startswith('error in "Host.StatAvg"')
    assert "Property 'name' is not set" in str(error_of('(Host.Prop "name")', Host=host))


def test_attribute_read_raising_becomes_a_policy_error():
    """An attribute whose read raises something else than AttributeError becomes a PolicyError."""

    class Broken:
        @property
        def value(self):
            raise KeyError("inner")

    assert str(error_of("\nobj.value", obj=Broken())) == (
        "error in \"obj.value\" on line 2: KeyError: 'inner'"
    )
    assert str(error_of("\n(obj.value)", obj=Broken())).startswith('error in "obj.value" on line 2')


def test_runaway_recursion():
    """Endless recursion is a PolicyError, not a RecursionError."""
    message = "maximum recursion depth exceeded while evaluating the policy"
    assert str(error_of("(def f () (f)) (f)")) == message


def test_too_deep_nesting():
    """Nesting deeper than Python's stack is a PolicyError."""
    depth = 3000
    assert "recursion" in str(error_of("(not " * depth + "1" + ")" * depth))


def test_python_callable_raising_policy_error_passes_through():
    """A PolicyError raised by a callable the policy calls is not rewrapped."""

    def strict(value):
        raise PolicyError("mine")

    assert str(error_of("(strict 1)", strict=strict)) == "mine"


# --- the documented list -------------------------------------------------------------------------


def test_every_difference_is_in_the_docs():
    """Each difference's message appears in docs/mom-language.md, for policy authors."""
    docs = DOCS.read_text(encoding="utf-8")
    for difference in DIFFERENCES:
        assert difference.ours in docs, difference


def test_difference_examples_are_what_we_raise():
    """The example messages of the differences list are the messages we actually raise."""
    examples = {
        "(f 1)": 'undefined function "f" on line 1',
        "()": "empty expression on line 1",
        "{}": "empty block on line 1",
        "0o9": "invalid number 0o9 on line 1",
        "(with LIST v 1)": "undefined symbol LIST on line 1",
        "(/ 1 0)": 'error in "/" on line 1: ZeroDivisionError: division by zero',
        "(def f x 1) (f 2)": 'Function "f" has a malformed parameter list on line 1',
    }
    ours = {difference.ours for difference in DIFFERENCES}
    for text, message in examples.items():
        assert message in ours
        assert str(error_of(text)) == message


def test_policy_error_str_is_the_bare_message():
    """``str(PolicyError)`` is the message alone; the line is an attribute."""
    error = PolicyError("parse error", line=4)
    assert (str(error), error.message, error.line) == ("parse error", "parse error", 4)
