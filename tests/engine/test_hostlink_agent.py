"""HostLink against real agents over real WebSockets on 127.0.0.1 (libvirt's test driver).

In-process agents (the production service tree) for connect, calls, events, a crash and a
restart on the same port; child-process agents for SIGSTOP/SIGCONT and SIGKILL; plain TCP
servers for addresses that refuse, stay silent or answer junk.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

import pytest
import pytest_twisted
from link_harness import (
    ChildAgent,
    InProcessAgent,
    JunkServer,
    LoggedFailures,
    Recorder,
    free_port,
    wait_for,
)
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor

from engine.hostlink import CallTimeout, HostLink, LinkDown, LinkEventKind
from vdsmlike.client import RemoteError

K = LinkEventKind
FAST_RETRY = backoffPolicy(initialDelay=0.05, maxDelay=0.4, jitter=lambda: 0)


class Links:
    """Builds links to real addresses and stops them all at teardown."""

    def __init__(self) -> None:
        self.made: list[HostLink] = []

    def make(self, url: str, **options: Any) -> tuple[HostLink, Recorder]:
        """Start a link with test-friendly timing; :returns: it and its recorder."""
        recorder = Recorder()
        settings: dict[str, Any] = dict(
            reactor=reactor,
            retry_policy=FAST_RETRY,
            connect_timeout=2.0,
            call_timeout=5.0,
            heartbeat_interval=0.2,
            heartbeat_timeout=0.3,
        )
        settings.update(options)
        link = HostLink(url, recorder, **settings)
        link.startService()
        self.made.append(link)
        return link, recorder

    async def stop(self) -> None:
        """Stop every running link."""
        for link in self.made:
            if link.running:
                await link.stopService()


@pytest_twisted.async_yield_fixture
async def links():
    """A link builder; every link is stopped after the test."""
    built = Links()
    yield built
    await built.stop()


@pytest_twisted.async_yield_fixture
async def agent(tmp_path):
    """A real agent in this process on a private libvirt test-driver host."""
    running = InProcessAgent(tmp_path, reactor)
    await running.start()
    yield running
    if running.top.running:
        await running.stop()


@pytest_twisted.async_yield_fixture
async def child(tmp_path):
    """A real agent daemon in a child process; killed if the test leaves it running."""
    process = ChildAgent(tmp_path)
    await process.start(reactor)
    yield process
    if process.alive():
        process.signal(signal.SIGCONT)
        await process.stop(reactor)


def vm_params() -> dict[str, Any]:
    """Legacy VM.create params for a small VM."""
    return {"vmId": str(uuid.uuid4()), "vmName": f"vm-{uuid.uuid4().hex[:6]}", "memSize": 128}


def statuses(recorder: Recorder, vm_id: str) -> list[str]:
    """The statuses reported for a VM through the link's events."""
    return [
        e.params[vm_id]["status"]
        for e in recorder.of(K.EVENT)
        if e.event_id == f"|virt|VM_status|{vm_id}"
    ]


@pytest_twisted.ensureDeferred
async def test_connects_reads_capabilities_and_calls(agent, links):
    """The link connects to a real agent, reads its capabilities, and calls return."""
    link, recorder = links.make(agent.url)
    caps = await link.when_connected()
    assert recorder.kinds() == ["connected"] and recorder.events[0].caps == caps
    assert caps["cpuCores"] and "supportedENGINEs" in caps and link.capabilities == caps
    assert await link.call("Host.ping2") is True
    stats = await link.call("Host.getStats")
    assert "memFree" in stats
    with pytest.raises(RemoteError) as refused:
        await link.call("No.such")
    assert refused.value.code == -32601


@pytest_twisted.ensureDeferred
async def test_vm_status_events_reach_the_listener(agent, links):
    """Events the agent sends after subscribe reach the listener: a new VM's status changes."""
    link, recorder = links.make(agent.url)
    await link.when_connected()
    params = vm_params()
    created = await link.call("VM.create", {"vmParams": params})
    assert created["status"] == "WaitForLaunch"
    vm_id = params["vmId"]
    await wait_for(reactor, lambda: "Up" in statuses(recorder, vm_id), what="VM Up")
    assert statuses(recorder, vm_id)[:3] == ["WaitForLaunch", "Powering up", "Up"]
    assert all("notify_time" in e.params for e in recorder.of(K.EVENT))


