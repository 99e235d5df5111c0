"""The MOM evaluator (mom.md 1.3): atoms, resolution order, built-ins, scoping, calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from mom.errors import PolicyError
from mom.evaluator import BUILTINS, Evaluator, evaluate


def last(text: str, **variables):
    """:returns: the value of the last top-level form of ``text``."""
    return evaluate(text, variables)[-1]


# --- atoms -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("42", 42),
        ("-5", -5),
        ("0x1F", 31),
        ("0o17", 15),
        ("1.5", 1.5),
        (".5", 0.5),
        ("100e-2", 1.0),
        ("1e3", 1000.0),
    ],
)
def test_numbers(text, value):
    """Integers, hex and octal read with ``int(text, 0)``; floats and exponents as floats."""
    result = last(text)
    assert result == value and type(result) is type(value)


def test_strings_are_their_text_without_quotes_or_unescaping():
    """A string evaluates to its text between the quotes, escapes untouched."""
    assert last(r'"a\"b"') == r"a\"b"
    assert last("'x'") == "x"


def test_nil_is_none():
    """``nil`` is the only literal symbol and evaluates to None."""
    assert last("nil") is None


def test_true_and_false_are_not_built_in():
    """``True``/``False`` exist only once a policy defines them, as VDSM's 00-defines does."""
    with pytest.raises(PolicyError, match="^undefined symbol True on line 1$"):
        last("True")
    assert evaluate("(defvar False 0) (defvar True 1) (== True 1) False") == [0, 1, True, 0]


def test_symbol_reads_a_variable():
    """A symbol evaluates to the variable it names."""
    assert last("x", x=7) == 7


# --- dotted names ------------------------------------------------------------------------------


def test_dotted_symbol_reads_an_attribute():
    """``a.b`` reads attribute ``b`` of variable ``a``."""
    assert last("obj.size", obj=SimpleNamespace(size=3)) == 3


def test_only_the_first_two_parts_of_a_dotted_name_count():
    """``a.b.c`` is ``a.b``: MOM uses only the first two parts of a dotted name."""
    inner = SimpleNamespace(c=1)
    assert last("a.b.c", a=SimpleNamespace(b=inner)) is inner


def test_missing_attribute_continues_in_outer_scopes():
    """An ``a`` without attribute ``b`` does not stop the search for ``a.b`` outwards."""
    outer = SimpleNamespace(b="outer")
    assert last("(let ((a 5)) a.b)", a=outer) == "outer"


def test_missing_attribute_everywhere_is_undefined():
    """``a.b`` with no ``a`` having ``b`` is an undefined symbol, named in full."""
    with pytest.raises(PolicyError, match="^undefined symbol a.nope on line 1$"):
        last("a.nope", a=SimpleNamespace())


def test_method_call_on_a_plain_python_object():
    """A dotted head calls a method of a plain Python object with evaluated arguments."""
    calls = []
    obj = SimpleNamespace(record=lambda *args: calls.append(args) or len(calls))
    assert last('(obj.record 1 (+ 1 1) "x")', obj=obj) == 1
    assert calls == [(1, 2, "x")]


# --- resolution order ----------------------------------------------------------------------------


def test_variable_callable_comes_before_built_ins():
    """A variable holding a callable wins over a built-in of the same name."""
    assert last("(max 1 2)", max=lambda *a: "mine") == "mine"


def test_variable_named_like_an_operator_breaks_the_operator():
    """``(defvar add 5)`` makes ``+`` call 5, which fails."""
    with pytest.raises(PolicyError, match="'int' object is not callable"):
        last("(defvar add 5) (+ 1 2)")


def test_operator_built_ins_are_callable_by_name():
    """The names operators map to (``add``, ``lt``...) are built-ins too."""
    assert evaluate("(add 1 2) (lt 1 2) (shl 1 4) (neq 1 1)") == [3, True, 16, False]


def test_none_variable_falls_through_to_built_ins_and_functions():
    """A variable holding None is not called: resolution goes on to built-ins and functions."""
    assert last("(defvar f nil) (def f () 9) (f)") == 9
    assert last("(+ 1 2)", add=None) == 3


