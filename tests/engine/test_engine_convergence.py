"""The engine's view converges with the hosts': after an engine restart, an agent restart, a lost
connection, a VM that dies on its own, a VM the engine never defined, and a PostgreSQL restart.

Real PostgreSQL and real in-process agents on libvirt's test driver. An in-process agent that is
restarted opens a fresh test-driver host, so its VMs are gone, as a crashed host's would be.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import pytest_twisted
from engine_harness import (
    add_up_host,
    events_of,
    eventually,
    host_status,
    job_done,
    sleep,
    vm_status,
)
from link_harness import node_uri
from twisted.internet import reactor

from engine.errors import ActionRefused
from engine.store.errors import NotFound, StoreUnavailable
from vdsmlike import client as agent_client
from vdsmlike.agentproc import AgentProcess


async def up_vm(engine, name, host_id=None, memory=128):
    """Define and start a VM, and wait until it is Up; :returns: the ``Vm``."""
    vm = await engine.add_vm({"name": name, "memory_mib": memory})
    job = await job_done(engine, (await engine.start_vm(vm.id, host_id=host_id)).id)
    assert job.status == "succeeded", job.error
    return await vm_status(engine, vm.id, "Up")


async def find_vm(engine, vm_id):
    """:returns: the VM, or None while the engine does not know it."""
    try:
        return await engine.get_vm(vm_id)
    except NotFound:
        return None


async def agent_vms(agent):
    """:returns: ``{vmId: status}`` as the agent itself lists them."""
    client = await agent_client.connect(reactor, agent.url)
    try:
        listed = await client.call("Host.getVMList", {"onlyUUID": False})
    finally:
        await client.close()
    return {entry["vmId"]: entry["status"] for entry in listed}


@pytest_twisted.ensureDeferred
async def test_engine_restart_converges(engine_run, engine_agents):
    """Stopped and started again on the same database, the engine reconnects to its hosts,
    keeps the VMs that still run, marks Down the one that vanished meanwhile, fails the job it
    left unfinished, and records the VM someone started behind its back as external."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    kept = await up_vm(engine, "kept")
    lost = await up_vm(engine, "lost")
    late = await engine.add_vm({"name": "late", "memory_mib": 128})
    unfinished = await engine.start_vm(late.id)
    await engine_run.stop()

    client = await agent_client.connect(reactor, agent.url)
    await client.call("VM.destroy", {"vmID": str(lost.id)})
    stranger = str(uuid.uuid4())
    await client.call("VM.create", {"vmParams": {"vmId": stranger, "vmName": "stranger",
                                                  "memSize": 64}})
    await client.close()

    await engine_run.start()
    engine = engine_run.engine
    await host_status(engine, host.id, "Up")
    assert (await vm_status(engine, kept.id, "Up")).dynamic.run_on_host == host.id
    gone = await vm_status(engine, lost.id, "Down")
    assert "does not have it" in gone.dynamic.exit_message
    job = await job_done(engine, unfinished.id)
    assert job.status in ("failed", "succeeded")
    if job.status == "failed":
        assert "engine" in job.error
    external = await eventually(lambda: engine.list_vms(), lambda vms: any(
        v.name == "stranger" for v in vms))
    found = next(v for v in external if v.name == "stranger")
    assert found.dynamic.external and found.dynamic.run_on_host == host.id
    assert await events_of(engine, "ENGINE_STARTED")


