"""Tests of the WebSocket transport over real connections on 127.0.0.1."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogPublisher

from vdsmlike.client import HandshakeFailed, connect
from vdsmlike.config import is_loopback
from vdsmlike.rpc.websocket import listen_description

from .wsharness import Server, default_handlers, raw_connect, request, until


@pytest_twisted.async_yield_fixture
async def server():
    srv = await Server(reactor).start()
    yield srv
    await srv.stop()


async def started(**options):
    return await Server(reactor, **options).start()


@pytest_twisted.ensureDeferred
async def test_call_and_reply(server):
    """A request over a real WebSocket gets its response."""
    client = await raw_connect(reactor, server.url)
    client.send_json(request("Test.add", {"a": 1, "b": 2}, id=9))
    assert await client.next() == {"jsonrpc": "2.0", "id": 9, "result": 3}


@pytest_twisted.ensureDeferred
async def test_binary_frames_are_accepted(server):
    """A binary frame holding UTF-8 JSON is answered like a text one."""
    client = await raw_connect(reactor, server.url)
    client.send_json(request("Host.ping2"), binary=True)
    assert (await client.next())["result"] is True


@pytest_twisted.ensureDeferred
async def test_wrong_path_is_404(server):
    """A handshake on another path is refused with HTTP 404."""
    with pytest.raises(HandshakeFailed, match="404"):
        await connect(reactor, server.url.replace("/jsonrpc", "/other"), timeout=5)


@pytest_twisted.ensureDeferred
async def test_token_required():
    """With a token set, a handshake without it or with a wrong one gets HTTP 401."""
    srv = await started(token="s3cret")
    try:
        with pytest.raises(HandshakeFailed, match="401"):
            await connect(reactor, srv.url, timeout=5)
        with pytest.raises(HandshakeFailed, match="401"):
            await connect(reactor, srv.url, token="wrong", timeout=5)
    finally:
        await srv.stop()


@pytest_twisted.ensureDeferred
async def test_token_in_header_or_query_is_accepted():
    """A Bearer header or a token query parameter both open the connection."""
    srv = await started(token="s3cret")
    try:
        client = await connect(reactor, srv.url, token="s3cret", timeout=5)
        assert await client.call("Host.ping2") is True
        raw = await raw_connect(reactor, srv.url + "?token=s3cret")
        raw.send_json(request("Host.ping2"))
        assert (await raw.next())["result"] is True
    finally:
        await srv.stop()


@pytest_twisted.ensureDeferred
async def test_oversized_message_gets_error_and_connection_stays():
    """A message over the limit is answered -32600 with id null; the connection still works."""
    srv = await started(max_message_size=1000)
    try:
        client = await raw_connect(reactor, srv.url)
        client.send_json(request("Test.echo", {"value": "x" * 2000}))
        reply = await client.next()
        assert reply["id"] is None and reply["error"]["code"] == -32600
        assert (
            "Request too large" in reply["error"]["message"]
            and "limit 1000" in reply["error"]["message"]
        )
        client.send_json(request("Host.ping2", id=2))
        assert (await client.next())["id"] == 2
    finally:
        await srv.stop()


@pytest_twisted.ensureDeferred
async def test_message_beyond_hard_cap_closes_with_1009():
    """A message over four times the limit makes autobahn close the connection with 1009."""
    srv = await started(max_message_size=1000)
    try:
        client = await raw_connect(reactor, srv.url)
        client.send_json(request("Test.echo", {"value": "x" * 5000}))
        assert await client.close_code == 1009
    finally:
        await srv.stop()


@pytest_twisted.ensureDeferred
async def test_replies_come_out_of_order(server):
    """A fast call answers before a slow one sent earlier on the same connection."""
    client = await raw_connect(reactor, server.url)
    client.send_json(request("Test.slow", {"seconds": 0.3, "value": "slow"}, id=1))
    client.send_json(request("Test.slow", {"seconds": 0.0, "value": "fast"}, id=2))
    first, second = await client.next(), await client.next()
    assert [first["id"], second["id"]] == [2, 1]
    assert second["result"] == "slow"


@pytest_twisted.ensureDeferred
async def test_notifications_get_no_reply(server):
    """A notification is not answered: the next message is the reply to a later request."""
    client = await raw_connect(reactor, server.url)
    client.send_json({"jsonrpc": "2.0", "method": "Host.ping2"})
    client.send_json({"jsonrpc": "2.0", "method": "No.such"})
    client.send_json(request("Test.echo", {"value": "after"}, id=5))
    assert (await client.next())["id"] == 5


@pytest_twisted.ensureDeferred
async def test_batch(server):
    """A batch is answered with one array; its notifications are left out."""
    client = await raw_connect(reactor, server.url)
    client.send_json(
        [
            request("Test.add", [1, 1], id=1),
            {"jsonrpc": "2.0", "method": "Host.ping2"},
            request("No.such", id=2),
        ]
    )
    replies = await client.next()
    assert [r["id"] for r in replies] == [1, 2]
    assert replies[0]["result"] == 2 and replies[1]["error"]["code"] == -32601


@pytest_twisted.ensureDeferred
async def test_disconnect_mid_call_is_harmless():
    """A client leaving with a call in flight leaves no error and the server keeps serving."""
    gate = Deferred()
    srv = await started(handlers={**default_handlers(reactor), "Test.gate": lambda: gate})
    errors = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        client = await raw_connect(reactor, srv.url)
        client.send_json(request("Test.gate"))
        gone = srv.protocols[-1]
        await until(reactor, lambda: gone.in_flight == 1)
        client.transport.abortConnection()
        await until(reactor, lambda: not gone.live)
        gate.callback({"late": True})
        again = await raw_connect(reactor, srv.url)
        again.send_json(request("Host.ping2"))
        assert (await again.next())["result"] is True
    finally:
        globalLogPublisher.removeObserver(observe)
        await srv.stop()
    assert errors == []
    assert gone.in_flight == 0


@pytest_twisted.ensureDeferred
async def test_events_go_to_subscribed_connections_only(server):
    """An event reaches the connections whose patterns match, and no other."""
    watcher, other = await raw_connect(reactor, server.url), await raw_connect(reactor, server.url)
    watcher.send_json(request("Host.subscribe", {"patterns": ["|virt|*"]}, id=1))
    assert (await watcher.next())["result"] == {"patterns": ["|virt|*"]}
    server.bus.publish("|virt|VM_status|v1", {"v1": {"status": "Up"}})
    event = await watcher.next()
    assert event["method"] == "|virt|VM_status|v1" and "id" not in event
    assert event["params"]["v1"] == {"status": "Up"} and "notify_time" in event["params"]
    other.send_json(request("Host.ping2", id=7))
    assert (await other.next())["id"] == 7


@pytest_twisted.ensureDeferred
async def test_subscribe_and_unsubscribe_patterns(server):
    """subscribe and unsubscribe answer the connection's current patterns and filter events."""
    client = await raw_connect(reactor, server.url)
    client.send_json(request("Host.subscribe", {"patterns": ["a*", "b*"]}, id=1))
    assert (await client.next())["result"] == {"patterns": ["a*", "b*"]}
    client.send_json(request("Host.unsubscribe", {"patterns": ["a*"]}, id=2))
    assert (await client.next())["result"] == {"patterns": ["b*"]}
    server.bus.publish("apple", {})
    server.bus.publish("banana", {})
    assert (await client.next())["method"] == "banana"
    client.send_json(request("Host.subscribe", {"patterns": "nope"}, id=3))
    assert (await client.next())["error"]["code"] == -32602