@pytest_twisted.ensureDeferred
async def test_agent_crash_is_reported_and_fails_pending_calls(agent, links):
    """When the agent dies, link_lost is reported, the pending call fails with LinkDown and
    later calls fail at once."""
    link, recorder = links.make(agent.url)
    await link.when_connected()
    pending = link.call("Host.getAllVmStats")
    await agent.stop()
    with pytest.raises(LinkDown):
        await pending
    await wait_for(reactor, lambda: recorder.count(K.LINK_LOST) == 1, what="link_lost")
    assert recorder.of(K.LINK_LOST)[0].reason == (
        "peer dropped the TCP connection without previous WebSocket closing handshake"
    )
    with pytest.raises(LinkDown):
        await link.call("Host.ping2")


@pytest_twisted.ensureDeferred
async def test_reconnects_to_restarted_agent_and_subscribes_again(agent, links):
    """An agent restarted on the same port is reconnected by itself after failed attempts with
    growing delays, and events flow again (the link subscribed anew)."""
    link, recorder = links.make(agent.url, retry_policy=None)  # production backoff
    await link.when_connected()
    await agent.stop()
    await wait_for(reactor, lambda: recorder.count(K.CONNECT_FAILED) >= 2, what="2 failures")
    refused = recorder.of(K.CONNECT_FAILED)
    await agent.start()
    await wait_for(reactor, lambda: recorder.count(K.CONNECTED) == 2, timeout=15, what="back")
    kinds = recorder.kinds()
    assert kinds[:2] == ["connected", "link_lost"] and kinds[-1] == "connected"
    assert all("refused" in e.reason.lower() for e in refused)
    failed = recorder.of(K.CONNECT_FAILED)  # later ones may be 99 while the agent recovers
    assert [e.attempt for e in failed] == list(range(1, len(failed) + 1))
    bases = [min(0.5 * 1.5 ** (n + 1), 10) for n in range(1, len(failed) + 1)]  # + jitter < 1
    assert all(b <= e.retry_in < b + 1 for b, e in zip(bases, failed, strict=True))
    params = vm_params()
    await link.call("VM.create", {"vmParams": params})
    vm_id = params["vmId"]
    await wait_for(reactor, lambda: "Up" in statuses(recorder, vm_id), what="VM Up via new link")


@pytest_twisted.ensureDeferred
async def test_refused_address_keeps_retrying_with_growing_delays(links):
    """An address where nothing listens is retried, each failure reported with a growing
    delay until the cap."""
    link, recorder = links.make(f"ws://127.0.0.1:{free_port()}/jsonrpc")
    await wait_for(reactor, lambda: recorder.count(K.CONNECT_FAILED) >= 6, what="6 failures")
    failed = recorder.of(K.CONNECT_FAILED)
    delays = [e.retry_in for e in failed[:6]]
    assert delays == pytest.approx([0.075, 0.1125, 0.16875, 0.253125, 0.3796875, 0.4])
    assert "refused" in failed[0].reason.lower() and not link.connected
    with pytest.raises(LinkDown):
        await link.call("Host.ping2")


@pytest_twisted.ensureDeferred
async def test_silent_server_times_out_each_attempt(links):
    """A server that accepts and never answers fails each attempt after connect_timeout."""
    server = JunkServer(reactor, b"")
    url = server.start()
    try:
        link, recorder = links.make(url, connect_timeout=0.3)
        await wait_for(reactor, lambda: recorder.count(K.CONNECT_FAILED) >= 2, what="timeouts")
        assert recorder.of(K.CONNECT_FAILED)[0].reason == "no answer within 0.3 s"
        await link.stopService()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_token_is_reported_clearly(tmp_path, links):
    """An agent that refuses the token fails every attempt with a handshake error naming 401."""
    agent = InProcessAgent(tmp_path, reactor, token="right-token")
    url = await agent.start()
    try:
        with LoggedFailures() as logged:
            link, recorder = links.make(url, token="wrong-token")
            await wait_for(reactor, lambda: recorder.count(K.CONNECT_FAILED) >= 2, what="401s")
            await link.stopService()
        reason = recorder.of(K.CONNECT_FAILED)[0].reason
        assert reason == "handshake failed: WebSocket connection upgrade failed [401]: Unauthorized"
        assert recorder.count(K.CONNECTED) == 0 and logged.failures == [], logged.texts()
        good, good_events = links.make(url, token="right-token")
        assert (await good.when_connected())["cpuCores"]
    finally:
        await agent.stop()


