"""The dispatcher: runs parsed JSON-RPC requests against verb handlers and builds the reply text.

Errors on the wire (VDSM's rules, ``reference/vdsm.md`` §2.5): an `RpcError` a handler raises is
sent as its own error object; anything else is code 100 "General Exception" with the exception's
type and text, the traceback only in the log. While the agent is not ready (recovery after a
start), every verb except the unguarded ones answers code 99.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..api.errors import GeneralException, InternalError, MethodNotFound, Recovering, RpcError
from . import jsonrpc
from .jsonrpc import Batch, Invalid, Request

Handler = Callable[..., Any]
Binder = Callable[[str, Any], dict[str, Any]]

DEFAULT_UNGUARDED = frozenset({"Host.subscribe", "Host.unsubscribe"})


def _always_ready() -> bool:
    return True


class Dispatcher:
    """
    Answers JSON-RPC message text using a verb table.

    :param handlers: ``{verb name: handler}``; a handler takes the bound params as keyword
        arguments and returns a value, a Deferred or a coroutine.
    :param bind: ``bind(verb, params) -> kwargs``; raises `MethodNotFound` or `InvalidParams`.
    :param is_ready: false while the agent recovers; verbs then answer `Recovering` (99).
    :param unguarded: verbs that run even while not ready.
    :param check_result: if given, called with ``(verb, result)`` on every success; what it raises
        becomes -32603 with its message (strict mode in tests).
    """

    log = Logger()

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        bind: Binder,
        *,
        is_ready: Callable[[], bool] = _always_ready,
        unguarded: frozenset[str] = DEFAULT_UNGUARDED,
        check_result: Callable[[str, Any], None] | None = None,
    ) -> None:
        self._handlers = handlers
        self._bind = bind
        self._is_ready = is_ready
        self._unguarded = unguarded
        self._check_result = check_result

    def handle_text(
        self, text: str | bytes, extra_handlers: Mapping[str, Handler] | None = None
    ) -> Deferred[str | None]:
        """
        Answer one message: a request, a notification or a batch.

        The requests of a batch run concurrently; the batch reply waits for all of them.

        :param text: the message as received (text or UTF-8 bytes).
        :param extra_handlers: per-connection verbs (``Host.subscribe``), looked up first.
        :returns: a Deferred that fires with the reply text, or None when nothing is to be sent
            (a notification, or a batch of notifications). It never fails.
        """
        message = jsonrpc.parse(text)
        extra = extra_handlers or {}
        if isinstance(message, Batch):
            replies = [self._answer(item, extra) for item in message.items]
            return gatherResults(replies).addCallback(_join_batch)
        return self._answer(message, extra)

    def _answer(
        self, item: Request | Invalid, extra: Mapping[str, Handler]
    ) -> Deferred[str | None]:
        """:returns: a Deferred firing with one encoded response, or None for a notification."""
        if isinstance(item, Invalid):
            return succeed(jsonrpc.encode_error(item.id, item.error))
        d = self._run(item, extra)
        d.addCallbacks(
            self._encode_success,
            self._encode_failure,
            callbackArgs=(item,),
            errbackArgs=(item,),
        )
        if item.is_notification:
            d.addCallback(lambda _: None)
        return d

    def _run(self, request: Request, extra: Mapping[str, Handler]) -> Deferred[Any]:
        """Look up, guard, bind and call; synchronous exceptions become a failed Deferred."""
        try:
            handler = extra.get(request.method) or self._handlers.get(request.method)
            if handler is None:
                raise MethodNotFound(request.method)
            if request.method not in self._unguarded and not self._is_ready():
                raise Recovering()
            kwargs = self._bind(request.method, request.params)
            result = handler(**kwargs)
        except Exception:
            return fail()
        if inspect.iscoroutine(result):
            return Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            return result
        return succeed(result)

    def _encode_success(self, result: Any, request: Request) -> str:
        if result is None:
            result = True
        try:
            if self._check_result is not None:
                self._check_result(request.method, result)
        except Exception as e:
            return jsonrpc.encode_error(request.id, InternalError(f"result check failed: {e}"))
        try:
            return jsonrpc.encode_result(request.id, result)
        except (TypeError, ValueError, RecursionError) as e:
            self.log.error(
                "{method}: result cannot be encoded: {error}", method=request.method, error=e
            )
            error = InternalError(f"result cannot be encoded as JSON: {type(e).__name__}: {e}")
            return jsonrpc.encode_error(request.id, error)

    def _encode_failure(self, failure: Failure, request: Request) -> str:
        error = failure.value
        if not isinstance(error, RpcError):
            self.log.failure(
                "{method} failed unexpectedly", failure, method=request.method, id=request.id
            )
            error = GeneralException(_summary(error))
        return jsonrpc.encode_error(request.id, error)


def _join_batch(parts: list[str | None]) -> str | None:
    return jsonrpc.encode_batch([p for p in parts if p is not None])


def _summary(error: BaseException, limit: int = 300) -> str:
    """A short, traceback-free description of an unexpected exception."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
