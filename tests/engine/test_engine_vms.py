"""VMs through the engine: define, start (scheduled), stop, shutdown, pause, resume, migrate,
remove; refused starts with per-host reasons; conflicting actions; idempotent replays; bad input.

Real PostgreSQL and real in-process agents on libvirt's test driver (16 GiB, 4 CPUs each).
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from engine_harness import add_up_host, events_of, eventually, host_status, job_done, vm_status
from twisted.internet.defer import gatherResults

from engine.errors import ActionInProgress, ActionRefused
from engine.store.errors import Conflict, DuplicateName, InvalidValue, NotFound


async def started(engine, vm_id, **options):
    """Start a VM and wait until its job succeeded; :returns: the job."""
    job = await engine.start_vm(vm_id, **options)
    done = await job_done(engine, job.id)
    assert done.status == "succeeded", done.error
    return done


@pytest_twisted.ensureDeferred
async def test_define_start_stop(engine_run, engine_agents):
    """A defined VM starts on the only host as a job, reports Up there with statistics, and
    stops: each step is in the store and in the audit log."""
    engine = engine_run.engine
    host = await add_up_host(engine, "h1", await engine_agents.start())
    vm = await engine.add_vm({"name": "web1", "memory_mib": 256, "vcpus": 2,
                              "custom": {"role": "web"}, "nics": [{"model": "virtio"}]})
    assert vm.dynamic.status == "Down" and vm.static.nics[0]["macAddr"].startswith("56:6f:")
    job = await engine.start_vm(vm.id)
    assert job.action == "start" and job.status == "running" and job.target_id == vm.id
    done = await job_done(engine, job.id)
    assert done.status == "succeeded" and done.progress == 100
    assert done.result["host"] == "h1"
    up = await vm_status(engine, vm.id, "Up")
    assert up.dynamic.run_on_host == host.id
    sampled = await eventually(lambda: engine.get_vm(vm.id), lambda v: v.statistics is not None
                               and v.statistics.balloon_cur_kib is not None)
    assert sampled.statistics.balloon_cur_kib == 256 * 1024
    placed = await events_of(engine, "VM_PLACED", vm_id=vm.id)
    assert placed[0].details["host"] == "h1" and "h1" in placed[0].details["explanation"]
    assert await events_of(engine, "VM_STARTED", vm_id=vm.id)

    stop = await engine.stop_vm(vm.id)
    assert (await job_done(engine, stop.id)).status == "succeeded"
    down = await vm_status(engine, vm.id, "Down")
    assert down.dynamic.run_on_host is None
    assert await events_of(engine, "VM_STOPPED", vm_id=vm.id)
    assert not engine.pending  # nothing left promised


@pytest_twisted.ensureDeferred
async def test_shutdown_pause_resume(engine_run, engine_agents):
    """Pause, resume and shutdown are jobs that end when the VM reports the state aimed at."""
    engine = engine_run.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    vm = await engine.add_vm({"name": "app", "memory_mib": 128})
    await started(engine, vm.id)
    await vm_status(engine, vm.id, "Up")
    pause = await job_done(engine, (await engine.pause_vm(vm.id)).id)
    assert pause.status == "succeeded" and pause.result["status"] == "Paused"
    assert (await engine.get_vm(vm.id)).dynamic.status == "Paused"
    with pytest.raises(ActionRefused, match="Paused"):
        await engine.pause_vm(vm.id)
    resume = await job_done(engine, (await engine.resume_vm(vm.id)).id)
    assert resume.status == "succeeded" and resume.result["status"] == "Up"
    shutdown = await job_done(engine, (await engine.shutdown_vm(vm.id)).id)
    assert shutdown.status == "succeeded", shutdown.error
    await vm_status(engine, vm.id, "Down")
    for kind in ("VM_PAUSED", "VM_RESUMED"):
        assert await events_of(engine, kind, vm_id=vm.id), kind
    with pytest.raises(ActionRefused, match="Down"):
        await engine.stop_vm(vm.id)


@pytest_twisted.ensureDeferred
async def test_scheduling_spreads_across_two_hosts(engine_run, engine_agents):
    """Four VMs started at once, of which only two fit on a host, end up two per host: each
    decision counts the memory promised by the ones before (pending resources); an explicit
    host is honoured."""
    engine = engine_run.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start())
    h2 = await add_up_host(engine, "h2", await engine_agents.start())
    vms = [await engine.add_vm({"name": f"vm{i}", "memory_mib": 6000}) for i in range(4)]
    jobs = await gatherResults([engine.start_vm(vm.id) for vm in vms])
    done = [await job_done(engine, job.id) for job in jobs]
    assert all(j.status == "succeeded" for j in done), [j.error for j in done]
    hosts = [j.result["host"] for j in done]
    assert sorted(hosts) == ["h1", "h1", "h2", "h2"]
    fifth = await engine.add_vm({"name": "fifth", "memory_mib": 6000})
    with pytest.raises(ActionRefused, match="none of 2 hosts"):
        await engine.start_vm(fifth.id)
    chosen = await engine.add_vm({"name": "chosen", "memory_mib": 128})
    job = await started(engine, chosen.id, host_id=h2.id)
    assert job.result["host_id"] == str(h2.id)
    assert (await engine.list_vms(host_id=h1.id))[0].name.startswith("vm")


@pytest_twisted.ensureDeferred
async def test_refused_start_explains_every_host(engine_run, engine_agents):
    """An impossible VM (more memory than any host) is refused with ActionRefused carrying,
    for each host, the memory filter's sum; the refusal is an audit event and no job runs."""
    engine = engine_run.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    await add_up_host(engine, "h2", await engine_agents.start())
    vm = await engine.add_vm({"name": "huge", "memory_mib": 64 * 1024})
    with pytest.raises(ActionRefused) as refused:
        await engine.start_vm(vm.id)
    explanation = refused.value.explanation
    assert set(explanation) == {"h1", "h2"}
    assert all("refused by memory" in " ".join(lines) for lines in explanation.values())
    assert "65536 MiB" in refused.value.reason
    event = (await events_of(engine, "VM_START_REFUSED", vm_id=vm.id))[0]
    assert event.severity == "warning" and set(event.details["explanation"]) == {"h1", "h2"}
    assert await engine.list_jobs(target_id=vm.id) == []
    assert (await engine.get_vm(vm.id)).dynamic.status == "Down"
    assert not engine.pending


