"""Property tests: whatever is thrown at the Dispatcher, the reply is well-formed JSON-RPC 2.0."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import succeed

from vdsmlike.api.errors import NoSuchVM
from vdsmlike.rpc.dispatcher import Dispatcher

from .helpers import fake_bind, result_of


def _fail(kind=None):
    if kind == "vdsm":
        raise NoSuchVM()
    raise RuntimeError(kind)


async def _coro(value=None):
    return await succeed(value)


DISPATCHER = Dispatcher(
    {
        "Host.ping2": lambda: None,
        "Test.echo": lambda value=None: value,
        "Test.add": lambda a=0, b=0: a + b,
        "Test.fail": _fail,
        "Test.unencodable": lambda: {1, 2},
        "Test.coro": _coro,
        "Test.later": lambda: succeed([1, "x"]),
    },
    fake_bind,
)

METHODS = [
    "Host.ping2",
    "Test.echo",
    "Test.add",
    "Test.fail",
    "Test.unencodable",
    "Test.coro",
    "Test.later",
    "No.such",
    "",
    "rpc.x",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = (
    st.none()
    | st.integers()
    | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False)
)
params = (
    st.dictionaries(st.sampled_from(["value", "a", "b", "kind", "zz"]), json_values, max_size=3)
    | st.lists(json_values, max_size=3)
    | json_values
)


@st.composite
def request_objects(draw):
    obj = {}
    if draw(st.booleans()) or draw(st.booleans()):
        obj["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "1.0", 2]))
    if draw(st.integers(0, 9)):
        obj["method"] = draw(st.sampled_from(METHODS) | json_scalars)
    if draw(st.booleans()):
        obj["params"] = draw(params)
    if draw(st.booleans()):
        obj["id"] = draw(ids | json_values)
    return obj


elements = request_objects() | json_values
messages = elements | st.lists(elements, max_size=6)


def is_valid_id(value):
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def is_notification(obj):
    """A valid request object without id: the only thing never answered."""
    return (
        isinstance(obj, dict)
        and obj.get("jsonrpc") == "2.0"
        and isinstance(obj.get("method"), str)
        and isinstance(obj.get("params", {}), (dict, list))
        and "id" not in obj
    )


def expected_id(obj):
    return obj.get("id") if isinstance(obj, dict) and is_valid_id(obj.get("id")) else None


def check_response(response):
    assert isinstance(response, dict)
    assert response["jsonrpc"] == "2.0" and "id" in response
    assert ("result" in response) != ("error" in response)
    assert set(response) <= {"jsonrpc", "id", "result", "error"}
    if "error" in response:
        error = response["error"]
        assert isinstance(error["code"], int) and not isinstance(error["code"], bool)
        assert isinstance(error["message"], str)
        assert "Traceback" not in error["message"]


def answer(text):
    reply = result_of(DISPATCHER.handle_text(text))
    return None if reply is None else json.loads(reply)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_structured_messages_get_well_formed_replies(message):
    """Any JSON message gets a well-formed reply with the right ids, or none for notifications."""
    reply = answer(json.dumps(message))
    if isinstance(message, list) and message:
        answered = [m for m in message if not is_notification(m)]
        if not answered:
            assert reply is None
            return
        assert isinstance(reply, list) and len(reply) == len(answered)
        for response in reply:
            check_response(response)
        assert sorted(map(repr, (r["id"] for r in reply))) == sorted(
            map(repr, map(expected_id, answered))
        )
    elif is_notification(message):
        assert reply is None
    else:
        check_response(reply)
        assert reply["id"] == expected_id(message) or message == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_garbage_text_gets_an_error_or_valid_reply(text):
    """Arbitrary text never crashes the dispatcher and gets a well-formed reply (or none)."""
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
        reply = answer(text)
        check_response(reply)
        assert reply["id"] is None and reply["error"]["code"] == -32700
        return
    reply = answer(text)
    if reply is not None:
        for response in reply if isinstance(reply, list) else [reply]:
            check_response(response)
    else:
        assert is_notification(decoded) or isinstance(decoded, list)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=60))
def test_binary_garbage(data):
    """Arbitrary bytes (maybe invalid UTF-8) get a well-formed reply or none."""
    reply = result_of(DISPATCHER.handle_text(data))
    if reply is not None:
        parsed = json.loads(reply)
        for response in parsed if isinstance(parsed, list) else [parsed]:
            check_response(response)