@pytest.mark.parametrize(
    ("junk", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "upgrade failed [200]"),
        (b"\x00\xff\xfe garbage \x01\x02\r\n\r\n" * 20, "unreadable handshake answer"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "peer dropped the TCP connection"),
    ],
    ids=["http", "binary", "ssh"],
)
@pytest_twisted.ensureDeferred
async def test_junk_server_is_reported_and_harmless(links, junk, why):
    """A TCP server that answers junk fails each attempt with a clear reason; nothing logs a
    traceback and the link stops cleanly."""
    server = JunkServer(reactor, junk)
    url = server.start()
    try:
        with LoggedFailures() as logged:
            link, recorder = links.make(url)
            await wait_for(reactor, lambda: recorder.count(K.CONNECT_FAILED) >= 3, what="junk")
            await link.stopService()
        reasons = {e.reason for e in recorder.of(K.CONNECT_FAILED)}
        assert all(r.startswith("handshake failed: ") and why in r for r in reasons), reasons
        assert recorder.count(K.CONNECTED) == 0 and logged.failures == [], logged.texts()
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_stopped_agent_process_misses_heartbeats_then_answers(child, links):
    """A SIGSTOPped agent misses heartbeats (reported with a count); after SIGCONT the next
    heartbeat is answered and heartbeat_ok is reported on the same connection."""
    link, recorder = links.make(child.url(), connect_timeout=5.0, heartbeat_timeout=0.5)
    await link.when_connected()
    before = len(recorder.events)

    def since_stop(kind: LinkEventKind) -> list[Any]:
        return [e for e in recorder.events[before:] if e.kind is kind]

    child.signal(signal.SIGSTOP)
    try:
        await wait_for(reactor, lambda: len(since_stop(K.HEARTBEAT_MISSED)) >= 2, what="misses")
        with pytest.raises(CallTimeout):
            await link.call("Host.ping2", timeout=0.2)
    finally:
        child.signal(signal.SIGCONT)
    await wait_for(reactor, lambda: since_stop(K.HEARTBEAT_OK), what="heartbeat_ok")
    missed = [e.missed for e in since_stop(K.HEARTBEAT_MISSED)]
    assert missed == list(range(missed[0], missed[0] + len(missed)))
    assert recorder.kinds()[-1] == "heartbeat_ok" and recorder.count(K.LINK_LOST) == 0
    assert link.connected and await link.call("Host.ping2") is True


@pytest_twisted.ensureDeferred
async def test_killed_agent_process_fails_pending_call(child, links):
    """An agent process killed while a call is pending: the call fails with LinkDown and the
    loss is reported."""
    link, recorder = links.make(child.url(), connect_timeout=5.0)
    await link.when_connected()
    child.signal(signal.SIGSTOP)
    pending = link.call("Host.getStats")
    child.signal(signal.SIGKILL)
    with pytest.raises(LinkDown):
        await pending
    await wait_for(reactor, lambda: recorder.count(K.LINK_LOST) == 1, what="link_lost")
    child.reap()


@pytest_twisted.ensureDeferred
async def test_auto_ping_drops_a_frozen_agent_and_the_link_comes_back(child, links):
    """With WebSocket auto-ping on, a frozen agent's connection is dropped after the pong
    timeout; attempts then time out until the agent runs again, and the link reconnects."""
    link, recorder = links.make(
        child.url(), connect_timeout=0.5, auto_ping_interval=1.0, auto_ping_timeout=2.0
    )
    await link.when_connected()
    before = len(recorder.events)  # the agent may have answered 99 while it recovered
    child.signal(signal.SIGSTOP)
    try:
        await wait_for(reactor, lambda: recorder.count(K.LINK_LOST) == 1, what="ping timeout")
        await wait_for(
            reactor,
            lambda: "connect_failed" in recorder.kinds()[before:],
            what="an attempt while frozen",
        )
    finally:
        child.signal(signal.SIGCONT)
    await wait_for(reactor, lambda: recorder.count(K.CONNECTED) == 2, what="reconnected")
    assert "ping" in recorder.of(K.LINK_LOST)[0].reason.lower()
    frozen = [e for e in recorder.events[before:] if e.kind is K.CONNECT_FAILED]
    assert frozen[0].reason == "no answer within 0.5 s"
    assert await link.call("Host.ping2") is True