@pytest_twisted.ensureDeferred
async def test_no_start_on_a_host_in_maintenance(engine_run, engine_agents):
    """A host in Maintenance takes no new VMs: asked for it explicitly, the start is refused
    with the host's status as the reason; scheduled freely, the VM goes elsewhere."""
    engine = engine_run.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start())
    await add_up_host(engine, "h2", await engine_agents.start())
    await job_done(engine, (await engine.maintenance(h1.id)).id)
    await host_status(engine, h1.id, "Maintenance")
    vm = await engine.add_vm({"name": "v", "memory_mib": 128})
    with pytest.raises(ActionRefused) as refused:
        await engine.start_vm(vm.id, host_id=h1.id)
    assert "Maintenance" in " ".join(refused.value.explanation["h1"])
    job = await started(engine, vm.id)
    assert job.result["host"] == "h2"
    activated = await job_done(engine, (await engine.activate(h1.id)).id)
    assert activated.status == "succeeded"
    await host_status(engine, h1.id, "Up")


@pytest_twisted.ensureDeferred
async def test_conflicting_actions_are_refused(engine_run, engine_agents):
    """While one action holds a VM, a second one is refused with ActionInProgress naming the
    running job, and only one job is written."""
    engine = engine_run.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    vm = await engine.add_vm({"name": "busy", "memory_mib": 128})
    first = engine.start_vm(vm.id)
    second = engine.start_vm(vm.id)
    third = engine.stop_vm(vm.id)
    job = await first
    for d in (second, third):
        with pytest.raises(ActionInProgress, match="busy"):
            await d
    assert [j.id for j in await engine.list_jobs(target_id=vm.id)] == [job.id]
    assert (await job_done(engine, job.id)).status == "succeeded"
    with pytest.raises(Conflict, match="Up"):
        await engine.remove_vm(vm.id)


@pytest_twisted.ensureDeferred
async def test_idempotent_job_replay(engine_run, engine_agents):
    """A request repeated with its idempotency key gets the same job, while running and after,
    and the VM is started once; the key cannot be reused for another action."""
    engine = engine_run.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    vm = await engine.add_vm({"name": "once", "memory_mib": 128})
    job = await engine.start_vm(vm.id, idempotency_key="start-once")
    again = await engine.start_vm(vm.id, idempotency_key="start-once")
    assert again.id == job.id
    await job_done(engine, job.id)
    later = await engine.start_vm(vm.id, idempotency_key="start-once")
    assert later.id == job.id and later.status == "succeeded"
    assert len(await events_of(engine, "VM_PLACED", vm_id=vm.id)) == 1
    with pytest.raises(Conflict):
        await engine.stop_vm(vm.id, idempotency_key="start-once")
    stop = await engine.stop_vm(vm.id, idempotency_key="stop-1")
    assert (await job_done(engine, stop.id)).status == "succeeded"


