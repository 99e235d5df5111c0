"""The admin API's JSON-RPC transport: bad JSON, bad requests, unknown verbs, bad params,
batches, notifications, out-of-order replies, the size limit and unexpected failures; after
each, the engine keeps serving."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from api_harness import ADMIN, PASSWORD, FakeEngine, raw_connect, request, start_api
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent

from engine.api.site import ApiSettings
from engine.errors import EngineNotReady
from engine.store.errors import InvalidValue, StoreUnavailable
from vdsmlike.client import RemoteError

LIMIT = 64 * 1024


@pytest_twisted.async_yield_fixture
async def api(store):
    """The API on a ``FakeEngine``, with a 64 KiB message limit."""
    settings = ApiSettings(validate=True, auto_ping_interval=0, max_message_size=LIMIT)
    server = await start_api(FakeEngine(), store, settings=settings)
    yield server
    await server.stop()


async def logged_in_raw(api):
    """A raw connection, logged in."""
    raw = await raw_connect(api.url)
    raw.send_json(request("Auth.login", {"user": ADMIN, "password": PASSWORD}, id="login"))
    assert "token" in (await raw.next_reply())["result"]
    return raw


async def still_serving(raw):
    """The connection still answers a ping."""
    raw.send_json(request("Engine.ping", id="ping"))
    reply = await raw.next_reply()
    assert reply["id"] == "ping" and "version" in reply["result"], reply


@pytest_twisted.ensureDeferred
async def test_bad_json(api):
    """Text that is not JSON, or a binary message not in UTF-8, is -32700 with a null id."""
    raw = await logged_in_raw(api)
    for text, binary in [('{"jsonrpc": "2.0", "method":', False), ("NaN", False),
                         (b"\xff\xfe{}", True)]:
        raw.send_text(text, binary=binary)
        reply = await raw.next_reply()
        assert reply["id"] is None and reply["error"]["code"] == -32700, (text, reply)
        assert reply["error"]["message"].startswith("Parse error")
        await still_serving(raw)
    raw.send_text(b"\xff\xfe{}")  # a text frame that is not UTF-8 breaks WebSocket itself
    assert await raw.closed == 1007
    await still_serving(await raw_connect(api.url))


@pytest_twisted.ensureDeferred
async def test_invalid_requests(api):
    """Messages that are JSON but no request are -32600, with their id when it is readable."""
    raw = await logged_in_raw(api)
    cases = [
        ([], None),
        (42, None),
        ({"method": "Engine.ping", "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": 5, "id": "x"}, "x"),
        ({"jsonrpc": "2.0", "method": "Engine.ping", "params": "a", "id": 8}, 8),
    ]
    for message, request_id in cases:
        raw.send_json(message)
        reply = await raw.next_reply()
        assert reply["error"]["code"] == -32600 and reply["id"] == request_id, (message, reply)
    await still_serving(raw)


@pytest_twisted.ensureDeferred
async def test_unknown_verb(api):
    """An unknown verb is -32601, logged in or not."""
    raw = await raw_connect(api.url)
    raw.send_json(request("VMs.explode", id=1))
    assert (await raw.next_reply())["error"] == {
        "code": -32601, "message": "Method not found: VMs.explode"}
    raw = await logged_in_raw(api)
    raw.send_json(request("Host.getStats", id=2))
    assert (await raw.next_reply())["error"]["code"] == -32601
    await still_serving(raw)


@pytest_twisted.ensureDeferred
async def test_bad_params(api):
    """Unknown, missing, mistyped or out-of-range params are -32602 naming the param."""
    client = await api.login()
    cases = [
        ("VMs.add", {"name": "a"}, "memory_mib: missing required param"),
        ("VMs.add", {"name": "a", "memory_mib": "lots"}, "memory_mib: 'lots' is not of type"),
        ("VMs.add", {"name": "a", "memory_mib": 0}, "memory_mib: 0 is less than the minimum"),
        ("VMs.add", {"name": "a", "memory_mib": 1, "colour": "red"}, "colour: unknown param"),
        ("VMs.get", {"id": "not-a-uuid"}, "id: 'not-a-uuid' does not match"),
        ("VMs.get", ["a", "b"], "VMs.get takes at most 1 params, got 2"),
        ("VMs.update", {"id": "0a0b0c0d-0000-4000-8000-000000000000", "changes": {}},
         "changes: {} should be non-empty"),
        ("VMs.update", {"id": "0a0b0c0d-0000-4000-8000-000000000000",
                        "changes": {"mem": 1}}, "changes.mem: unknown property"),
        ("Hosts.add", {"name": "h", "address": "a", "port": 70000}, "port: 70000 is greater"),
        ("Events.list", {"limit": 5000}, "limit: 5000 is greater than the maximum of 1000"),
        ("Events.list", {"severity": "fatal"}, "severity: 'fatal' is not one of"),
        ("Events.list", {"since": "-1"}, "since: '-1' does not match"),
        ("Engine.subscribe", {"patterns": "*"}, "patterns: '*' is not of type 'array'"),
        ("Auth.login", {"user": ADMIN}, "password: missing required param"),
    ]
    results = await client.batch([(verb, params) for verb, params, _ in cases])
    for (verb, _, expected), result in zip(cases, results, strict=True):
        assert isinstance(result, RemoteError) and result.code == -32602, (verb, result)
        assert result.message.startswith(f"Invalid params: {expected}"), (verb, result.message)
    assert api.engine.calls[1:] == []
    assert await client.call("VMs.list") == []


@pytest_twisted.ensureDeferred
async def test_batches_and_notifications(api):
    """A batch is answered in one array (notifications omitted); a notification runs unanswered."""
    raw = await logged_in_raw(api)
    raw.send_json([
        request("Engine.ping", id=1),
        {"jsonrpc": "2.0", "method": "VMs.add", "params": {"name": "quiet", "memory_mib": 64}},
        request("VMs.nope", id=2),
        request("VMs.get", {"id": "bad"}, id=3),
        {"jsonrpc": "1.0", "method": "Engine.ping", "id": 4},
    ])
    replies = {reply["id"]: reply for reply in await raw.next_reply()}
    assert set(replies) == {1, 2, 3, 4}
    assert "result" in replies[1]
    assert [replies[n]["error"]["code"] for n in (2, 3, 4)] == [-32601, -32602, -32600]
    raw.send_json({"jsonrpc": "2.0", "method": "Hosts.list"})  # a notification: no reply
    raw.send_json([{"jsonrpc": "2.0", "method": "Engine.ping"}])  # only notifications: none
    raw.send_json(request("VMs.list", id=5))
    reply = await raw.next_reply()
    assert reply["id"] == 5 and [vm["name"] for vm in reply["result"]] == ["quiet"]


@pytest_twisted.ensureDeferred
async def test_replies_come_as_calls_finish(api):
    """A slow call does not hold back a quick one sent after it on the same connection."""
    client = await api.login()
    api.engine.delays["list_hosts"] = 0.3
    order = []
    slow = client.call("Hosts.list").addCallback(lambda r: order.append("slow"))
    quick = client.call("VMs.list").addCallback(lambda r: order.append("quick"))
    await gatherResults([slow, quick])
    assert order == ["quick", "slow"]


@pytest_twisted.ensureDeferred
async def test_message_size_limit(api):
    """A message over the limit is -32600 and the connection stays; far over, it is closed."""
    raw = await logged_in_raw(api)
    raw.send_json(request("VMs.add", {"name": "x" * LIMIT, "memory_mib": 1}, id=1))
    reply = await raw.next_reply()
    assert reply["error"]["code"] == -32600 and "Request too large" in reply["error"]["message"]
    await still_serving(raw)
    raw.send_text("x" * (4 * LIMIT + 1))
    assert await raw.closed == 1009
    await still_serving(await raw_connect(api.url))


@pytest_twisted.ensureDeferred
async def test_unexpected_failures(api):
    """A bug is -32603 without its text; an unreachable store or a starting engine is 503."""
    client = await api.login()
    api.engine.fail_next["list_hosts"] = RuntimeError("secret internals")
    error = await _error(client.call("Hosts.list"))
    assert error.code == -32603 and "secret" not in error.message
    assert error.message == "Internal JSON-RPC error: unexpected RuntimeError; see the engine log"
    api.engine.fail_next["list_vms"] = StoreUnavailable("PostgreSQL is unreachable")
    error = await _error(client.call("VMs.list"))
    assert (error.code, error.message) == (503, "Engine unavailable: PostgreSQL is unreachable")
    api.engine.fail_next["list_jobs"] = EngineNotReady("the engine is starting")
    assert (await _error(client.call("Jobs.list"))).code == 503
    api.engine.fail_next["add_vm"] = InvalidValue("memory is odd")
    error = await _error(client.call("VMs.add", {"name": "v", "memory_mib": 3}))
    assert (error.code, error.message) == (-32602, "Invalid params: memory is odd")
    assert await client.call("Hosts.list") == []


@pytest_twisted.ensureDeferred
async def test_many_connections(api):
    """Connections are independent: each logs in and calls concurrently."""
    clients = await gatherResults([Deferred.fromCoroutine(api.login()) for _ in range(10)])
    results = await gatherResults([c.call("Engine.subscribe") for c in clients])
    assert all(r == {"patterns": ["*"]} for r in results)
    await clients[0].call("VMs.add", {"name": "web1", "memory_mib": 64})
    lists = await gatherResults([c.call("VMs.list") for c in clients])
    assert all(len(vms) == 1 for vms in lists)


@pytest_twisted.ensureDeferred
async def test_plain_http_on_the_api_path(api):
    """A plain HTTP request to /api is refused and the WebSocket API keeps serving."""
    url = api.url.replace("ws://", "http://").encode()
    response = await Agent(reactor).request(b"GET", url)
    assert response.code == 426  # Upgrade Required (not autobahn's status page)
    response.deliverBody(Protocol())  # read and drop the body
    client = await api.login()
    assert await client.call("Engine.ping")


async def _error(d):
    with pytest.raises(RemoteError) as caught:
        await d
    return caught.value


def test_request_helper_is_json():
    """The raw request helper builds JSON-RPC 2.0 requests."""
    assert json.loads(json.dumps(request("Engine.ping")))["jsonrpc"] == "2.0"
