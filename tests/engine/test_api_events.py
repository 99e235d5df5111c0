"""Live notifications through ``Engine.subscribe``: the engine's audit events and host, VM and
job changes reach the connections whose patterns match, in order, in the schema's shapes."""

from __future__ import annotations

import uuid

import pytest_twisted
from api_harness import FakeEngine, start_api, until

from engine.store.auditlog import AuditType


@pytest_twisted.async_yield_fixture
async def api(store):
    """The API on a ``FakeEngine`` and the real store."""
    server = await start_api(FakeEngine(), store)
    yield server
    await server.stop()


def ids(client, prefix=""):
    """The notification ids a client received, in order (those starting with ``prefix``)."""
    return [event_id for event_id, _ in client.events if event_id.startswith(prefix)]


@pytest_twisted.ensureDeferred
async def test_audit_event_reaches_a_subscriber(api):
    """An audit event the engine publishes reaches a subscribed client as |engine|event|<id>."""
    client = await api.login()
    assert await client.call("Engine.subscribe") == {"patterns": ["*"]}
    host_id = uuid.uuid4()
    event = api.engine.record(AuditType.HOST_HIGH_CPU, host_id=host_id, host="host1", cpu=97)
    await until(lambda: ids(client, "|engine|event|"), what="the event")
    [(event_id, params)] = [e for e in client.events if e[0].startswith("|engine|event|")]
    assert event_id == f"|engine|event|{event.id}"
    assert params["event"] == {
        "id": str(event.id), "time": params["event"]["time"], "type": "HOST_HIGH_CPU",
        "severity": "warning", "message": "Host host1 CPU usage is 97%",
        "host_id": str(host_id), "vm_id": None, "job_id": None,
        "details": {"host": "host1", "cpu": 97},
    }
    assert isinstance(params["notify_time"], int)


@pytest_twisted.ensureDeferred
async def test_action_progress_is_live(api):
    """Starting a VM notifies the job's creation and success, the VM's change and its event."""
    client = await api.login()
    await client.call("Engine.subscribe", {"patterns": ["*"]})
    await client.call("Hosts.add", {"name": "host1", "address": "h1"})
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 64})
    job = await client.call("VMs.start", {"id": vm["id"]})
    await until(lambda: any(p.get("job", {}).get("status") == "succeeded"
                            for _, p in client.events), what="the job's end")
    seen = [(event_id.split("|")[2], params) for event_id, params in client.events]
    kinds = [kind for kind, _ in seen]
    assert kinds == ["host", "event", "vm", "event", "job", "vm", "event", "job"]
    assert seen[4][1]["job"]["id"] == job["id"] and seen[4][1]["job"]["status"] == "pending"
    assert seen[5][1]["vm"]["status"] == "Up" and seen[5][1]["vm"]["id"] == vm["id"]
    assert seen[6][1]["event"]["type"] == "VM_STARTED"
    assert seen[7][1]["job"]["status"] == "succeeded"
    times = [params["notify_time"] for _, params in client.events]
    assert times == sorted(times) and len(set(times)) == len(times)


@pytest_twisted.ensureDeferred
async def test_patterns_choose_what_arrives(api):
    """A connection gets only the notifications its patterns match; unsubscribe stops them."""
    watcher = await api.login()
    admin = await api.login()
    vm = await admin.call("VMs.add", {"name": "web1", "memory_mib": 64})
    other = await admin.call("VMs.add", {"name": "web2", "memory_mib": 64})
    assert await watcher.call("Engine.subscribe", {"patterns": [f"|engine|vm|{vm['id']}"]}) == {
        "patterns": [f"|engine|vm|{vm['id']}"]}
    answer = await watcher.call("Engine.subscribe", {"patterns": ["|engine|job|*"]})
    assert answer == {"patterns": [f"|engine|vm|{vm['id']}", "|engine|job|*"]}
    for target in (other, vm):
        await admin.call("VMs.update", {"id": target["id"], "changes": {"vcpus": 2}})
    await until(lambda: ids(watcher), what="the VM's change")
    assert ids(watcher) == [f"|engine|vm|{vm['id']}"]
    assert await watcher.call("Engine.unsubscribe", {"patterns": [f"|engine|vm|{vm['id']}"]}) == {
        "patterns": ["|engine|job|*"]}
    await admin.call("VMs.update", {"id": vm["id"], "changes": {"vcpus": 3}})
    assert await watcher.call("Engine.ping")  # the change, had it been sent, came before this
    assert ids(watcher) == [f"|engine|vm|{vm['id']}"]


