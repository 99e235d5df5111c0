"""Pure: ``PolicyError``, the one exception the policy language raises, and its messages.

The messages of MOM's section 1.4 are reproduced character for character (administrators and
tests grep logs for them), including their inconsistencies: ``set`` of an unknown name reports
no line, ``Expected simple token as arg 1`` has none either, and arity errors name MOM's Python
method (``c_not``, and ``c_def``/``c_set`` for the ``defun``/``setq`` aliases).

Where MOM lets a raw Python exception escape (``KeyError``, ``IndexError``, ``TypeError``,
``ZeroDivisionError``, ``ValueError``...), we raise ``PolicyError`` with a message of our own.
``DIFFERENCES`` lists every such case; ``docs/mom-language.md`` repeats it for policy authors.
"""

from __future__ import annotations

from typing import NamedTuple


class PolicyError(Exception):
    """A policy could not be parsed or evaluated.

    ``str(error)`` is the message alone, exactly as MOM words it.

    :ivar message: the message.
    :ivar line: the line the error belongs to, when known (also for messages that, as in MOM,
        do not mention it).
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return self.message


# --- MOM's own messages (section 1.4) ------------------------------------------------------------

LET_NOT_A_LIST = "Expecting list as arg 1 in let"
LET_NOT_PAIRS = "Expecting list of tuples in arg1 of let"
LET_NOT_SYMBOL = "Expecting list of (symbol value) in let"


def parse_error(line: int | None = None) -> PolicyError:
    """:returns: the error for unbalanced or mismatched brackets."""
    return PolicyError("parse error", line=line)


def arity_mismatch(function: str, line: int) -> PolicyError:
    """:returns: the error for a fixed-arity built-in called with the wrong number of args."""
    return PolicyError(f"arity mismatch in doc parsing of '{function}' on line {line}", line=line)


def not_enough_arguments(function: str, line: int) -> PolicyError:
    """:returns: the error for a variadic built-in called with too few args."""
    return PolicyError(f"not enough arguments for '{function}' on line {line}", line=line)


def malformed_expression(line: int) -> PolicyError:
    """:returns: the error for a non-symbol where a built-in wants a symbol."""
    return PolicyError(f"malformed expression on line {line}", line=line)


def undefined_symbol(name: str, line: int) -> PolicyError:
    """:returns: the error for reading a variable that no scope holds."""
    return PolicyError(f"undefined symbol {name} on line {line}", line=line)


def undefined_assignment(name: str, line: int | None = None) -> PolicyError:
    """:returns: the error for ``set``/``setq`` of a name no scope holds (MOM gives no line)."""
    return PolicyError(f"undefined symbol {name}", line=line)


def function_arity(name: str, line: int) -> PolicyError:
    """:returns: the error for a user function called with the wrong number of args."""
    return PolicyError(f'Function "{name}" invoked with incorrect arity on line {line}', line=line)


def unexpected_token(kind: str, line: int) -> PolicyError:
    """:returns: the error for evaluating an operator token as a value."""
    return PolicyError(f'Unexpected token type "{kind}" on line {line}', line=line)


def unexpected_head(kind: str, line: int) -> PolicyError:
    """:returns: the error for a form headed by a number or a string."""
    return PolicyError(f'Unexpected token type in arg 1 "{kind}" on line {line}', line=line)


def expected_simple_token(line: int | None = None) -> PolicyError:
    """:returns: the error for a form headed by another form (MOM gives no line)."""
    return PolicyError("Expected simple token as arg 1", line=line)


def bad_let(message: str, line: int | None = None) -> PolicyError:
    """:returns: one of the three ``let`` shape errors (``LET_*``), which carry no line."""
    return PolicyError(message, line=line)


# --- Our messages where MOM lets a Python exception escape ---------------------------------------


def empty_program() -> PolicyError:
    """:returns: the error for a program with no tokens (MOM: ``IndexError``)."""
    return PolicyError("empty program")


def empty_expression(line: int) -> PolicyError:
    """:returns: the error for evaluating ``()`` or ``[]`` (MOM: ``IndexError``)."""
    return PolicyError(f"empty expression on line {line}", line=line)


def empty_block(line: int) -> PolicyError:
    """:returns: the error for evaluating ``{}`` or ``(eval)`` (MOM: ``IndexError``)."""
    return PolicyError(f"empty block on line {line}", line=line)


def undefined_function(name: str, line: int) -> PolicyError:
    """:returns: the error for calling a name that is no variable, built-in or function
    (MOM: ``KeyError``)."""
    return PolicyError(f'undefined function "{name}" on line {line}', line=line)


def invalid_number(text: str, line: int) -> PolicyError:
    """:returns: the error for a number token Python cannot read, such as ``0o9``
    (MOM: ``ValueError``)."""
    return PolicyError(f"invalid number {text} on line {line}", line=line)


def bad_parameters(name: str, line: int) -> PolicyError:
    """:returns: the error for calling a function whose ``def`` parameters are not a list
    (MOM: ``TypeError``)."""
    message = f'Function "{name}" has a malformed parameter list on line {line}'
    return PolicyError(message, line=line)


def too_deep() -> PolicyError:
    """:returns: the error for runaway recursion or too deep nesting (MOM: ``RecursionError``)."""
    return PolicyError("maximum recursion depth exceeded while evaluating the policy")


def python_error(where: str, line: int, exc: BaseException) -> PolicyError:
    """Wrap a Python exception raised by an operation of the policy.

    :param where: the form's head as written (``/``, ``guest.Control``) or the symbol read.
    :param line: the form's line.
    :param exc: what Python raised (MOM lets it escape as it is).
    :returns: ``error in "WHERE" on line N: TYPE: TEXT``.
    """
    detail = type(exc).__name__
    if str(exc):
        detail = f"{detail}: {exc}"
    return PolicyError(f'error in "{where}" on line {line}: {detail}', line=line)


class Difference(NamedTuple):
    """One place where we raise ``PolicyError`` and MOM does something else."""

    situation: str
    mom: str
    ours: str


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "Calling an unknown function: `(f 1)` with no variable, built-in or `def` named f",
        "KeyError: 'f'",
        'undefined function "f" on line 1',
    ),
    Difference("Evaluating `()` or `[]`", "IndexError", "empty expression on line 1"),
    Difference("Evaluating `{}` or `(eval)`", "IndexError", "empty block on line 1"),
    Difference(
        "A program with no tokens: empty, blank, comment-only, or starting with a character "
        "no rule accepts",
        "IndexError",
        "empty program",
    ),
    Difference(
        "A number Python cannot read: `0o9`, or an integer over Python's 4300-digit limit",
        "ValueError",
        "invalid number 0o9 on line 1",
    ),
    Difference(
        "`(with LIST var expr)` where LIST is undefined",
        "TypeError (MOM formats the line number of None with %d)",
        "undefined symbol LIST on line 1",
    ),
    Difference(
        'A Python exception inside an operation: `(/ 1 0)`, `(+ 1 "a")`, `(<< 1 -1)`, '
        "calling a non-callable variable, `(with x v ...)` over a non-list, an Entity method "
        'failing (`(Host.Stat "nope")`, `(guest.Prop "nope")`), an attribute read raising',
        "the exception escapes as it is (ZeroDivisionError, TypeError, ValueError, KeyError...)",
        'error in "/" on line 1: ZeroDivisionError: division by zero',
    ),
    Difference(
        "Runaway recursion (`(def f () (f)) (f)`) or nesting deeper than Python's stack",
        "RecursionError",
        "maximum recursion depth exceeded while evaluating the policy",
    ),
    Difference(
        "Calling a function whose `def` parameters are not a list: `(def f x 1) (f 2)`",
        "TypeError: object of type 'Token' has no len()",
        'Function "f" has a malformed parameter list on line 1',
    ),
    Difference(
        "A `let` binding whose name is a list: `(let (((a) 1)) a)`",
        "AttributeError: 'list' object has no attribute 'kind'",
        LET_NOT_SYMBOL,
    ),
    Difference(
        "A form headed by a form: `((f) 1)`",
        "PolicyError, after printing the form to stdout",
        "Expected simple token as arg 1 (nothing printed)",
    ),
    Difference(
        "PolicyStore.set_policy with a text that makes the whole set fail with a raw exception "
        "(a comment-only policy stored alone)",
        "the exception escapes and the broken text stays stored, so every evaluation fails",
        "set_policy returns False and keeps the previous texts (the error is logged)",
    ),
)
