"""Pure: the MOM policy-language evaluator, semantics for semantics with MOM's ``Evaluator``.

A form ``(head arg...)`` is resolved in MOM's order:

1. ``head`` names a variable holding something other than None: it is called as a Python
   callable with every argument evaluated. This is how ``(guest.Control "k" v)``,
   ``(Host.StatAvg "mem_free")``, ``(abs -1)`` and ``(tune.setTotalBytesSec v)`` work, and why
   ``(defvar add 5)`` breaks ``+``.
2. ``head`` (an operator is first renamed: ``+`` is ``add``...) is a built-in. Its signature
   says which arguments are evaluated (``value``), passed as code (``code``) or must be a symbol
   (``symbol``), and how many there must be (``...`` repeats the previous type).
3. ``eval`` (the head the parser gives ``{...}``) evaluates every argument and returns the last.
4. Otherwise ``head`` is a user function from the global function table.

Scoping is dynamic: a call ``(f a b)`` of ``(def f (x y) body)`` evaluates
``(let ((x a) (y b)) body)``, so arguments are evaluated one by one *inside* the callee's new
scope, and a callee sees its callers' locals. ``and``/``or`` evaluate every argument, ``/`` is
true division, ``if`` takes exactly three arguments, ``with`` returns the list of its results.

Every failure is a ``PolicyError`` (see ``mom.errors`` for where MOM raises something else).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from twisted.logger import Logger

from . import errors
from .errors import PolicyError
from .lexer import NUMBER, OPERATOR, STRING, SYMBOL, Token
from .parser import Form, Node, parse

# Operator tokens are looked up, as variables and as built-ins, under these names.
OPERATOR_NAMES = {
    "+": "add",
    "-": "sub",
    "*": "mul",
    "/": "div",
    "<": "lt",
    ">": "gt",
    "<=": "lte",
    ">=": "gte",
    "<<": "shl",
    ">>": "shr",
    "==": "eq",
    "!=": "neq",
}

_MISSING = object()


class Scopes:
    """MOM's variable stack: the global scope first, the innermost scope last."""

    def __init__(self, global_scope: dict[str, object]) -> None:
        self._frames = [global_scope]

    def push(self) -> None:
        """Enter a new innermost scope."""
        self._frames.append({})

    def pop(self) -> None:
        """Leave the innermost scope."""
        self._frames.pop()

    def find(self, name: str) -> object:
        """Look ``name`` up from the innermost scope outwards.

        ``a.b`` finds the nearest ``a`` that has an attribute ``b`` (an ``a`` without one does
        not stop the search) and returns that attribute; as in MOM, only the first two parts
        of a dotted name count, so ``a.b.c`` is ``a.b``.

        :returns: the value, or ``_MISSING``.
        :raises Exception: whatever reading the attribute raises, other than AttributeError.
        """
        head, dot, rest = name.partition(".")
        attribute = rest.partition(".")[0]
        for frame in reversed(self._frames):
            if head in frame:
                value = frame[head]
                if not dot:
                    return value
                found = getattr(value, attribute, _MISSING)
                if found is not _MISSING:
                    return found
        return _MISSING

    def define(self, name: str, value: object) -> object:
        """Bind ``name`` in the innermost scope unless it is already bound there.

        :returns: the value ``name`` has in that scope afterwards (the old one, if any).
        """
        return self._frames[-1].setdefault(name, value)

    def set_global(self, name: str, value: object) -> None:
        """Bind ``name`` in the global scope, replacing any earlier binding there."""
        self._frames[0][name] = value

    def assign(self, name: str, value: object) -> bool:
        """Rebind ``name`` in the nearest scope that has it (the whole name: no dots).

        :returns: False when no scope has it.
        """
        for frame in reversed(self._frames):
            if name in frame:
                frame[name] = value
                return True
        return False


class _Builtin(NamedTuple):
    """A built-in form: MOM's method name (for messages), its signature, its implementation."""

    function: str
    signature: tuple[str, ...]
    run: Callable[..., Any]


