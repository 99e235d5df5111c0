"""The admin API's errors: codes, messages and ``data``, and the translation of engine failures.

Each error is a :class:`vdsmlike.api.errors.RpcError` (so the agent's dispatcher sends it as it
is) that may carry a JSON ``data`` member. :func:`translate` turns what ``IEngine`` and the store
raise into these: ``NotFound`` → 404, ``DuplicateName`` → 4091, ``Conflict`` → 409,
``InvalidValue`` → -32602, ``engine.errors.ActionRefused`` → 4092 with the scheduler's
explanation, ``StoreUnavailable`` and ``engine.errors.EngineNotReady`` → 503; anything else
is a bug: -32603, with the traceback in the log only. The codes are documented under
``errors:`` in ``schema/engine.yml`` (a test checks both agree).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine import errors as engine_errors
from engine.store import errors as store_errors
from vdsmlike.api.errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
    RpcError,
)

from . import wire

log = Logger()

__all__ = [
    "ActionRefused",
    "Conflict",
    "DuplicateName",
    "EngineError",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "LoginFailed",
    "MethodNotFound",
    "NotAuthenticated",
    "NotFound",
    "ParseError",
    "TooManyLogins",
    "Unavailable",
    "translate",
    "translating",
]


class EngineError(RpcError):
    """
    An admin API error: ``{"code", "message": "<message>[: <detail>]", "data"?}``.

    :param detail: what went wrong, appended to the class's message.
    :param data: a JSON value for the error object's ``data`` member (omitted when None).
    """

    def __init__(self, detail: str | None = None, *, data: Any = None) -> None:
        self.data = data
        super().__init__(detail)

    def to_error_object(self) -> dict[str, Any]:
        """:returns: the JSON-RPC ``error`` member, with ``data`` when there is some."""
        error = super().to_error_object()
        if self.data is not None:
            error["data"] = self.data
        return error


class NotAuthenticated(EngineError):
    """The connection has no valid session; ``data.reason`` says why."""

    code, message = 401, "Not authenticated"

    LOGIN_REQUIRED = "login_required"
    INVALID_TOKEN = "invalid_token"
    SESSION_EXPIRED = "session_expired"
    LOGGED_OUT = "logged_out"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail, data={"reason": reason})
        self.reason = reason


class LoginFailed(EngineError):
    """Wrong user name or password."""

    code, message = 403, "Login failed"


class NotFound(EngineError):
    """No object of this kind has this id; ``data`` is ``{kind, id}``."""

    code, message = 404, "Not found"


class Conflict(EngineError):
    """The request contradicts the current state."""

    code, message = 409, "Conflict"


class TooManyLogins(EngineError):
    """Too many failed logins lately; ``data`` is ``{retry_after: seconds}``."""

    code, message = 429, "Too many failed logins"


class Unavailable(EngineError):
    """The database cannot be reached."""

    code, message = 503, "Engine unavailable"


class DuplicateName(EngineError):
    """Another object of this kind has this name; ``data`` is ``{kind, name}``."""

    code, message = 4091, "Name already in use"


class ActionRefused(EngineError):
    """The engine refuses the action; ``data`` is ``{reason, hosts}`` (see ``wire.refusal``)."""

    code, message = 4092, "Action refused"


#: Every error class of the API, by code (the schema's ``errors:`` must list exactly these).
ERRORS: dict[int, type[RpcError]] = {
    cls.code: cls
    for cls in (
        NotAuthenticated,
        LoginFailed,
        NotFound,
        Conflict,
        TooManyLogins,
        Unavailable,
        DuplicateName,
        ActionRefused,
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
    )
}


def translate(error: BaseException) -> RpcError:
    """
    The API error for what an engine operation raised.

    :returns: ``error`` itself if it is already an ``RpcError``; a 404, 4091, 409, -32602,
        4092 or 503 for the store's and the engine's typed failures; a -32603 for anything
        else (a bug: the caller logs it).
    """
    if isinstance(error, RpcError):
        return error
    if isinstance(error, store_errors.NotFound):
        return NotFound(str(error), data={"kind": error.kind, "id": str(error.key)})
    if isinstance(error, store_errors.DuplicateName):
        return DuplicateName(str(error), data={"kind": error.kind, "name": error.name})
    if isinstance(error, store_errors.Conflict):
        return Conflict(str(error))
    if isinstance(error, store_errors.InvalidValue):
        return InvalidParams(str(error))
    if isinstance(error, store_errors.StoreUnavailable | engine_errors.EngineNotReady):
        return Unavailable(str(error) or None)
    if isinstance(error, engine_errors.ActionRefused):
        data = wire.refusal(error)
        return ActionRefused(data["reason"], data=data)
    return InternalError(f"unexpected {type(error).__name__}; see the engine log")


def _translate_failure(failure: Failure, name: str) -> Failure:
    """Errback: replace the failure's exception by its API error, logging unexpected ones."""
    error = translate(failure.value)
    if isinstance(error, InternalError) and error is not failure.value:
        log.failure("{verb} failed unexpectedly", failure, verb=name)
    return Failure(error)


def translating(name: str, fn: Callable[..., Any]) -> Callable[..., Deferred[Any]]:
    """
    Wrap a verb's handler so that whatever it raises reaches the wire as an API error.

    :param name: the verb, for the log.
    :param fn: returns a value, a Deferred or a coroutine.
    :returns: a function with ``fn``'s signature returning a Deferred.
    """

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Deferred[Any]:
        def call() -> Any:
            result = fn(*args, **kwargs)
            if inspect.iscoroutine(result):
                return Deferred.fromCoroutine(result)
            return result

        return maybeDeferred(call).addErrback(_translate_failure, name)

    return run