@pytest_twisted.ensureDeferred
async def test_bad_vm_input(engine_run, engine_agents):
    """Duplicate names, bad specs and unknown ids are refused with typed errors and nothing is
    written; the engine keeps serving."""
    engine = engine_run.engine
    await engine.add_vm({"name": "dup", "memory_mib": 128})
    with pytest.raises(DuplicateName):
        await engine.add_vm({"name": "dup", "memory_mib": 128})
    for spec in ({"memory_mib": 1}, {"name": "x"}, {"name": "x", "memory_mib": 0},
                 {"name": "x", "memory_mib": 1, "vcpus": "2"}, {"name": "x", "memory_mib": 1,
                 "colour": "red"}, {"name": "x", "memory_mib": 1, "nics": [{"mac": "zz"}]},
                 {"name": "x", "memory_mib": 1, "disks": [{"iface": "floppy", "path": "/a"}]}):
        with pytest.raises(InvalidValue):
            await engine.add_vm(spec)
    with pytest.raises(NotFound):
        await engine.add_vm({"name": "x", "memory_mib": 1, "pinned_host": str(uuid.uuid4())})
    assert [v.name for v in await engine.list_vms()] == ["dup"]
    unknown = uuid.uuid4()
    for call in (engine.get_vm, engine.start_vm, engine.stop_vm, engine.pause_vm,
                 engine.resume_vm, engine.shutdown_vm, engine.migrate_vm, engine.remove_vm):
        with pytest.raises(NotFound):
            await call(unknown)
    with pytest.raises(NotFound):
        await engine.update_vm(unknown, {"memory_mib": 2})
    with pytest.raises(NotFound):
        await engine.get_job(uuid.uuid4())


@pytest_twisted.ensureDeferred
async def test_update_and_remove(engine_run, engine_agents):
    """A definition change is stored and used at the next start; a Down VM is removed."""
    engine = engine_run.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    vm = await engine.add_vm({"name": "grow", "memory_mib": 128})
    updated = await engine.update_vm(vm.id, {"memory_mib": 512, "vcpus": 2})
    assert (updated.static.mem_mib, updated.static.vcpus) == (512, 2)
    await started(engine, vm.id)
    stats = await eventually(lambda: engine.get_vm(vm.id), lambda v: v.statistics is not None
                             and v.statistics.balloon_cur_kib is not None)
    assert stats.statistics.balloon_cur_kib == 512 * 1024
    await job_done(engine, (await engine.stop_vm(vm.id)).id)
    await engine.remove_vm(vm.id)
    assert await engine.list_vms() == []
    assert await events_of(engine, "VM_REMOVED")


@pytest_twisted.ensureDeferred
async def test_migrate_is_scheduled_and_the_vm_arrives(engine_run, engine_agents):
    """A migration is placed by the scheduler (never on the VM's own host), the source agent
    migrates the VM to the destination's agent (emulated on the test driver), and the engine
    then sees it Up on the destination only, with started and done events."""
    engine = engine_run.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start())
    vm = await engine.add_vm({"name": "mover", "memory_mib": 128})
    await started(engine, vm.id, host_id=h1.id)
    await vm_status(engine, vm.id, "Up")
    with pytest.raises(ActionRefused) as alone:
        await engine.migrate_vm(vm.id)
    assert "refused by excluded" in " ".join(alone.value.explanation["h1"])
    h2 = await add_up_host(engine, "h2", await engine_agents.start())
    job = await job_done(engine, (await engine.migrate_vm(vm.id)).id, timeout=60)
    assert job.status == "succeeded", job.error
    assert job.result["host"] == "h2"
    done = await events_of(engine, "VM_MIGRATION_DONE", vm_id=vm.id)
    assert done and done[0].details["destination"] == "h2"
    assert await events_of(engine, "VM_MIGRATION_STARTED", vm_id=vm.id)
    current = await engine.get_vm(vm.id)
    assert current.dynamic.status == "Up" and current.dynamic.run_on_host == h2.id
    assert current.dynamic.migrating_to_host is None
    assert not engine.pending
