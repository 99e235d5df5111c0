"""Tests of the pure JSON-RPC 2.0 codec."""

from __future__ import annotations

import json

import pytest

from vdsmlike.api.errors import InternalError, InvalidRequest, NoSuchVM, ParseError
from vdsmlike.rpc import jsonrpc
from vdsmlike.rpc.jsonrpc import Batch, Invalid, Request


def test_named_params_request():
    """A request with an object of params parses to a Request with those params and its id."""
    message = jsonrpc.parse('{"jsonrpc":"2.0","method":"VM.getStats","params":{"vmID":"a"},"id":7}')
    assert message == Request("VM.getStats", {"vmID": "a"}, 7, False)


def test_positional_params_request():
    """A request with an array of params keeps the array."""
    message = jsonrpc.parse('{"jsonrpc":"2.0","method":"m","params":[1,"x"],"id":"abc"}')
    assert message == Request("m", [1, "x"], "abc", False)


def test_absent_params_become_empty_object():
    """A request without params gets an empty object of params."""
    assert jsonrpc.parse('{"jsonrpc":"2.0","method":"Host.ping2","id":1}').params == {}


def test_notification_has_no_id_member():
    """A request without an id member is a notification."""
    message = jsonrpc.parse('{"jsonrpc":"2.0","method":"m","params":[]}')
    assert isinstance(message, Request) and message.is_notification


def test_null_id_is_a_request_not_a_notification():
    """An explicit null id is a request that is answered, with id null."""
    message = jsonrpc.parse('{"jsonrpc":"2.0","method":"m","id":null}')
    assert isinstance(message, Request) and not message.is_notification and message.id is None


def test_bytes_are_decoded_as_utf8():
    """A binary message is decoded as UTF-8 JSON."""
    message = jsonrpc.parse('{"jsonrpc":"2.0","method":"é","id":1}'.encode())
    assert message.method == "é"


@pytest.mark.parametrize("text", ["{", "", "nope", '{"a":NaN}', "[1e999]", b"\xff\xfe"])
def test_invalid_json_is_a_parse_error_with_null_id(text):
    """Text that is not strict JSON is answered -32700 with a null id."""
    message = jsonrpc.parse(text)
    assert isinstance(message, Invalid)
    assert isinstance(message.error, ParseError) and message.id is None


def test_deep_nesting_is_a_parse_error():
    """Nesting too deep for the decoder is a parse error, not a crash."""
    message = jsonrpc.parse("[" * 100000 + "]" * 100000)
    assert isinstance(message, Invalid) and isinstance(message.error, ParseError)


def test_empty_batch_is_invalid_request():
    """An empty array is -32600."""
    message = jsonrpc.parse("[]")
    assert isinstance(message, Invalid) and isinstance(message.error, InvalidRequest)


@pytest.mark.parametrize(
    ("request_object", "expected_id"),
    [
        ({"jsonrpc": "1.0", "method": "m", "id": 3}, 3),
        ({"method": "m", "id": 3}, 3),
        ({"jsonrpc": "2.0", "method": 5, "id": "x"}, "x"),
        ({"jsonrpc": "2.0", "method": "m", "params": "bar", "id": 4}, 4),
        ({"jsonrpc": "2.0", "method": "m", "params": None}, None),
        ({"jsonrpc": "2.0", "method": "m", "id": {"a": 1}}, None),
        ({"jsonrpc": "2.0", "method": "m", "id": True}, None),
        ({"jsonrpc": "2.0", "method": "m", "id": [1]}, None),
    ],
)
def test_invalid_request_objects(request_object, expected_id):
    """A malformed request object is -32600, answered with its id when the id is valid."""
    message = jsonrpc.parse(json.dumps(request_object))
    assert isinstance(message, Invalid)
    assert isinstance(message.error, InvalidRequest)
    assert message.id == expected_id


@pytest.mark.parametrize("text", ["1", '"x"', "null", "true"])
def test_non_object_message_is_invalid_request(text):
    """A JSON scalar as the whole message is -32600."""
    message = jsonrpc.parse(text)
    assert isinstance(message, Invalid) and isinstance(message.error, InvalidRequest)


def test_batch_elements_are_parsed_one_by_one():
    """In a batch, each element is a Request or its own Invalid."""
    message = jsonrpc.parse(
        '[{"jsonrpc":"2.0","method":"m","id":1}, 1, {"jsonrpc":"2.0","method":"n"}]'
    )
    assert isinstance(message, Batch)
    first, second, third = message.items
    assert first == Request("m", {}, 1, False)
    assert isinstance(second, Invalid) and isinstance(second.error, InvalidRequest)
    assert third.is_notification


def test_encode_result_and_error():
    """Responses carry jsonrpc, id and exactly one of result or error."""
    assert json.loads(jsonrpc.encode_result(1, {"a": [1]})) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"a": [1]},
    }
    error = json.loads(jsonrpc.encode_error("x", NoSuchVM(vmId="v")))
    assert error == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {"code": 1, "message": "Virtual machine does not exist: {'vmId': 'v'}"},
    }


@pytest.mark.parametrize("result", [{1, 2}, float("nan"), object()])
def test_encode_result_refuses_non_json(result):
    """A result that is not JSON raises instead of producing invalid text."""
    with pytest.raises((TypeError, ValueError)):
        jsonrpc.encode_result(1, result)


def test_encode_batch():
    """Encoded responses join into one array; no responses means no reply."""
    parts = [jsonrpc.encode_result(1, True), jsonrpc.encode_error(2, InternalError("x"))]
    assert [r["id"] for r in json.loads(jsonrpc.encode_batch(parts))] == [1, 2]
    assert jsonrpc.encode_batch([]) is None


def test_encode_notification():
    """A notification has method and params and no id."""
    assert json.loads(jsonrpc.encode_notification("|a|b|c", {"x": 1})) == {
        "jsonrpc": "2.0",
        "method": "|a|b|c",
        "params": {"x": 1},
    }


def test_encode_request_round_trips():
    """An encoded request parses back to the same Request."""
    text = jsonrpc.encode_request("VM.create", {"vmID": "a"}, 12)
    assert jsonrpc.parse(text) == Request("VM.create", {"vmID": "a"}, 12, False)
