"""Property-based tests: whatever the input, scanning, parsing, evaluating and storing policies
fail with nothing but ``PolicyError``."""

from __future__ import annotations

import resource
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mom.entity import Entity
from mom.errors import PolicyError
from mom.evaluator import BUILTINS, Evaluator
from mom.lexer import tokenize
from mom.parser import parse, unparse
from mom.policy import PolicyStore

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Small numbers only: the language has no resource limits (neither has MOM), and large operands
# of ``<<`` or string ``*`` would make the tests allocate gigabytes; see also ``memory_cap``.
NUMBERS = "0 1 2 3 -1 -5 0.5 .5 -.5 1e2 100e-2 0x0A 0o7 0o9".split()
STRINGS = ['""', '"a"', "'b'", r'"c\"d"', '"12"']
SYMBOLS = [
    "x", "y", "f", "g", "nil", "True", "abs", "debug", "Host", "Guests", "guest", "items",
    "obj", "obj.attr", "obj.method", "Host.mem_free", "Host.nope", "Host.Control",
    "Host.StatAvg", "Host.Stat", "Host.Prop", "a.b.c", "eval", "undefined-thing",
]  # fmt: skip
OPERATORS = ["+", "-", "*", "/", "<", ">", "<=", ">=", "<<", ">>", "==", "!="]
HEADS = sorted(BUILTINS) + OPERATORS + SYMBOLS + ["1", '"s"']
JUNK = ["@", ";", "=", "!", "#", "# c\n", "017", "\\", "é", "'", '"']
TOKENS = ["(", ")", "[", "]", "{", "}"] + NUMBERS + STRINGS + SYMBOLS + OPERATORS + HEADS + JUNK

PRELUDE = "(def f (a) (+ a 1)) (def g () (g)) (defvar x 1) (defvar y 2.5)\n"


@pytest.fixture(autouse=True)
def memory_cap():
    """Cap this process's address space during each test, so a runaway allocation becomes a
    MemoryError (which the evaluator reports as a PolicyError) instead of exhausting the host."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    cap = pages * resource.getpagesize() + 1536 * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def variables() -> dict[str, object]:
    """:returns: fresh globals for a generated program: entities, a list, a plain object."""
    host = Entity({"name": "host"}, [{"mem_free": 10}, {"mem_free": 20}], ["mem_free", "swap"])
    guest = Entity({"uuid": "u", "name": "vm"}, [{"balloon_cur": 5}])
    return {
        "Host": host,
        "Guests": [guest],
        "guest": guest,
        "items": [1, 2, 3],
        "obj": SimpleNamespace(attr=3, method=lambda *args: len(args)),
    }


def assert_only_policy_errors(text: str) -> None:
    """Evaluate ``text``; any failure must be a PolicyError that is not an internal error."""
    try:
        Evaluator(variables(), on_debug=lambda values: None).eval_text(text)
    except PolicyError as error:
        assert not str(error).startswith("internal error"), str(error)


soups = st.lists(
    st.tuples(st.sampled_from(TOKENS), st.sampled_from([" ", "\n", "", "  \n "])), max_size=40
).map(lambda pairs: "".join(token + sep for token, sep in pairs))


def form_text(bracket: str, head: str, args: list[str]) -> str:
    """:returns: the source of one form."""
    closing = {"(": ")", "[": "]", "{": "}"}[bracket]
    return bracket + " ".join([head, *args]) + closing


atoms = st.sampled_from(NUMBERS + STRINGS + SYMBOLS + OPERATORS)
expressions = st.recursive(
    atoms,
    lambda children: st.builds(
        form_text,
        st.sampled_from(["(", "(", "(", "[", "{"]),
        # Mostly a simple head, sometimes a form (which MOM rejects): one in eight.
        st.tuples(st.integers(0, 7), st.sampled_from(HEADS), children).map(
            lambda choice: choice[2] if choice[0] == 0 else choice[1]
        ),
        st.lists(children, max_size=4),
    ),
    max_leaves=20,
)
programs = st.lists(expressions, min_size=1, max_size=5).map(" \n".join)


@SETTINGS
@given(st.text())
def test_scanner_never_fails_and_lines_never_decrease(text):
    """Any text scans; token line numbers start at 1 and never decrease."""
    lines = [token.line for token in tokenize(text)]
    assert lines == sorted(lines)
    assert all(line >= 1 for line in lines)


@SETTINGS
@given(st.text())
def test_arbitrary_text_fails_only_with_policy_error(text):
    """Evaluating arbitrary text fails, if at all, with a PolicyError."""
    assert_only_policy_errors(text)


@SETTINGS
@given(soups)
def test_token_soups_fail_only_with_policy_error(text):
    """Random sequences of the language's tokens fail, if at all, with a PolicyError."""
    assert_only_policy_errors(text)
    assert_only_policy_errors(PRELUDE + text)


@SETTINGS
@given(programs)
def test_well_formed_programs_fail_only_with_policy_error(text):
    """Random well-formed s-expressions over the built-ins fail, if at all, with a PolicyError."""
    assert_only_policy_errors(PRELUDE + text)


@SETTINGS
@given(programs)
def test_well_formed_programs_round_trip_through_unparse(text):
    """Parsing what ``unparse`` writes gives back the same program text."""
    try:
        forms = parse(text)
    except PolicyError:
        return  # a generated "'" or '"' can still swallow the rest
    written = " ".join(unparse(form) for form in forms)
    assert " ".join(unparse(form) for form in parse(written)) == written


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.one_of(st.none(), soups))))
def test_store_never_holds_an_unparseable_program(changes):
    """After any sequence of ``set_policy`` calls the stored program parses, and evaluation
    returns a boolean."""
    store = PolicyStore()
    for name, text in changes:
        before = store.named()
        if not store.set_policy(name, text):
            assert store.named() == before
        if store.named():
            parse(store.text())
    assert store.evaluate(Entity(), []) in (True, False)
