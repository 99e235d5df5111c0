"""Hosts through the engine: add, connect, monitor, lose, recover, bad input, removal.

Real PostgreSQL (the test's database) and real agents in this process on libvirt's test driver,
over real WebSockets on 127.0.0.1; the engine runs with fast intervals (``engine_harness.FAST``).
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from engine_harness import add_up_host, events_of, eventually, host_status, sleep
from link_harness import JunkServer, free_port
from twisted.internet import reactor

from engine.errors import ActionRefused
from engine.store.errors import DuplicateName, InvalidValue, NotFound


@pytest_twisted.ensureDeferred
async def test_added_host_connects_and_is_monitored(engine_run, engine_agents):
    """An added host goes Installing → Up with its capabilities, CPU count and memory stored,
    and its statistics are polled into the store with a history."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await engine.add_host("h1", "127.0.0.1", port=agent.port)
    assert host.dynamic.status == "Installing"
    up = await host_status(engine, host.id, "Up")
    assert up.dynamic.cpu_count == 4
    assert up.dynamic.mem_total_mib == 16384
    assert up.dynamic.capabilities["software_version"]
    assert "agent connected" in up.dynamic.status_reason
    sampled = await eventually(lambda: engine.get_host(host.id),
                               lambda h: h.statistics is not None and h.dynamic.last_seen)
    assert sampled.statistics.cpu_idle is not None
    history = await eventually(lambda: engine.store.host_statistics_history(host.id),
                               lambda samples: len(samples) >= 2)
    assert all(s.host_id == host.id for s in history)
    types = [e.type for e in await engine.list_events(host_id=host.id, limit=100)]
    assert "HOST_ADDED" in types and "HOST_UP" in types


@pytest_twisted.ensureDeferred
async def test_live_events_tell_host_changes(engine_run, engine_agents):
    """Subscribers get the host row on each change and the audit events, after commit."""
    engine = engine_run.engine
    seen: list[tuple[str, object]] = []
    unsubscribe = engine.subscribe(lambda kind, payload: seen.append((kind, payload)))
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    await eventually(lambda: _value(seen), lambda s: any(
        k == "host" and p.id == host.id and p.dynamic.status == "Up" for k, p in s))
    kinds = {k for k, _ in seen}
    assert {"host", "event"} <= kinds
    assert any(k == "event" and p.type == "HOST_UP" for k, p in seen)
    unsubscribe()
    count = len(seen)
    await sleep(0.7)
    assert len(seen) == count


async def _value(value):
    return value


@pytest_twisted.ensureDeferred
async def test_host_that_does_not_answer(engine_run):
    """A host whose address refuses connections stays Installing with the reason, its failure
    is an audit event, and after the install timeout it is NonResponsive."""
    engine = engine_run.engine
    host = await engine.add_host("ghost", "127.0.0.1", port=free_port())
    failed = await eventually(lambda: events_of(engine, "HOST_CONNECT_FAILED", host_id=host.id),
                              lambda events: len(events) >= 1)
    assert "refused" in failed[0].message.lower()
    installing = await engine.get_host(host.id)
    assert installing.dynamic.status == "Installing"
    gone = await host_status(engine, host.id, "NonResponsive", timeout=8)
    assert "did not connect within" in gone.dynamic.status_reason
    assert len(await events_of(engine, "HOST_NON_RESPONSIVE", host_id=host.id)) == 1


@pytest_twisted.ensureDeferred
async def test_host_that_answers_garbage(engine_run):
    """An address that answers junk instead of a WebSocket handshake never comes Up, and the
    engine keeps serving."""
    engine = engine_run.engine
    junk = JunkServer(reactor, b"\x00\xffnot http at all\r\n\r\n")
    url = junk.start()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        host = await engine.add_host("junk", "127.0.0.1", port=port)
        failed = await eventually(lambda: events_of(engine, "HOST_CONNECT_FAILED",
                                                    host_id=host.id), lambda e: len(e) >= 1)
        assert failed[0].details["reason"]
        assert (await engine.get_host(host.id)).dynamic.status == "Installing"
        assert [h.name for h in await engine.list_hosts()] == ["junk"]
    finally:
        await junk.stop()


@pytest_twisted.ensureDeferred
async def test_lost_host_goes_non_responsive_and_recovers(engine_run, engine_agents):
    """When its agent dies the host goes Connecting, then NonResponsive after the grace period;
    when the agent is back, the host is Up again; each step is an audit event."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    await agent.stop()
    connecting = await host_status(engine, host.id, "Connecting")
    assert "lost" in connecting.dynamic.status_reason
    await host_status(engine, host.id, "NonResponsive", timeout=8)
    await agent.start()
    back = await host_status(engine, host.id, "Up", timeout=10)
    assert "agent connected" in back.dynamic.status_reason
    for kind in ("HOST_CONNECTING", "HOST_NON_RESPONSIVE", "HOST_RECOVERED"):
        assert await events_of(engine, kind, host_id=host.id), kind


@pytest_twisted.ensureDeferred
async def test_bad_host_input(engine_run, engine_agents):
    """A duplicate name, an empty name or address, a bad port and unknown ids are refused
    with typed errors, and nothing is written."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    await add_up_host(engine, "h1", agent)
    with pytest.raises(DuplicateName):
        await engine.add_host("h1", "127.0.0.1", port=agent.port)
    for name, address, port in (("", "127.0.0.1", 1), ("x", "", 1), ("x", "127.0.0.1", 0),
                                ("x", "127.0.0.1", 70000)):
        with pytest.raises(InvalidValue):
            await engine.add_host(name, address, port=port)
    assert [h.name for h in await engine.list_hosts()] == ["h1"]
    for call in (engine.get_host, engine.remove_host, engine.maintenance, engine.activate):
        with pytest.raises(NotFound):
            await call(uuid.uuid4())
    with pytest.raises(NotFound):
        await engine.get_host("not-an-id")


@pytest_twisted.ensureDeferred
async def test_remove_host_needs_maintenance(engine_run, engine_agents):
    """An Up host cannot be removed; in Maintenance (no VMs) it can, and its link stops."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    with pytest.raises(ActionRefused, match="Maintenance"):
        await engine.remove_host(host.id)
    job = await engine.maintenance(host.id)
    await host_status(engine, host.id, "Maintenance")
    assert (await engine.get_job(job.id)).status in ("running", "succeeded")
    await eventually(lambda: engine.get_job(job.id), lambda j: j.status == "succeeded")
    await engine.remove_host(host.id)
    assert await engine.list_hosts() == []
    assert host.id not in engine.monitors
    with pytest.raises(NotFound):
        await engine.get_host(host.id)
    assert await events_of(engine, "HOST_REMOVED")
