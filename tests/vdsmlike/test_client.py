"""Tests of AgentClient, call_sync and the vdsmlike-client command against a real server."""

from __future__ import annotations

import json
import os
import sys

import pytest
import pytest_twisted
from rpc.wsharness import Server, default_handlers, until
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from vdsmlike.cli.client import default_url, parse_params
from vdsmlike.client import HandshakeFailed, LinkLost, RemoteError, call_sync, connect
from vdsmlike.rpc.dispatcher import Dispatcher
from vdsmlike.rpc.websocket import AgentServerFactory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest_twisted.async_yield_fixture
async def server():
    srv = await Server(reactor, token="tok").start()
    yield srv
    await srv.stop()


@pytest_twisted.ensureDeferred
async def test_call_batch_and_errors(server):
    """call fires with results, fails with RemoteError; batch keeps order with errors in place."""
    client = await connect(reactor, server.url, token="tok")
    assert await client.call("Test.add", {"a": 2, "b": 2}) == 4
    assert await client.call("Test.add", [3, 4]) == 7
    with pytest.raises(RemoteError) as caught:
        await client.call("No.such")
    assert caught.value.code == -32601
    results = await client.batch(
        [("Test.echo", {"value": 1}), ("No.such", None), ("Host.ping2", {})]
    )
    assert results[0] == 1 and isinstance(results[1], RemoteError) and results[2] is True
    assert await client.batch([]) == []
    await client.close()


@pytest_twisted.ensureDeferred
async def test_pending_calls_fail_with_link_lost(server):
    """When the connection drops, every pending call fails with LinkLost, later calls too."""
    client = await connect(reactor, server.url, token="tok")
    slow = [client.call("Test.slow", {"seconds": 5, "value": i}) for i in range(3)]
    await until(reactor, lambda: server.protocols and server.protocols[-1].in_flight == 3)
    server.protocols[-1].transport.abortConnection()
    for d in slow:
        with pytest.raises(LinkLost):
            await d
    with pytest.raises(LinkLost):
        await client.call("Host.ping2")


@pytest_twisted.ensureDeferred
async def test_call_timeout(server):
    """A call with a timeout fails with TimeoutError and a late reply is ignored."""
    client = await connect(reactor, server.url, token="tok")
    with pytest.raises(defer.TimeoutError):
        await client.call("Test.slow", {"seconds": 0.3, "value": 1}, timeout=0.05)
    await deferLater(reactor, 0.3, lambda: None)
    assert await client.call("Host.ping2") is True
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ids_are_unique_and_replies_matched(server):
    """Concurrent calls get their own results whatever order the replies come in."""
    client = await connect(reactor, server.url, token="tok")
    calls = [client.call("Test.slow", {"seconds": (5 - i) * 0.02, "value": i}) for i in range(5)]
    assert await defer.gatherResults(calls) == [0, 1, 2, 3, 4]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_events_and_notify(server):
    """on_event sees events after subscribe; notify gets no reply."""
    client = await connect(reactor, server.url, token="tok")
    seen = []
    client.on_event(lambda event_id, params: seen.append((event_id, params)))
    assert await client.subscribe(["|virt|*"]) == {"patterns": ["|virt|*"]}
    client.notify("Host.ping2", {})
    server.bus.publish("|virt|VM_status|a", {"a": {"status": "Up"}})
    server.bus.publish("|net|host_conn|no_id", {})
    assert await client.call("Host.ping2") is True
    assert [e for e, _ in seen] == ["|virt|VM_status|a"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_connect_failures(server):
    """A bad token fails with HandshakeFailed; a closed port with a connection error."""
    with pytest.raises(HandshakeFailed):
        await connect(reactor, server.url, token="bad", timeout=5)
    with pytest.raises(Exception) as caught:
        await connect(reactor, "ws://127.0.0.1:1/jsonrpc", timeout=5)
    assert not isinstance(caught.value, HandshakeFailed)


@pytest_twisted.ensureDeferred
async def test_call_sync_from_a_thread(server):
    """call_sync answers results and raises RemoteError and HandshakeFailed, without a reactor."""
    assert await deferToThread(call_sync, server.url, "Test.add", [1, 2], "tok", 5) == 3
    with pytest.raises(RemoteError):
        await deferToThread(call_sync, server.url, "No.such", None, "tok", 5)
    with pytest.raises(HandshakeFailed):
        await deferToThread(call_sync, server.url, "Host.ping2", None, "bad", 5)
    big = "y" * 70000
    assert await deferToThread(call_sync, server.url, "Test.echo", {"value": big}, "tok", 5) == big


def test_parse_params_and_default_url(tmp_path):
    """key=value values are JSON when valid, else strings; the URL comes from agent.url."""
    assert parse_params(["a=1", "b=x", "c=[1,2]", 'd="1"', "e="]) == {
        "a": 1,
        "b": "x",
        "c": [1, 2],
        "d": "1",
        "e": "",
    }
    with pytest.raises(ValueError):
        parse_params(["novalue"])
    assert default_url({"VDSMLIKE_STATE_DIR": str(tmp_path)}) == "ws://127.0.0.1:54321/jsonrpc"
    (tmp_path / "agent.url").write_text("ws://10.1.1.1:1/jsonrpc\n")
    assert default_url({"VDSMLIKE_STATE_DIR": str(tmp_path)}) == "ws://10.1.1.1:1/jsonrpc"


def cli_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDSMLIKE_")}
    env.update({"VDSMLIKE_STATE_DIR": str(tmp_path), "PYTHONPATH": REPO}, **extra)
    return env


async def run_cli(tmp_path, *args, **env):
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "vdsmlike.cli.client", *args],
        env=cli_env(tmp_path, **env),
        path=REPO,
    )
    return out.decode(), err.decode(), code


