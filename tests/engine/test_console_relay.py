"""VM serial consoles end to end: the admin API over real WebSockets, the real engine core on
real PostgreSQL, and real agents in this process on libvirt's test driver.

The test driver runs no guest, so nothing writes the serial logs by itself: each test writes
the VM's serial file on its host, at the path the agent put in the domain XML, as QEMU would
for the guest. Notifications are checked against ``schema/engine.yml`` here (they go to one
connection, not through the bus the API server validates).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import pytest_twisted
from api_harness import ApiServer, login, until
from engine_harness import job_done, sleep, vm_status
from twisted.logger import globalLogPublisher

from engine.service import ADMIN
from vdsmlike.client import RemoteError

UNKNOWN = "0a0b0c0d-0000-4000-8000-000000000000"


@pytest_twisted.async_yield_fixture
async def api(engine_run):
    """The API with validation on, over the running engine and its store."""
    server = await ApiServer(engine_run.engine, engine_run.top.store).start()
    server.password = Path(engine_run.config.password_file).read_text().strip()
    yield server
    await server.stop()


async def refused(d, code: int) -> RemoteError:
    """Await ``d``; :returns: its ``RemoteError``, which must have ``code``."""
    with pytest.raises(RemoteError) as caught:
        await d
    assert caught.value.code == code, caught.value
    return caught.value


async def admin(api):
    """A client logged in as the admin."""
    return await login(api.url, ADMIN, api.password)


async def running_vm(client, engine, name: str, host: dict) -> str:
    """Define a VM and start it on ``host``; :returns: its id once Up."""
    vm = await client.call("VMs.add", {"name": name, "memory_mib": 128})
    await client.call("VMs.start", {"id": vm["id"], "host_id": host["id"]})
    await vm_status(engine, vm["id"], "Up")
    return vm["id"]


async def add_host(client, engine, name: str, agent) -> dict:
    """Register an agent as a host and wait until it is Up."""
    host = await client.call(
        "Hosts.add", {"name": name, "address": "127.0.0.1", "port": agent.port}
    )
    await until_host_up(engine, host["id"])
    return host


async def until_host_up(engine, host_id: str) -> None:
    async def up():
        return (await engine.get_host(host_id)).dynamic.status == "Up"

    for _ in range(200):
        if await up():
            return
        await sleep(0.05)
    raise AssertionError(f"host {host_id} never Up")


def serial_log(agent, vm_id: str) -> Path:
    """The VM's serial file on that agent's host, where its domain XML points."""
    return Path(agent.top.container.get(vm_id).spec.serial_path)


def write(path: Path, text: str) -> None:
    """Append to a serial log, as the guest's serial port does."""
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def pieces(client, api, vm_id: str) -> list[dict]:
    """The console notifications the client received for a VM, each checked by the schema."""
    found = [p for e, p in client.events if e == f"|engine|console|{vm_id}"]
    for params in found:
        api.factory.schema.check_event(f"|engine|console|{vm_id}", params)
    return found


def shown(found: list[dict]) -> str:
    """What a terminal shows after these pieces (cleared at each reset)."""
    text = ""
    for piece in found:
        text = piece["data"] if piece["reset"] else text + piece["data"]
    return text


def contiguous(found: list[dict]) -> bool:
    """Each piece starts where the previous one ended, or resets."""
    return all(
        b["reset"] or b["offset"] == a["next"] for a, b in zip(found, found[1:], strict=False)
    )