def test_built_in_comes_before_user_function():
    """A ``def`` named like a built-in is never called: the built-in wins."""
    assert last("(def max (a b) 0) (max 1 2)") == 2


def test_builtin_table_matches_mom():
    """The built-ins are MOM's ``c_*`` forms, with the ``defun``/``setq`` aliases."""
    assert set(BUILTINS) == {
        "def", "defun", "set", "setq", "defvar", "let", "with", "if",
        "add", "sub", "mul", "div", "lt", "gt", "lte", "gte", "eq", "neq", "shl", "shr",
        "and", "or", "not", "min", "max", "null", "valid",
    }  # fmt: skip


# --- def / defun and calls -----------------------------------------------------------------------


def test_def_returns_the_name_and_defines_a_function():
    """``def`` returns the function's name as a string and registers it."""
    assert evaluate("(def double (x) (* x 2)) (double 4)") == ["double", 8]


def test_defun_is_an_alias_of_def():
    """``defun`` defines functions like ``def``."""
    assert evaluate("(defun inc (x) (+ x 1)) (inc 1)") == ["inc", 2]


def test_function_table_is_global_even_from_inside_a_function():
    """A ``def`` inside a function body defines a global function, overwriting any other."""
    text = "(def outer () (def inner () 1)) (outer) (def inner () 2) (inner)"
    assert evaluate(text)[-1] == 2
    assert last("(def outer () (def inner () 1)) (outer) (inner)") == 1


def test_function_body_is_one_form_use_a_block_for_more():
    """A function has exactly one body form; ``{...}`` holds several and returns the last."""
    assert last("(def f (x) {(defvar y (* x 2)) (+ y 1)}) (f 3)") == 7


def test_arguments_are_evaluated_inside_the_callee_scope():
    """Arguments bind one by one in the callee's scope: ``(f b a)`` sees the new ``a``."""
    assert last("(def f (a b) (- a b)) (defvar a 1) (defvar b 2) (f b a)") == 0


def test_callee_sees_caller_locals_dynamic_scope():
    """A function reads a variable bound by its caller (MOM's guest_qos typo relies on it)."""
    text = "(def show (quest) guest.n) (with Guests guest (show guest))"
    guests = [SimpleNamespace(n=1), SimpleNamespace(n=2)]
    assert last(text, Guests=guests) == [1, 2]


def test_recursion_works():
    """A function may call itself."""
    text = "(def fact (n) (if (< n 2) 1 (* n (fact (- n 1))))) (fact 10)"
    assert last(text) == 3628800


# --- defvar / set / setq -----------------------------------------------------------------------


def test_defvar_binds_and_returns_the_value():
    """``defvar`` binds a new variable and returns its value."""
    assert evaluate("(defvar x 5) x") == [5, 5]


def test_defvar_does_not_overwrite_in_the_same_scope_and_returns_the_old_value():
    """A second ``defvar`` in the same scope changes nothing and returns the old value."""
    assert evaluate("(defvar x 1) (defvar x 2) x") == [1, 1, 1]


def test_defvar_in_inner_scope_shadows():
    """``defvar`` in a new scope binds there, leaving the outer variable alone."""
    assert evaluate("(defvar x 1) (let ((y 0)) (defvar x 2)) x") == [1, 2, 1]


def test_set_assigns_in_nearest_scope_and_returns_the_value():
    """``set`` rebinds the nearest existing variable and returns the new value."""
    assert evaluate("(defvar x 1) (set x 3) x") == [1, 3, 3]
    assert last("(defvar x 1) (let ((x 2)) (set x 5)) x") == 1


def test_set_from_a_function_reaches_a_global():
    """``set`` inside a function changes a global when no nearer scope has the name."""
    assert last("(defvar n 0) (def bump () (set n (+ n 1))) (bump) (bump) n") == 2


def test_setq_is_an_alias_of_set():
    """``setq`` assigns like ``set``."""
    assert evaluate("(defvar x 1) (setq x 2) x") == [1, 2, 2]