@pytest_twisted.ensureDeferred
async def test_job_interrupted_by_restart_is_failed_and_vm_converges(engine_run, engine_agents):
    """A start job the engine stops in the middle ends failed ("interrupted") or done, never
    running; after the restart the VM's state is what its host says: Up if the agent got
    VM.create, else Down."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    await add_up_host(engine, "h1", agent)
    vm = await engine.add_vm({"name": "mid", "memory_mib": 128})
    job = await engine.start_vm(vm.id)
    await engine_run.restart()
    engine = engine_run.engine
    ended = await engine.get_job(job.id)
    assert ended.status in ("failed", "succeeded")
    if ended.status == "failed":
        assert "interrupted" in ended.error
    on_host = str(vm.id) in await agent_vms(agent)
    await vm_status(engine, vm.id, "Up" if on_host else "Down")


@pytest_twisted.ensureDeferred
async def test_agent_restart_loses_vms(engine_run, engine_agents):
    """When an agent restarts without its VMs (a crashed host), the host comes back Up and its
    VMs are Down with the reason, each an error event; their memory is free again."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    vms = [await up_vm(engine, f"v{i}", memory=4000) for i in range(3)]
    await agent.stop()
    await host_status(engine, host.id, "Connecting")
    await agent.start()
    await host_status(engine, host.id, "Up")
    for vm in vms:
        down = await vm_status(engine, vm.id, "Down")
        assert down.dynamic.run_on_host is None
    errors = await events_of(engine, "VM_DOWN_ERROR")
    assert {e.vm_id for e in errors} == {vm.id for vm in vms}
    again = await up_vm(engine, "again", memory=12000)
    assert again.dynamic.run_on_host == host.id


@pytest_twisted.ensureDeferred
async def test_non_responsive_host_vms_are_unknown_until_it_answers(engine_run, engine_agents):
    """A host whose agent stays away past the grace period is NonResponsive and its VMs
    Unknown; a VM there cannot be started elsewhere meanwhile (it might still run)."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    vm = await up_vm(engine, "v")
    await agent.stop()
    await host_status(engine, host.id, "NonResponsive", timeout=8)
    unknown = await vm_status(engine, vm.id, "Unknown")
    assert unknown.dynamic.run_on_host == host.id
    assert await events_of(engine, "VM_UNKNOWN", vm_id=vm.id)
    with pytest.raises(ActionRefused, match="Unknown"):
        await engine.start_vm(vm.id)
    await agent.start()
    await host_status(engine, host.id, "Up")
    await vm_status(engine, vm.id, "Down")


@pytest_twisted.ensureDeferred
async def test_lost_connection_catches_up(engine_run, engine_agents):
    """When only the connection is lost (the agent and its VMs stay), changes made meanwhile
    are picked up when the engine reconnects: the poll reconciles what events missed."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    vm = await up_vm(engine, "v")
    factory = agent.top.listener._factory
    build = factory.buildProtocol
    factory.buildProtocol = lambda addr: None  # refuse new connections for a while
    for protocol in agent._connections:
        if protocol.transport is not None:
            protocol.transport.abortConnection()
    await host_status(engine, host.id, "Connecting")
    await agent.top.hypervisor.suspend(str(vm.id))
    await sleep(0.3)
    factory.buildProtocol = build
    await host_status(engine, host.id, "Up")
    paused = await vm_status(engine, vm.id, "Paused")
    assert paused.dynamic.run_on_host == host.id


@pytest_twisted.ensureDeferred
async def test_vm_that_dies_on_its_own(engine_run, engine_agents):
    """A VM killed behind the agent's back goes Down in the store with its exit reason, as an
    audit event, the HA hook is told, and the host forgets it."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    await add_up_host(engine, "h1", agent)
    vm = await up_vm(engine, "victim")
    told = []
    engine.sync.down_observers.append(told.append)
    await agent.top.hypervisor.destroy(str(vm.id), False)
    down = await vm_status(engine, vm.id, "Down")
    assert down.dynamic.exit_message and down.dynamic.run_on_host is None
    kinds = {e.type for e in await engine.list_events(vm_id=vm.id, limit=100)}
    assert kinds & {"VM_DOWN", "VM_DOWN_ERROR"}
    assert [d.vm_id for d in told] == [vm.id]
    await eventually(lambda: agent_vms(agent), lambda vms: str(vm.id) not in vms)


@pytest_twisted.ensureDeferred
async def test_external_vm_is_recorded_never_destroyed(engine_run, engine_agents):
    """A VM found on a host that the engine did not define is recorded as external (with its
    size from the host) and an audit event, and is left running."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    await engine.add_vm({"name": "stranger", "memory_mib": 64})  # the name is taken
    stranger = str(uuid.uuid4())
    client = await agent_client.connect(reactor, agent.url)
    await client.call("VM.create", {"vmParams": {"vmId": stranger, "vmName": "stranger",
                                                  "memSize": 96, "smp": 2}})
    await client.close()
    vm = await eventually(lambda: find_vm(engine, stranger),
                          lambda v: v is not None and v.dynamic.status == "Up",
                          what="external VM Up")
    assert vm.dynamic.external and vm.dynamic.run_on_host == host.id
    assert (vm.static.mem_mib, vm.static.vcpus) == (96, 2)
    assert vm.name.startswith("stranger-external-")
    assert len(await events_of(engine, "VM_EXTERNAL_FOUND")) == 1
    with pytest.raises(ActionRefused, match="external"):
        await engine.start_vm(vm.id)
    await sleep(1.0)
    assert (await agent_vms(agent))[stranger] == "Up"


