"""Pure JSON-RPC 2.0 codec: message text in, parsed requests out; results and errors in, text out.

``parse(text)`` never raises: it returns a `Request`, an `Invalid` (something to answer with an
error object), or a `Batch` of those. The encoders build response and notification text; only
`encode_result` can fail, when the result is not JSON (the dispatcher answers -32603 then).

Rules (https://www.jsonrpc.org/specification): ``jsonrpc`` must be ``"2.0"``, ``method`` a string,
``params`` (optional) an object or an array, ``id`` (optional) a string, a number or null. A request
without an ``id`` member is a notification and gets no reply. Invalid JSON is -32700, anything
else malformed is -32600, each answered with the request's id when one can be read, else null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.errors import InvalidRequest, ParseError, RpcError

JSONRPC_VERSION = "2.0"

RequestId = str | int | float | None

_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Request:
    """
    A well-formed request or notification.

    :ivar params: an object (named params) or an array (positional params); ``{}`` when absent.
    :ivar is_notification: true when the message had no ``id`` member: run it, never answer it.
    """

    method: str
    params: dict[str, Any] | list[Any] = field(default_factory=dict)
    id: RequestId = None
    is_notification: bool = False


@dataclass(frozen=True)
class Invalid:
    """A message or batch element that can only be answered with ``error`` (-32700 or -32600)."""

    error: RpcError
    id: RequestId = None


@dataclass(frozen=True)
class Batch:
    """A non-empty JSON array of requests; each element is parsed on its own."""

    items: tuple[Request | Invalid, ...]


Message = Request | Invalid | Batch


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number out of range: {_short(text, 40)}")
    return number


def _loads(text: str | bytes) -> Any:
    """:raises ValueError: on anything that is not one strict JSON value."""
    if isinstance(text, bytes | bytearray | memoryview):
        text = bytes(text).decode("utf-8")
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def parse(text: str | bytes) -> Message:
    """
    Parse one WebSocket message.

    :param text: the message, as text or UTF-8 bytes.
    :returns: a `Request`, an `Invalid` or a `Batch`; never raises.
    """
    try:
        value = _loads(text)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        return Invalid(ParseError(_short(str(e))))
    if isinstance(value, list):
        if not value:
            return Invalid(InvalidRequest("empty batch"))
        return Batch(tuple(parse_request(item) for item in value))
    return parse_request(value)


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def parse_request(value: Any) -> Request | Invalid:
    """
    Check one decoded request object.

    :returns: a `Request`, or an `Invalid` carrying -32600 and the request's id when readable.
    """
    if not isinstance(value, dict):
        return Invalid(InvalidRequest(f"expected an object, got {_json_type(value)}"))
    request_id = value.get("id")
    if not _valid_id(request_id):
        kind = _json_type(request_id)
        return Invalid(InvalidRequest(f"id must be a string, a number or null, not {kind}"))
    problem = _request_problem(value)
    if problem:
        return Invalid(InvalidRequest(problem), request_id)
    return Request(
        method=value["method"],
        params=value.get("params", {}),
        id=request_id,
        is_notification="id" not in value,
    )


def _request_problem(value: dict[str, Any]) -> str | None:
    """:returns: why the object is not a request, or None."""
    if value.get("jsonrpc") != JSONRPC_VERSION:
        return 'jsonrpc must be "2.0"'
    if not isinstance(value.get("method"), str):
        return "method must be a string"
    if "params" in value and not isinstance(value["params"], dict | list):
        return f"params must be an object or an array, not {_json_type(value['params'])}"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encode_result(request_id: RequestId, result: Any) -> str:
    """
    Encode a success response.

    :raises TypeError, ValueError: if ``result`` is not JSON (sets, NaN, arbitrary objects).
    """
    return _encoder.encode({"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": result})


def encode_error(request_id: RequestId, error: RpcError) -> str:
    """Encode an error response from an `RpcError`."""
    return _encoder.encode(
        {"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": error.to_error_object()}
    )


def encode_batch(responses: Sequence[str]) -> str | None:
    """
    Join already encoded responses into one batch reply.

    :returns: the JSON array, or None when there is nothing to answer (all notifications).
    """
    if not responses:
        return None
    return "[" + ",".join(responses) + "]"


def encode_request(method: str, params: Any, request_id: RequestId) -> str:
    """Encode a request (the client side of the codec)."""
    return _encoder.encode(
        {"jsonrpc": JSONRPC_VERSION, "id": request_id, "method": method, "params": params}
    )


def encode_notification(method: str, params: Any) -> str:
    """
    Encode a notification: a request without ``id``, as events are sent.

    :raises TypeError, ValueError: if ``params`` is not JSON.
    """
    return _encoder.encode({"jsonrpc": JSONRPC_VERSION, "method": method, "params": params})


def loads(text: str | bytes) -> Any:
    """
    Decode strict JSON (no NaN or Infinity), as the client reads replies.

    :raises ValueError: if the text is not JSON.
    """
    return _loads(text)