def test_set_of_a_dotted_name_always_fails():
    """``(set obj.attr v)`` cannot assign attributes: the whole name is undefined."""
    with pytest.raises(PolicyError, match="^undefined symbol obj.attr$"):
        last("(set obj.attr 1)", obj=SimpleNamespace(attr=0))


# --- let ---------------------------------------------------------------------------------------


def test_let_binds_sequentially_like_let_star():
    """``let`` binds in order inside its new scope, so later bindings see earlier ones."""
    assert last("(let ((a 1) (b (+ a 1))) (* a b))") == 2


def test_let_evaluates_several_body_forms_and_returns_the_last():
    """``let`` takes one or more body forms and returns the last one's value."""
    assert last("(let ((a 1)) (set a 2) (+ a 1))") == 3


def test_let_repeated_name_keeps_the_first_binding():
    """Binding a name twice in one ``let`` keeps the first value (bindings use defvar)."""
    assert last("(let ((x 1) (x 2)) x)") == 1


def test_let_scope_ends_with_the_let():
    """Variables bound by ``let`` are gone after it."""
    with pytest.raises(PolicyError, match="^undefined symbol a on line 1$"):
        evaluate("(let ((a 1)) a) a")


def test_let_with_no_bindings():
    """``(let () body)`` just evaluates its body in a new scope."""
    assert last("(let () 4)") == 4


# --- if / with / blocks --------------------------------------------------------------------------


def test_if_evaluates_only_the_chosen_branch():
    """``if`` evaluates the condition, then only the branch it selects."""
    assert last("(if 1 2 undefined_thing)") == 2
    assert last("(if 0 undefined_thing 3)") == 3
    assert last('(if "" 1 2)') == 2


def test_if_creates_no_scope():
    """A ``defvar`` inside an ``if`` branch binds in the enclosing scope."""
    assert last("(if 1 (defvar x 5) 0) x") == 5


def test_with_returns_the_list_of_results():
    """``with`` evaluates its body once per item and returns the results in order."""
    assert last("(with items i (* i 10))", items=[1, 2, 3]) == [10, 20, 30]


def test_with_binds_each_item_in_a_fresh_scope():
    """Each ``with`` iteration gets a new scope, so a ``defvar`` inside is fresh each time."""
    assert last("(with items i {(defvar d i) d})", items=[1, 2]) == [1, 2]


def test_with_over_a_dotted_list():
    """The list of ``with`` may be a dotted name, such as ``guest.io_tune``."""
    guest = SimpleNamespace(io_tune=["a", "b"])
    assert last("(with g.io_tune t t)", g=guest) == ["a", "b"]


def test_with_over_an_empty_list():
    """``with`` over an empty list returns an empty list."""
    assert last("(with items i i)", items=[]) == []


def test_block_evaluates_all_and_returns_the_last():
    """``{a b c}`` evaluates every form in order and returns the last value."""
    assert evaluate("(defvar x 0) {(set x 1) (set x (+ x 1)) x}") == [0, 2]


def test_eval_head_is_a_block():
    """``(eval a b)`` is the same as ``{a b}``."""
    assert last("(eval 1 2)") == 2


# --- operators -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("(+ 1 2)", 3),
        ("(- 5 3)", 2),
        ("(- 5 -3)", 8),
        ("(* 4 2.5)", 10.0),
        ("(/ 11 2)", 5.5),
        ("(/ 10 2)", 5.0),
        ("(< 1 2)", True),
        ("(> 1 2)", False),
        ("(<= 2 2)", True),
        ("(>= 1 2)", False),
        ("(== 1 1.0)", True),
        ("(!= 1 2)", True),
        ("(<< 1 3)", 8),
        ("(>> 16 2)", 4),
        ('(+ "ab" "cd")', "abcd"),
        ('(* "ab" 2)', "abab"),
        ('(== "a" "a")', True),
    ],
)
def test_binary_operators_have_python_semantics(text, value):
    """Each operator takes two values with Python semantics: true division, string ``+``/``*``."""
    result = last(text)
    assert result == value and type(result) is type(value)


