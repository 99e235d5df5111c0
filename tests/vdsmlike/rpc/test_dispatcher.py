"""Tests of the Dispatcher: verbs, batches, notifications, error mapping, readiness."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.logger import globalLogPublisher

from vdsmlike.api.errors import InvalidParams, NoSuchVM, Recovering
from vdsmlike.rpc.dispatcher import Dispatcher

from .helpers import fake_bind, result_of


class Unencodable:
    """Not JSON."""


def make_handlers(calls=None, later=None):
    calls = [] if calls is None else calls

    def fail(kind="plain"):
        if kind == "vdsm":
            raise NoSuchVM(vmId="v1")
        raise ValueError("boom")

    async def coro(value):
        return await succeed(value * 2)

    return {
        "Host.ping2": lambda: calls.append("ping") or None,
        "Test.echo": lambda value=None: value,
        "Test.add": lambda a, b: a + b,
        "Test.fail": fail,
        "Test.none": lambda: None,
        "Test.unencodable": lambda: Unencodable(),
        "Test.later": lambda: later,
        "Test.coro": coro,
    }


def reply(dispatcher, message, **kw):
    text = message if isinstance(message, str) else json.dumps(message)
    out = result_of(dispatcher.handle_text(text, **kw))
    return None if out is None else json.loads(out)


def req(method, params=None, id=1):
    message = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        message["params"] = params
    return message


@pytest.fixture
def dispatcher():
    return Dispatcher(make_handlers(), fake_bind)


def test_named_params_call(dispatcher):
    """Named params are bound to the handler's keyword arguments."""
    assert reply(dispatcher, req("Test.add", {"a": 2, "b": 3})) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": 5,
    }


def test_positional_params_call(dispatcher):
    """Positional params are bound in schema order."""
    assert reply(dispatcher, req("Test.add", [2, 5], id="x"))["result"] == 7


def test_none_result_becomes_true(dispatcher):
    """A handler returning None answers true, as VDSM does."""
    assert reply(dispatcher, req("Test.none"))["result"] is True


def test_unknown_method(dispatcher):
    """A verb with no handler answers -32601 without calling bind."""
    bound = []
    d = Dispatcher({}, lambda verb, params: bound.append(verb) or {})
    assert reply(d, req("Host.nothing"))["error"]["code"] == -32601
    assert bound == []


def test_invalid_params_from_bind(dispatcher):
    """A schema violation reported by bind answers -32602 with its message."""
    error = reply(dispatcher, req("Test.add", {"c": 1}))["error"]
    assert error["code"] == -32602 and "unknown params" in error["message"]


def test_vdsm_error_keeps_its_code(dispatcher):
    """An RpcError raised by a handler becomes its own error object."""
    error = reply(dispatcher, req("Test.fail", {"kind": "vdsm"}))["error"]
    assert error == {"code": 1, "message": "Virtual machine does not exist: {'vmId': 'v1'}"}


def test_unexpected_exception_is_general_exception_without_traceback(dispatcher):
    """Any other exception is code 100 with type and text; the traceback goes to the log."""
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        error = reply(dispatcher, req("Test.fail", {"kind": "plain"}))["error"]
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert error["code"] == 100
    assert "ValueError: boom" in error["message"] and "Traceback" not in error["message"]
    assert any(e.get("log_failure") is not None for e in logged)


def test_deferred_result(dispatcher):
    """A handler's Deferred is waited for before answering."""
    later = Deferred()
    d = Dispatcher(make_handlers(later=later), fake_bind)
    pending = d.handle_text(json.dumps(req("Test.later")))
    assert not pending.called
    later.callback({"ok": 1})
    assert json.loads(result_of(pending))["result"] == {"ok": 1}


def test_coroutine_handler(dispatcher):
    """An async def handler is run as a coroutine."""
    assert reply(dispatcher, req("Test.coro", {"value": 21}))["result"] == 42


def test_unencodable_result_is_internal_error(dispatcher):
    """A result that is not JSON answers -32603."""
    assert reply(dispatcher, req("Test.unencodable"))["error"]["code"] == -32603