@pytest_twisted.ensureDeferred
async def test_removals_are_announced(api):
    """Removing a VM or a host sends its audit event, then |engine|removed|<id>."""
    client = await api.login()
    await client.call("Engine.subscribe", {"patterns": ["|engine|removed|*", "|engine|event|*"]})
    host = await client.call("Hosts.add", {"name": "host1", "address": "h1"})
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 64})
    await client.call("VMs.remove", {"id": vm["id"]})
    await client.call("Hosts.remove", {"id": host["id"]})
    await until(lambda: len(ids(client, "|engine|removed|")) == 2, what="the removals")
    removed = [(e, p) for e, p in client.events if not e.startswith("|engine|event|")]
    assert [(e, p["kind"], p["id"]) for e, p in removed] == [
        (f"|engine|removed|{vm['id']}", "vm", vm["id"]),
        (f"|engine|removed|{host['id']}", "host", host["id"]),
    ]
    types = [p["event"]["type"] for e, p in client.events if e.startswith("|engine|event|")]
    assert types == ["HOST_ADDED", "VM_ADDED", "VM_REMOVED", "HOST_REMOVED"]


@pytest_twisted.ensureDeferred
async def test_logins_are_live_events(api):
    """A login by someone else reaches subscribers as a USER_LOGIN event."""
    client = await api.login()
    await client.call("Engine.subscribe", {"patterns": ["|engine|event|*"]})
    await api.login()
    await until(lambda: client.events, what="the login event")
    assert client.events[0][1]["event"]["type"] == "USER_LOGIN"
    assert client.events[0][1]["event"]["details"] == {"user": "admin", "address": "127.0.0.1"}


@pytest_twisted.ensureDeferred
async def test_unsubscribed_and_closed_connections_get_nothing(api):
    """Connections that did not subscribe, or are gone, are sent nothing, and others still are."""
    quiet = await api.login()
    anonymous = await api.connect()
    gone = await api.login()
    await gone.call("Engine.subscribe")
    listening = await api.login()
    await listening.call("Engine.subscribe")
    await gone.close()
    before = len(gone.events)
    event = api.engine.record(AuditType.ENGINE_STARTED)
    await until(lambda: f"|engine|event|{event.id}" in ids(listening), what="the event")
    assert quiet.events == [] and anonymous.events == [] and len(gone.events) == before
    assert len(api.factory.bus._subscriptions) == 1


@pytest_twisted.ensureDeferred
async def test_bad_changes_do_not_stop_the_stream(api):
    """A change the API cannot publish is logged and skipped; the next one still arrives."""
    client = await api.login()
    await client.call("Engine.subscribe")
    api.engine._emit("weather", "sunny")
    api.engine._emit("vm", object())
    api.engine.record(AuditType.ENGINE_STARTED)
    await until(lambda: client.events, what="the event")
    assert ids(client) == ["|engine|event|1"]


@pytest_twisted.ensureDeferred
async def test_close_stops_listening_to_the_engine(store):
    """Stopping the API's resources unsubscribes it from the engine."""
    engine = FakeEngine()
    server = await start_api(engine, store)
    assert len(engine._listeners) == 1
    await server.stop()
    assert engine._listeners == []