@pytest_twisted.ensureDeferred
async def test_console_tail_then_watchers_share_one_poller(api, engine_run, engine_agents):
    """A page reads the tail, two connections watch, new output reaches both from one poller;
    unwatching and closing stop it."""
    engine = engine_run.engine
    agent = await engine_agents.start("a")
    first = await admin(api)
    host = await add_host(first, engine, "h1", agent)
    vm_id = await running_vm(first, engine, "con1", host)
    log = serial_log(agent, vm_id)
    write(log, "boot: ok\n")
    tail = await first.call("VMs.console", {"id": vm_id})
    assert tail == {
        "data": "boot: ok\n",
        "offset": 0,
        "next": 9,
        "size": 9,
        "reset": False,
        "host": host["id"],
    }
    assert (await first.call("VMs.console", {"id": vm_id, "offset": 6, "size": 2}))["data"] == "ok"
    assert await first.call("VMs.consoleWatch", {"id": vm_id, "offset": tail["next"]}) == {
        "offset": 9
    }
    second = await admin(api)
    assert await second.call("VMs.consoleWatch", {"id": vm_id}) == {"offset": 9}
    [stream] = engine.console.streams.values()
    assert len(stream.watchers) == 2
    write(log, "login: ")
    await until(lambda: pieces(first, api, vm_id) and pieces(second, api, vm_id), 10, "output")
    expected = {"vm": vm_id, "data": "login: ", "offset": 9, "next": 16, "reset": False}
    for client in (first, second):
        [piece] = pieces(client, api, vm_id)
        assert {k: v for k, v in piece.items() if k != "notify_time"} == expected
    reads = stream.reads
    await sleep(1.0)
    assert 1 <= stream.reads - reads <= 6, "one poll every 0.25 s, not one per watcher"
    assert await first.call("VMs.consoleUnwatch", {"id": vm_id}) is True
    write(log, "root\n")
    await until(lambda: len(pieces(second, api, vm_id)) == 2, 10, "the second piece")
    await sleep(0.6)
    assert len(pieces(first, api, vm_id)) == 1, "an unwatched connection gets nothing more"
    assert list(engine.console.streams) == [stream.vm_id]
    await second.close()
    await until(lambda: not engine.console.streams, 10, "the poller to stop")
    reads = stream.reads
    await sleep(0.6)
    assert stream.reads == reads and stream.running is False
    await first.close()


@pytest_twisted.ensureDeferred
async def test_errors_not_running_unknown_and_unauthenticated(api, engine_run, engine_agents):
    """A VM running nowhere is 409 for a read and watched from 0; an unknown VM is 404; a
    connection without a session gets 401 for all three verbs."""
    engine = engine_run.engine
    client = await admin(api)
    vm = await client.call("VMs.add", {"name": "idle", "memory_mib": 128})
    error = await refused(client.call("VMs.console", {"id": vm["id"]}), 409)
    assert "not running on any host" in error.message
    await refused(client.call("VMs.console", {"id": UNKNOWN}), 404)
    await refused(client.call("VMs.consoleWatch", {"id": UNKNOWN}), 404)
    await refused(client.call("VMs.console", {"id": vm["id"], "size": 2 * 1024 * 1024}), -32602)
    await refused(client.call("VMs.console", {"id": vm["id"], "offset": -3}), -32602)
    assert await client.call("VMs.consoleWatch", {"id": vm["id"]}) == {"offset": 0}
    assert vm["id"] in {str(v) for v in engine.console.streams}
    assert await client.call("VMs.consoleUnwatch", {"id": vm["id"]}) is True
    assert engine.console.streams == {}
    anonymous = await api.connect()
    for verb in ("VMs.console", "VMs.consoleWatch", "VMs.consoleUnwatch"):
        error = await refused(anonymous.call(verb, {"id": vm["id"]}), 401)
        assert error.data == {"reason": "login_required"}
    assert engine.console.streams == {}
    await anonymous.close()
    await client.close()


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_stream(api, engine_run, engine_agents):
    """Logging out ends the connection's console streams with its session; an unwatch sent
    while the watch was starting is not lost."""
    engine = engine_run.engine
    agent = await engine_agents.start("a")
    client = await admin(api)
    host = await add_host(client, engine, "h1", agent)
    vm_id = await running_vm(client, engine, "con2", host)
    starting = client.call("VMs.consoleWatch", {"id": vm_id})
    unwatched = client.call("VMs.consoleUnwatch", {"id": vm_id})
    assert (await starting)["offset"] == 0 and await unwatched is True
    assert engine.console.streams == {}
    await client.call("VMs.consoleWatch", {"id": vm_id})
    assert engine.console.streams
    await client.call("Auth.logout")
    assert engine.console.streams == {}
    write(serial_log(agent, vm_id), "after logout\n")
    await sleep(0.6)
    assert pieces(client, api, vm_id) == []
    await refused(client.call("VMs.consoleWatch", {"id": vm_id}), 401)
    await client.close()