@pytest_twisted.ensureDeferred
async def test_cli_end_to_end(server, tmp_path):
    """The CLI prints results as JSON (0), errors on stderr (1), usage and connect errors (2)."""
    (tmp_path / "agent.url").write_text(server.url)
    out, _, code = await run_cli(tmp_path, "Test.add", "a=40", "b=2", VDSMLIKE_TOKEN="tok")
    assert (code, json.loads(out)) == (0, 42)
    out, err, code = await run_cli(tmp_path, "--token", "tok", "--url", server.url, "No.such")
    assert code == 1 and "-32601" in err and out == ""
    _, err, code = await run_cli(tmp_path, "--token", "bad", "Host.ping2")
    assert code == 2 and "401" in err
    _, _, code = await run_cli(tmp_path, "Test.add", "novalue", VDSMLIKE_TOKEN="tok")
    assert code == 2


class _Lines(ProcessProtocol):
    def __init__(self):
        self.lines = defer.DeferredQueue()
        self.buffer = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.put(json.loads(line))

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


@pytest_twisted.ensureDeferred
async def test_cli_events(server, tmp_path):
    """--events prints matching events as JSON lines until interrupted."""
    proto = _Lines()
    reactor.spawnProcess(
        proto,
        sys.executable,
        [sys.executable, "-m", "vdsmlike.cli.client", "--url", server.url, "--events", "|virt|*"],
        env=cli_env(tmp_path, VDSMLIKE_TOKEN="tok"),
        path=REPO,
    )
    try:
        await until(reactor, lambda: any(server.bus.patterns(p) for p in server.protocols), 20)
        server.bus.publish("|net|x|y", {})
        server.bus.publish("|virt|VM_status|v", {"v": {"status": "Up"}})
        line = await proto.lines.get()
        assert line["event"] == "|virt|VM_status|v" and line["params"]["v"]["status"] == "Up"
    finally:
        proto.transport.signalProcess("INT")
    assert await proto.ended == 0


@pytest_twisted.ensureDeferred
async def test_schema_binder_wired_in(tmp_path):
    """The real schema binder drives the dispatcher: Host.subscribe validates its patterns."""
    from vdsmlike.api.schema import Schema

    schema = Schema.load()
    srv = Server(reactor, default_handlers(reactor))
    srv.dispatcher = Dispatcher(
        {"Host.ping2": lambda: None}, schema.bind_params, check_result=schema.check_result
    )
    srv.factory.dispatcher = srv.dispatcher
    await srv.start()
    try:
        client = await connect(reactor, srv.url)
        assert await client.call("Host.ping2") is True
        assert await client.subscribe(["|virt|*"]) == {"patterns": ["|virt|*"]}
        with pytest.raises(RemoteError) as caught:
            await client.call("Host.subscribe", {"patterns": [1]})
        assert caught.value.code == -32602
        with pytest.raises(RemoteError) as caught:
            await client.call("Host.unknownVerb")
        assert caught.value.code == -32601
        await client.close()
    finally:
        await srv.stop()
    assert isinstance(srv.factory, AgentServerFactory)