@pytest_twisted.ensureDeferred
async def test_closed_connection_is_unsubscribed(server):
    """When a connection closes, the bus forgets it."""
    client = await raw_connect(reactor, server.url)
    client.send_json(request("Host.subscribe", {"patterns": ["*"]}, id=1))
    await client.next()
    protocol = server.protocols[-1]
    assert server.bus.patterns(protocol) == ["*"]
    client.sendClose(1000)
    await until(reactor, lambda: server.bus.patterns(protocol) == [])
    server.bus.publish("x", {})


@pytest_twisted.ensureDeferred
async def test_subscribe_allowed_while_recovering():
    """While the agent is not ready, subscribe works and other verbs answer 99."""
    srv = await Server(reactor, default_handlers(reactor), is_ready=lambda: False).start()
    try:
        client = await raw_connect(reactor, srv.url)
        client.send_json(request("Host.subscribe", {"patterns": ["*"]}, id=1))
        assert "result" in await client.next()
        client.send_json(request("Host.ping2", id=2))
        assert (await client.next())["error"]["code"] == 99
    finally:
        await srv.stop()


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 54321, "tcp:port=54321:interface=127.0.0.1"),
        ("::1", 0, "tcp:port=0:interface=\\:\\:1"),
        ("[::]", 80, "tcp:port=80:interface=\\:\\:"),
        ("", 80, "tcp:port=80"),
    ],
)
def test_listen_description(host, port, expected):
    """Listen descriptions escape IPv6 colons for serverFromString."""
    assert listen_description(host, port) == expected


@pytest_twisted.ensureDeferred
async def test_listen_description_works_with_server_from_string(server):
    """The IPv6 description is accepted by serverFromString and can listen on ::1."""
    endpoint = serverFromString(reactor, listen_description("::1", 0))
    try:
        port = await endpoint.listen(server.factory)
    except Exception as e:  # no IPv6 loopback in this sandbox
        pytest.skip(f"no IPv6 loopback: {e}")
    assert port.getHost().host == "::1"
    await port.stopListening()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host, expected):
    """is_loopback recognises loopback addresses and localhost only."""
    assert is_loopback(host) is expected