@pytest_twisted.ensureDeferred
async def test_stream_follows_the_vm_to_another_host(api, engine_run, engine_agents):
    """The stream keeps watching while the VM is down and, once it runs on another host, reads
    that host's log from 0 with reset."""
    engine = engine_run.engine
    a, b = await engine_agents.start("a"), await engine_agents.start("b")
    client = await admin(api)
    h1, h2 = await add_host(client, engine, "h1", a), await add_host(client, engine, "h2", b)
    vm_id = await running_vm(client, engine, "mover", h1)
    write(serial_log(a, vm_id), "on h1\n")
    await client.call("VMs.consoleWatch", {"id": vm_id, "offset": 0})
    await until(lambda: shown(pieces(client, api, vm_id)) == "on h1\n", 10, "h1's output")
    await client.call("VMs.stop", {"id": vm_id})
    await vm_status(engine, vm_id, "Down")
    await sleep(0.6)
    assert engine.console.streams, "a down VM stays watched"
    await client.call("VMs.start", {"id": vm_id, "host_id": h2["id"]})
    await vm_status(engine, vm_id, "Up")
    write(serial_log(b, vm_id), "on h2\n")
    await until(lambda: shown(pieces(client, api, vm_id)) == "on h2\n", 10, "h2's output")
    found = pieces(client, api, vm_id)
    [moved] = [p for p in found if p["reset"]]
    assert moved["offset"] == 0 and contiguous(found)
    assert (await client.call("VMs.console", {"id": vm_id}))["host"] == h2["id"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_lost_host_link_is_retried_quietly(api, engine_run, engine_agents):
    """When the host's link drops, the stream retries at each poll, logs it once, and goes on
    from where it was once the engine reconnects: no gap, no repeat, no reset."""
    engine = engine_run.engine
    agent = await engine_agents.start("a")
    client = await admin(api)
    host = await add_host(client, engine, "h1", agent)
    vm_id = await running_vm(client, engine, "flaky", host)
    log = serial_log(agent, vm_id)
    write(log, "before\n")
    await client.call("VMs.consoleWatch", {"id": vm_id, "offset": 0})
    await until(lambda: shown(pieces(client, api, vm_id)) == "before\n", 10, "first output")
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        await agent.top.listener._port.stopListening()  # no reconnection for a while
        for protocol in agent._connections:
            protocol.transport.abortConnection()
        write(log, "while cut off\n")
        await sleep(1.5)
        port = await _listen_again(agent)
        assert port
        await until(
            lambda: "while cut off" in shown(pieces(client, api, vm_id)),
            15,
            "output written while the link was down",
        )
    finally:
        globalLogPublisher.removeObserver(logged.append)
    found = pieces(client, api, vm_id)
    assert shown(found) == "before\nwhile cut off\n" and contiguous(found)
    assert not any(p["reset"] for p in found)
    warnings = [
        e
        for e in logged
        if e.get("log_namespace", "").startswith("engine.consolerelay")
        and e.get("log_level") is not None
        and e["log_level"].name == "warn"
    ]
    assert 1 <= len(warnings) <= 2, [e.get("reason") for e in warnings]
    await client.close()


async def _listen_again(agent):
    """Listen again on the agent's port (its service tree kept running meanwhile)."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    listener = agent.top.listener
    endpoint = serverFromString(reactor, f"tcp:{agent.port}:interface=127.0.0.1")
    listener._port = await endpoint.listen(listener._factory)
    return listener._port


@pytest_twisted.ensureDeferred
async def test_stream_follows_a_live_migration(api, engine_run, engine_agents):
    """After a live migration (emulated by the agents on the test driver) the stream reads the
    destination's log from 0 and says reset."""
    engine = engine_run.engine
    a, b = await engine_agents.start("a"), await engine_agents.start("b")
    client = await admin(api)
    h1, h2 = await add_host(client, engine, "h1", a), await add_host(client, engine, "h2", b)
    vm_id = await running_vm(client, engine, "migrant", h1)
    write(serial_log(a, vm_id), "before migration\n")
    await client.call("VMs.consoleWatch", {"id": vm_id, "offset": 0})
    await until(lambda: "before migration" in shown(pieces(client, api, vm_id)), 10, "output")
    job = await client.call("VMs.migrate", {"id": vm_id, "host_id": h2["id"]})
    done = await job_done(engine, job["id"], timeout=30)
    if done.status != "succeeded":
        pytest.skip(f"the agents cannot migrate here: {done.error}")
    assert (await engine.get_vm(vm_id)).dynamic.run_on_host == uuid.UUID(h2["id"])
    write(serial_log(b, vm_id), "after migration\n")
    await until(
        lambda: shown(pieces(client, api, vm_id)).endswith("after migration\n"),
        10,
        "the destination's output",
    )
    found = pieces(client, api, vm_id)
    resets = [p for p in found if p["reset"]]
    assert resets and resets[-1]["offset"] == 0 and contiguous(found)
    await client.close()