def test_notification_runs_but_gets_no_reply():
    """A notification runs its handler and produces no reply."""
    calls = []
    d = Dispatcher(make_handlers(calls), fake_bind)
    assert reply(d, {"jsonrpc": "2.0", "method": "Host.ping2"}) is None
    assert calls == ["ping"]


def test_failing_notification_gets_no_reply(dispatcher):
    """Errors of notifications are not sent either."""
    assert reply(dispatcher, {"jsonrpc": "2.0", "method": "Nope.nope"}) is None


def test_batch_answers_one_array(dispatcher):
    """A batch is answered with one array holding a response per request with an id."""
    message = [
        req("Test.add", [1, 2], id=1),
        {"jsonrpc": "2.0", "method": "Host.ping2"},
        req("Nope.nope", id=3),
        42,
    ]
    replies = reply(dispatcher, message)
    assert [r.get("id") for r in replies] == [1, 3, None]
    assert replies[0]["result"] == 3
    assert [r["error"]["code"] for r in replies[1:]] == [-32601, -32600]


def test_batch_of_notifications_gets_no_reply(dispatcher):
    """A batch of notifications only is not answered."""
    assert reply(dispatcher, [{"jsonrpc": "2.0", "method": "Host.ping2"}] * 3) is None


def test_batch_requests_run_concurrently():
    """All requests of a batch start before any finishes; the reply waits for the last."""
    gates = [Deferred(), Deferred()]
    started = []

    def slow(seconds, value):
        started.append(value)
        return gates[value]

    d = Dispatcher({"Test.slow": slow}, fake_bind)
    pending = d.handle_text(json.dumps([req("Test.slow", [0, 0], 1), req("Test.slow", [0, 1], 2)]))
    assert started == [0, 1] and not pending.called
    gates[1].callback("b")
    assert not pending.called
    gates[0].callback("a")
    assert [r["result"] for r in json.loads(result_of(pending))] == ["a", "b"]


def test_empty_batch_and_parse_error(dispatcher):
    """An empty batch is -32600, invalid JSON -32700, both with id null."""
    assert reply(dispatcher, "[]")["error"]["code"] == -32600
    parse_error = reply(dispatcher, "{oops")
    assert parse_error["error"]["code"] == -32700 and parse_error["id"] is None


def test_not_ready_answers_recovering_except_unguarded():
    """While not ready, verbs answer 99 except the unguarded subscribe verbs."""
    extra = {"Host.subscribe": lambda patterns: {"patterns": patterns}}
    d = Dispatcher(make_handlers(), fake_bind, is_ready=lambda: False)
    error = reply(d, req("Host.ping2"))["error"]
    assert error["code"] == Recovering.code
    ok = reply(d, req("Host.subscribe", {"patterns": ["*"]}), extra_handlers=extra)
    assert ok["result"] == {"patterns": ["*"]}


def test_unknown_method_while_not_ready_is_method_not_found():
    """An unknown verb is -32601 even during recovery."""
    d = Dispatcher({}, fake_bind, is_ready=lambda: False)
    assert reply(d, req("X.y"))["error"]["code"] == -32601


def test_extra_handlers_take_precedence(dispatcher):
    """Per-connection handlers are found before the shared ones."""
    extra = {"Test.echo": lambda value: "extra"}
    assert reply(dispatcher, req("Test.echo", [1]), extra_handlers=extra)["result"] == "extra"


def test_check_result_failure_is_internal_error():
    """When check_result raises, the reply is -32603 with its message."""

    def check(verb, result):
        if verb == "Test.echo" and result == "bad":
            raise InvalidParams("result does not match schema")

    d = Dispatcher(make_handlers(), fake_bind, check_result=check)
    error = reply(d, req("Test.echo", ["bad"]))["error"]
    assert error["code"] == -32603 and "does not match schema" in error["message"]
    assert reply(d, req("Test.echo", ["good"]))["result"] == "good"


def test_bind_crash_is_general_exception():
    """A binder that crashes is reported like a handler crash, as code 100."""

    def bad_bind(verb, params):
        raise KeyError("x")

    d = Dispatcher(make_handlers(), bad_bind)
    assert reply(d, req("Host.ping2"))["error"]["code"] == 100