def _binary(op: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """:returns: a built-in implementation applying the two-argument ``op``."""
    return lambda evaluator, line, x, y: op(x, y)


def _and(evaluator: Evaluator, line: int, *values: Any) -> Any:
    """Python's ``and`` over values that were all evaluated first (no short circuit)."""
    for value in values:
        if not value:
            return value
    return values[-1]


def _or(evaluator: Evaluator, line: int, *values: Any) -> Any:
    """Python's ``or`` over values that were all evaluated first (no short circuit)."""
    for value in values:
        if value:
            return value
    return values[-1]


def _null(evaluator: Evaluator, line: int, *values: Any) -> bool:
    """True when every value is None or empty; a value with no length makes it False."""
    try:
        return all(value is None or len(value) == 0 for value in values)
    except TypeError:
        return False


def _valid(evaluator: Evaluator, line: int, *values: Any) -> bool:
    """True when no value is None."""
    return not any(value is None for value in values)


def _builtins() -> dict[str, _Builtin]:
    """:returns: the built-in forms by the name a form's head resolves to."""
    table = {
        "def": _Builtin("c_def", ("symbol", "code", "code"), lambda e, *a: e._def(*a)),
        "set": _Builtin("c_set", ("symbol", "value"), lambda e, *a: e._set(*a)),
        "defvar": _Builtin("c_defvar", ("symbol", "value"), lambda e, *a: e._defvar(*a)),
        "let": _Builtin("c_let", ("code", "code", "..."), lambda e, *a: e._let(*a)),
        "with": _Builtin("c_with", ("symbol", "symbol", "code"), lambda e, *a: e._with(*a)),
        "if": _Builtin("c_if", ("value", "code", "code"), lambda e, *a: e._if(*a)),
        "and": _Builtin("c_and", ("value", "..."), _and),
        "or": _Builtin("c_or", ("value", "..."), _or),
        "not": _Builtin("c_not", ("value",), lambda e, line, x: not x),
        "min": _Builtin("c_min", ("value", "..."), lambda e, line, *a: min(a)),
        "max": _Builtin("c_max", ("value", "..."), lambda e, line, *a: max(a)),
        "null": _Builtin("c_null", ("...",), _null),
        "valid": _Builtin("c_valid", ("...",), _valid),
    }
    # The aliases report their target's method name, as MOM's ``c_defun = c_def`` does.
    table["defun"] = table["def"]
    table["setq"] = table["set"]
    binary = {
        "add": operator.add,
        "sub": operator.sub,
        "mul": operator.mul,
        "div": operator.truediv,
        "lt": operator.lt,
        "gt": operator.gt,
        "lte": operator.le,
        "gte": operator.ge,
        "eq": operator.eq,
        "neq": operator.ne,
        "shl": operator.lshift,
        "shr": operator.rshift,
    }
    for name, op in binary.items():
        table[name] = _Builtin(f"c_{name}", ("value", "value"), _binary(op))
    return table


BUILTINS: Mapping[str, _Builtin] = _builtins()


class Evaluator:
    """Evaluates parsed policy forms; holds the variable scopes and the function table.

    A new Evaluator starts with the globals ``abs`` and ``debug`` (MOM's "externs"), plus
    ``variables``. The policy store makes a fresh one per policy cycle, as MOM does.
    """

    log = Logger()

    def __init__(
        self,
        variables: Mapping[str, object] | None = None,
        *,
        on_debug: Callable[[tuple[object, ...]], None] | None = None,
    ) -> None:
        """
        :param variables: extra globals, such as ``Host`` and ``Guests``.
        :param on_debug: receives the argument tuple of each ``(debug ...)`` call; by default
            it is logged at debug level, like MOM's ``debug: (...)`` line.
        """
        self._on_debug = on_debug or self._log_debug
        self._scopes = Scopes({"abs": abs, "debug": self._debug})
        self._functions: dict[str, tuple[Node, Node]] = {}
        for name, value in (variables or {}).items():
            self.define(name, value)

    def define(self, name: str, value: object) -> None:
        """Bind ``name`` to ``value`` in the global scope, replacing any earlier binding.

        :param name: a variable name (no dots).
        :param value: any Python object; a policy reads its attributes through dotted names.
        """
        self._scopes.set_global(name, value)

    @property
    def functions(self) -> frozenset[str]:
        """The names of the functions ``def``/``defun`` registered so far."""
        return frozenset(self._functions)

    def eval(self, node: Node) -> Any:
        """Evaluate one parsed node.

        :param node: a token or form from ``mom.parser.parse``.
        :returns: its value.
        :raises PolicyError: for every failure, with MOM's message where MOM has one.
        """
        try:
            return self._eval(node)
        except PolicyError:
            raise
        except RecursionError:
            raise errors.too_deep() from None
        except Exception as exc:  # a bug of ours; keep the one-exception promise anyway
            raise PolicyError(f"internal error: {exc!r}") from exc

    def eval_forms(self, forms: Iterable[Node]) -> list[Any]:
        """Evaluate top-level forms in order, like MOM's ``Parser.eval``.

        :returns: one result per form.
        :raises PolicyError: at the first form that fails.
        """
        return [self.eval(form) for form in forms]

    def eval_text(self, text: str) -> list[Any]:
        """Parse ``text`` and evaluate its forms in order.

        :returns: one result per top-level form.
        :raises PolicyError: on a parse error, an empty program, or a failing form.
        """
        return self.eval_forms(parse(text))

    # --- evaluation -------------------------------------------------------------------------

    def _eval(self, node: Node) -> Any:
        """Evaluate ``node``; may raise RecursionError, which ``eval`` converts."""
        if not isinstance(node, Token):
            return self._apply(node)
        if node.kind == NUMBER:
            return self._number(node)
        if node.kind == STRING:
            return node.value
        if node.kind == SYMBOL:
            if node.text == "nil":
                return None
            return self._lookup(node.text, node.line)
        raise errors.unexpected_token(node.kind, node.line)

    def _number(self, token: Token) -> int | float:
        """:returns: a number token's value, read as Python reads it (``int(text, 0)``)."""
        try:
            if token.numtype == "float":
                return float(token.text)
            return int(token.text, 0)
        except ValueError:
            raise errors.invalid_number(token.text, token.line) from None

    def _lookup(self, name: str, line: int) -> Any:
        """:returns: the value of variable ``name``; :raises PolicyError: when undefined."""
        value = self._find(name, name, line)
        if value is _MISSING:
            raise errors.undefined_symbol(name, line)
        return value

    def _find(self, name: str, where: str, line: int) -> Any:
        """``Scopes.find``, with a failing attribute read turned into a PolicyError."""
        try:
            return self._scopes.find(name)
        except (PolicyError, RecursionError):
            raise
        except Exception as exc:
            raise errors.python_error(where, line, exc) from exc

    def _apply(self, form: Form) -> Any:
        """Evaluate ``(head arg...)``: variable-callable, then built-in, then function."""
        if not form:
            raise errors.empty_expression(getattr(form, "line", 0))
        head = form[0]
        if not isinstance(head, Token):
            raise errors.expected_simple_token(getattr(head, "line", None))
        line = head.line
        if head.kind == SYMBOL:
            name = head.text
        elif head.kind == OPERATOR:
            name = OPERATOR_NAMES[head.text]
        else:
            raise errors.unexpected_head(head.kind, line)
        args = form[1:]
        callable_ = self._find(name, head.text, line)
        if callable_ is not _MISSING and callable_ is not None:
            values = [self._eval(arg) for arg in args]
            return self._guarded(head.text, line, callable_, *values)
        builtin = BUILTINS.get(name)
        if builtin is not None:
            return self._guarded(head.text, line, self._dispatch, builtin, args, line)
        if name == "eval":
            if not args:
                raise errors.empty_block(line)
            return [self._eval(arg) for arg in args][-1]
        return self._call_function(name, args, line)

    def _guarded(self, where: str, line: int, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function``, turning a Python exception into a PolicyError about ``where``."""
        try:
            return function(*args)
        except (PolicyError, RecursionError):
            raise
        except Exception as exc:
            raise errors.python_error(where, line, exc) from exc

    def _dispatch(self, builtin: _Builtin, args: list[Node], line: int) -> Any:
        """Check ``args`` against a built-in's signature, prepare them, and run it."""
        signature = builtin.signature
        variadic = signature[-1] == "..."
        if not variadic and len(signature) != len(args):
            raise errors.arity_mismatch(builtin.function, line)
        if variadic and len(signature) > len(args) + 1:
            raise errors.not_enough_arguments(builtin.function, line)
        prepared: list[Any] = []
        kind = "value"  # a leading "..." repeats "value"
        for index, arg in enumerate(args):
            if index < len(signature) and signature[index] != "...":
                kind = signature[index]
            if kind == "code":
                prepared.append(arg)
            elif kind == "symbol":
                if not isinstance(arg, Token) or arg.kind != SYMBOL:
                    raise errors.malformed_expression(line)
                prepared.append(arg.text)
            else:
                prepared.append(self._eval(arg))
        return builtin.run(self, line, *prepared)

    def _call_function(self, name: str, args: list[Node], line: int) -> Any:
        """Call a user function: ``(let ((param arg)...) body)``, evaluated as a form."""
        try:
            params, body = self._functions[name]
        except KeyError:
            raise errors.undefined_function(name, line) from None
        if isinstance(params, Token):
            raise errors.bad_parameters(name, line)
        if len(params) != len(args):
            raise errors.function_arity(name, line)
        pairs = zip(params, args, strict=True)
        bindings = Form((Form(pair, line=line) for pair in pairs), line=line)
        # Through _apply, like MOM, so that the call is a real ``let`` form.
        return self._apply(Form((Token(SYMBOL, "let", line), bindings, body), line=line))

    # --- built-in forms ---------------------------------------------------------------------

    def _def(self, line: int, name: str, params: Node, body: Node) -> str:
        """``(def name (params...) body)``: register a global function; :returns: its name."""
        self._functions[name] = (params, body)
        return name

    def _set(self, line: int, name: str, value: Any) -> Any:
        """``(set name value)``: rebind in the nearest scope that has ``name``."""
        if not self._scopes.assign(name, value):
            raise errors.undefined_assignment(name, line)
        return value

    def _defvar(self, line: int, name: str, value: Any) -> Any:
        """``(defvar name value)``: bind in the innermost scope unless already bound there."""
        return self._scopes.define(name, value)

    def _let(self, line: int, bindings: Node, *body: Node) -> Any:
        """``(let ((name value)...) body...)``: bind one by one in a new scope (let*)."""
        if not isinstance(bindings, Form):
            raise errors.bad_let(errors.LET_NOT_A_LIST, line)
        self._scopes.push()
        try:
            for binding in bindings:
                if not isinstance(binding, Form) or len(binding) != 2:
                    raise errors.bad_let(errors.LET_NOT_PAIRS, line)
                name, value = binding
                if not isinstance(name, Token) or name.kind != SYMBOL:
                    raise errors.bad_let(errors.LET_NOT_SYMBOL, line)
                self._scopes.define(name.text, self._eval(value))
            result = None
            for expr in body:
                result = self._eval(expr)
            return result
        finally:
            self._scopes.pop()

    def _with(self, line: int, items_name: str, var: str, body: Node) -> list[Any]:
        """``(with LIST var body)``: evaluate body once per item, each in a new scope."""
        results = []
        for item in self._lookup(items_name, line):
            self._scopes.push()
            try:
                self._scopes.define(var, item)
                results.append(self._eval(body))
            finally:
                self._scopes.pop()
        return results

    def _if(self, line: int, condition: Any, then: Node, otherwise: Node) -> Any:
        """``(if cond then else)``: evaluate only the chosen branch."""
        return self._eval(then if condition else otherwise)

    # --- externs ----------------------------------------------------------------------------

    def _debug(self, *values: object) -> object:
        """The ``debug`` extern: report the arguments; :returns: the last one."""
        self._on_debug(values)
        return values[-1]

    def _log_debug(self, values: tuple[object, ...]) -> None:
        """Log a ``(debug ...)`` call's arguments at debug level, as MOM's ``mom.Evaluator``
        logger does."""
        self.log.debug("debug: {values!r}", values=values)


def evaluate(text: str, variables: Mapping[str, object] | None = None) -> list[Any]:
    """Evaluate policy source in a fresh evaluator.

    :param text: policy source.
    :param variables: globals for the policy, such as ``Host`` and ``Guests``.
    :returns: one result per top-level form.
    :raises PolicyError: for every failure.
    """
    return Evaluator(variables).eval_text(text)