def test_and_or_evaluate_all_arguments_first():
    """``and``/``or`` do not short-circuit: every argument is evaluated."""
    assert evaluate("(defvar n 0) (and 0 (set n 1)) n")[-1] == 1
    assert evaluate("(defvar n 0) (or 1 (set n 1)) n")[-1] == 1


@pytest.mark.parametrize(
    "text, value",
    [
        ("(and 1 2 3)", 3),
        ("(and 1 0 3)", 0),
        ("(and 5)", 5),
        ("(or 0 nil 3)", 3),
        ("(or 0 nil)", None),
        ('(or "" 0)', 0),
        ("(not 0)", True),
        ("(not 5)", False),
        ("(not nil)", True),
    ],
)
def test_and_or_not_have_python_value_semantics(text, value):
    """``and``/``or`` return the deciding value as Python does; ``not`` a boolean."""
    assert last(text) == value


def test_min_and_max():
    """``min``/``max`` take one or more values."""
    assert evaluate("(min 3 1 2) (max 3 1 2) (max 7) (min 1.5 2)") == [1, 3, 7, 1.5]


@pytest.mark.parametrize(
    "text, value",
    [
        ("(null)", True),
        ("(null nil)", True),
        ('(null "")', True),
        ("(null items)", True),
        ('(null nil "")', True),
        ("(null 0)", False),
        ('(null "a")', False),
        ("(null nil 5)", False),
        ("(valid)", True),
        ('(valid 1 0 "")', True),
        ("(valid 1 nil)", False),
    ],
)
def test_null_and_valid(text, value):
    """``null``: all None or empty (a non-iterable makes it False); ``valid``: no None."""
    assert last(text, items=[]) is value


def test_abs_is_a_global_variable():
    """``abs`` is Python's abs, held in the global scope."""
    assert evaluate("(abs -3) (abs 2.5)") == [3, 2.5]
    assert last("abs") is abs


def test_debug_reports_its_arguments_and_returns_the_last():
    """``debug`` passes its arguments to the debug sink and returns the last one."""
    seen = []
    evaluator = Evaluator(on_debug=seen.append)
    assert evaluator.eval_text('(debug "a" 1 2)') == [2]
    assert seen == [("a", 1, 2)]


def test_debug_logs_at_debug_level_by_default():
    """Without a sink, ``debug`` logs its arguments at debug level from the Evaluator."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        evaluate('(debug "x" 7)')
    finally:
        globalLogPublisher.removeObserver(events.append)
    [event] = [e for e in events if e.get("log_namespace") == "mom.evaluator.Evaluator"]
    assert event["log_level"] == LogLevel.debug
    assert event["values"] == ("x", 7)


# --- the Evaluator object ------------------------------------------------------------------------


def test_evaluator_keeps_state_between_evaluations():
    """One Evaluator keeps variables and functions across ``eval_text`` calls."""
    evaluator = Evaluator()
    evaluator.eval_text("(defvar x 2) (def sq (v) (* v v))")
    assert evaluator.eval_text("(sq x)") == [4]
    assert evaluator.functions == {"sq"}


def test_define_sets_and_replaces_globals():
    """``define`` binds a global, replacing an earlier value."""
    evaluator = Evaluator({"x": 1})
    evaluator.define("x", 2)
    assert evaluator.eval_text("x") == [2]


def test_each_evaluator_is_fresh():
    """Definitions made in one Evaluator are not seen by another."""
    Evaluator().eval_text("(defvar leak 1)")
    with pytest.raises(PolicyError):
        Evaluator().eval_text("leak")


def test_scopes_are_restored_after_an_error():
    """After a failing form, the evaluator is back in the global scope."""
    evaluator = Evaluator()
    with pytest.raises(PolicyError):
        evaluator.eval_text("(let ((inner 1)) (/ 1 0))")
    with pytest.raises(PolicyError):
        evaluator.eval_text("inner")
    assert evaluator.eval_text("(defvar top 1) top") == [1, 1]
