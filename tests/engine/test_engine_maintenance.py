"""Host maintenance through the engine: an empty host, a host whose VMs migrate away, one whose
pinned VM cannot move, activation, and refusals.

Real PostgreSQL and real in-process agents on libvirt's test driver.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from engine_harness import add_up_host, events_of, host_status, job_done, vm_status
from link_harness import free_port

from engine.errors import ActionRefused


async def up_vm(engine, name, host_id):
    """Start a VM on a given host and wait until it is Up."""
    vm = await engine.add_vm({"name": name, "memory_mib": 128})
    job = await job_done(engine, (await engine.start_vm(vm.id, host_id=host_id)).id)
    assert job.status == "succeeded", job.error
    return await vm_status(engine, vm.id, "Up")


@pytest_twisted.ensureDeferred
async def test_empty_host_maintenance_and_activation(engine_run, engine_agents):
    """An empty host goes PreparingForMaintenance → Maintenance at once, a repeated request
    with the same key is the same job, and activation brings it back Up; each is an event."""
    engine = engine_run.engine
    host = await add_up_host(engine, "h1", await engine_agents.start())
    job = await engine.maintenance(host.id, idempotency_key="m1")
    assert (await engine.maintenance(host.id, idempotency_key="m1")).id == job.id
    done = await job_done(engine, job.id)
    assert done.status == "succeeded" and done.result == {"moved": {}, "host": "h1"}
    await host_status(engine, host.id, "Maintenance")
    again = await job_done(engine, (await engine.maintenance(host.id)).id)
    assert again.status == "succeeded"
    for kind in ("HOST_MAINTENANCE_STARTED", "HOST_MAINTENANCE"):
        assert await events_of(engine, kind, host_id=host.id), kind
    activated = await job_done(engine, (await engine.activate(host.id)).id)
    assert activated.status == "succeeded" and activated.result["status"] == "Up"
    await host_status(engine, host.id, "Up")
    assert await events_of(engine, "HOST_ACTIVATED", host_id=host.id)


@pytest_twisted.ensureDeferred
async def test_maintenance_migrates_every_vm_away(engine_run, engine_agents):
    """With VMs running and another host Up, maintenance live-migrates each VM there (emulated
    by the test-driver agents), then the host enters Maintenance; the job says where each went."""
    engine = engine_run.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start())
    h2 = await add_up_host(engine, "h2", await engine_agents.start())
    vms = [await up_vm(engine, f"v{i}", h1.id) for i in range(2)]
    job = await job_done(engine, (await engine.maintenance(h1.id)).id, timeout=60)
    assert job.status == "succeeded", job.error
    assert job.result["moved"] == {"v0": "moved to h2", "v1": "moved to h2"}
    await host_status(engine, h1.id, "Maintenance")
    for vm in vms:
        moved = await engine.get_vm(vm.id)
        assert (moved.dynamic.status, moved.dynamic.run_on_host) == ("Up", h2.id)


@pytest_twisted.ensureDeferred
async def test_vms_that_cannot_move_keep_host_preparing(engine_run, engine_agents):
    """A VM pinned to the host cannot move: the job fails naming it and why, the host stays
    PreparingForMaintenance and takes no new VM; once the VM is stopped it enters
    Maintenance by itself."""
    engine = engine_run.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start())
    await add_up_host(engine, "h2", await engine_agents.start())
    pinned = await engine.add_vm({"name": "pinned", "memory_mib": 128,
                                  "pinned_host": str(h1.id)})
    started = await job_done(engine, (await engine.start_vm(pinned.id)).id)
    assert started.status == "succeeded", started.error
    await vm_status(engine, pinned.id, "Up")
    job = await job_done(engine, (await engine.maintenance(h1.id)).id)
    assert job.status == "failed"
    assert "1 of 1 VMs could not leave host h1" in job.error
    assert "pinned" in job.error and "refused by pinning" in job.error
    preparing = await host_status(engine, h1.id, "PreparingForMaintenance")
    assert "maintenance requested" in preparing.dynamic.status_reason
    failed = await events_of(engine, "HOST_MAINTENANCE_FAILED", host_id=h1.id)
    assert set(failed[0].details["vms"]) == {"pinned"}
    newcomer = await engine.add_vm({"name": "new", "memory_mib": 128})
    with pytest.raises(ActionRefused) as refused:
        await engine.start_vm(newcomer.id, host_id=h1.id)
    assert "PreparingForMaintenance" in " ".join(refused.value.explanation["h1"])
    assert (await job_done(engine, (await engine.stop_vm(pinned.id)).id)).status == "succeeded"
    await host_status(engine, h1.id, "Maintenance")


@pytest_twisted.ensureDeferred
async def test_maintenance_with_nowhere_to_go(engine_run, engine_agents):
    """A lone host's VMs have no destination: the scheduler's refusal is the reason given."""
    engine = engine_run.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start())
    await up_vm(engine, "alone", h1.id)
    job = await job_done(engine, (await engine.maintenance(h1.id)).id)
    assert job.status == "failed" and "refused by excluded" in job.error
    await host_status(engine, h1.id, "PreparingForMaintenance")
    refused = await events_of(engine, "MAINTENANCE_VM_CANNOT_MOVE")
    assert refused and refused[0].details["vm"] == "alone"


@pytest_twisted.ensureDeferred
async def test_refused_host_commands(engine_run, engine_agents):
    """Activating an Up host is a no-op job; activating a host that never answered, or
    removing an Up one, is refused with the state machine's reason."""
    engine = engine_run.engine
    up = await add_up_host(engine, "up", await engine_agents.start())
    noop = await job_done(engine, (await engine.activate(up.id)).id)
    assert noop.status == "succeeded" and noop.result["status"] == "Up"
    ghost = await engine.add_host("ghost", "127.0.0.1", port=free_port())
    await host_status(engine, ghost.id, "NonResponsive", timeout=8)
    with pytest.raises(ActionRefused, match="by itself"):
        await engine.activate(ghost.id)
    with pytest.raises(ActionRefused, match="Maintenance first"):
        await engine.remove_host(up.id)