@pytest_twisted.ensureDeferred
async def test_database_restart(pg, engine_run, engine_agents):
    """While PostgreSQL restarts, operations fail with StoreUnavailable and monitoring goes on
    (a host that goes NonResponsive meanwhile is written so once the database is back); then
    the engine works again without being restarted."""
    engine = engine_run.engine
    agent = await engine_agents.start()
    host = await add_up_host(engine, "h1", agent)
    await pg.cluster.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await engine.add_vm({"name": "during", "memory_mib": 128})
        await agent.stop()
        await eventually(_value, lambda _: engine.monitors[host.id].state == "NonResponsive",
                         timeout=8)
    finally:
        await pg.cluster.start()
    await host_status(engine, host.id, "NonResponsive")
    await agent.start()
    back = await host_status(engine, host.id, "Up")
    await eventually(lambda: engine.get_host(host.id),
                     lambda h: h.dynamic.last_seen > back.dynamic.last_seen)
    vm = await up_vm(engine, "after")
    assert vm.dynamic.run_on_host == host.id


async def _value(value=None):
    return value


@pytest_twisted.async_yield_fixture
async def child_agent(tmp_path):
    """A real agent daemon in a child process on a private test-driver host."""
    workdir = tmp_path / "child"
    workdir.mkdir()
    agent = AgentProcess(str(workdir), libvirt_uri=node_uri(workdir), guest_wait_timeout=0.3,
                         vm_sample_interval=0.5, host_sample_interval=0.5)
    url = await agent.start(reactor)
    agent.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    yield agent
    if agent._proc is not None and agent._proc.poll() is None:
        os.kill(agent.pid, signal.SIGCONT)
        await agent.stop(reactor)


@pytest_twisted.ensureDeferred
async def test_frozen_then_killed_child_agent(engine_run, child_agent):
    """A child-process agent that freezes (SIGSTOP) misses its heartbeats: its host goes
    Connecting then NonResponsive and its VM Unknown; thawed (SIGCONT), the host is Up and the
    VM, which kept running, Up again. Killed (SIGKILL), the host ends NonResponsive and the
    engine never declares the VM Down on its own: it may still run."""
    engine = engine_run.engine
    host = await add_up_host(engine, "child", child_agent)
    vm = await up_vm(engine, "survivor")
    os.kill(child_agent.pid, signal.SIGSTOP)
    await host_status(engine, host.id, "Connecting")
    await host_status(engine, host.id, "NonResponsive", timeout=8)
    await vm_status(engine, vm.id, "Unknown")
    os.kill(child_agent.pid, signal.SIGCONT)
    await host_status(engine, host.id, "Up", timeout=10)
    back = await vm_status(engine, vm.id, "Up")
    assert back.dynamic.run_on_host == host.id
    os.kill(child_agent.pid, signal.SIGKILL)
    child_agent._proc.wait(timeout=10)
    await host_status(engine, host.id, "NonResponsive", timeout=8)
    await vm_status(engine, vm.id, "Unknown")
    await sleep(1.0)
    assert (await engine.get_vm(vm.id)).dynamic.status == "Unknown"
