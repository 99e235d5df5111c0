"""The cluster manager in the live engine, fast: HA restarts, maintenance with its deadline and
move-back, refusals, and the manager rebuilt from the store at an engine restart.

Real PostgreSQL and real in-process agents on libvirt's test driver (no power management: a
host that stops answering holds its VMs in Unknown until it answers again, which is the proof
for the VMs it no longer runs). An in-process agent that restarts opens a fresh test-driver
host, so its VMs are gone, as a crashed host's would be.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import pytest_twisted
from engine_harness import (
    add_up_host,
    events_of,
    eventually,
    host_status,
    job_done,
    sleep,
    start_engine,
    vm_status,
)
from link_harness import LoggedFailures
from pg_harness import open_store

from engine.errors import ActionRefused

#: The cluster manager's settings for these tests (``[ha]``); a test may add its own.
HA = (("evacuation_retry", "1"), ("startup_fence_delay", "0"))
#: Faster than the defaults, yet no host misses heartbeats on a busy machine.
LIVENESS = dict(
    ha_tick_interval=0.2, heartbeat_interval=0.5, heartbeat_timeout=1.0, grace_period=3.0
)


@pytest_twisted.async_yield_fixture
async def ha_engine(request, tmp_path, pg_dsn):
    """An engine with fast liveness, no fencing delay (an indirect parameter, a dict, adds
    ``[ha]`` settings)."""
    extra = tuple((k, str(v)) for k, v in getattr(request, "param", {}).items())
    with LoggedFailures() as logged:
        running = await start_engine(tmp_path, pg_dsn, ha_options=HA + extra, **LIVENESS)
        yield running
        await running.stop()
    # The engine must log no traceback; an in-process agent stopped mid-sample may (not ours).
    ours = [e for e in logged.failures if str(e.get("log_namespace", "")).startswith("engine")]
    assert not ours, [str(e.get("log_failure") or e.get("failure")) for e in ours]


async def up_vm(engine, name, host_id=None, **spec):
    """Define and start a VM (on ``host_id``, or where the scheduler says), wait until Up."""
    vm = await engine.add_vm({"name": name, "memory_mib": 128, **spec})
    job = await job_done(engine, (await engine.start_vm(vm.id, host_id=host_id)).id)
    assert job.status == "succeeded", job.error
    return await vm_status(engine, vm.id, "Up")


def types(events):
    return [e.type for e in events]


@pytest_twisted.ensureDeferred
async def test_a_lost_host_that_answers_without_its_vms_gets_them_restarted(
    ha_engine, engine_agents
):
    """A host whose agent dies is NonResponsive and its VMs Unknown (no proof: nothing
    restarts); when it answers again without them, the HA VM is restarted where the scheduler
    says, the other one stays Down, and a second host was never used before the proof."""
    engine = ha_engine.engine
    a = await engine_agents.start("a")
    h1 = await add_up_host(engine, "h1", a)
    h2 = await add_up_host(engine, "h2", await engine_agents.start("b"))
    web = await up_vm(engine, "web", h1.id, ha=True, ha_priority=50)
    tmp = await up_vm(engine, "tmp", h1.id)
    await a.stop()
    await host_status(engine, h1.id, "NonResponsive", timeout=8)
    await vm_status(engine, web.id, "Unknown")
    await eventually(  # soft fencing failed (nobody to ask), and there is no power management
        lambda: events_of(engine, "HOST_FENCE_NO_POWER_MANAGEMENT", host_id=h1.id),
        bool,
        timeout=5,
        what="the no-power-management alert",
    )
    await sleep(1.0)
    assert (await engine.get_vm(web.id)).dynamic.status == "Unknown"  # never without proof
    assert await engine.list_vms(host_id=h2.id) == []
    await a.start()
    back = await eventually(lambda: engine.get_vm(web.id),
                            lambda v: v.dynamic.status == "Up" and v.dynamic.exit_reason is None,
                            timeout=15, what="web restarted")  # fmt: skip
    assert back.dynamic.run_on_host in (h1.id, h2.id)
    assert (await engine.get_vm(tmp.id)).dynamic.status == "Down"
    [restart] = await events_of(engine, "HA_VM_RESTART", vm_id=web.id)
    assert "chosen by the scheduler" in restart.message
    assert "answered and does not run it" in restart.message
    assert types(await events_of(engine, "HA_VM_NOT_RESTARTED", vm_id=tmp.id))


@pytest_twisted.ensureDeferred
async def test_a_crashed_ha_vm_restarts_and_a_stopped_one_does_not(ha_engine, engine_agents):
    """An HA VM killed behind its agent's back is restarted; one the admin stops is not."""
    engine = ha_engine.engine
    agent = await engine_agents.start()
    await add_up_host(engine, "h1", agent)
    crashed = await up_vm(engine, "crashed", ha=True)
    stopped = await up_vm(engine, "stopped", ha=True)
    await agent.top.hypervisor.destroy(str(crashed.id), False)
    await eventually(lambda: events_of(engine, "HA_VM_RESTARTED", vm_id=crashed.id), bool,
                     timeout=10, what="the crashed VM restarted")  # fmt: skip
    await vm_status(engine, crashed.id, "Up")
    done = await job_done(engine, (await engine.stop_vm(stopped.id)).id)
    assert done.status == "succeeded", done.error
    await sleep(1.0)
    assert (await engine.get_vm(stopped.id)).dynamic.status == "Down"
    assert not await events_of(engine, "HA_VM_RESTART", vm_id=stopped.id)
    assert not engine.pending


@pytest_twisted.ensureDeferred
async def test_maintenance_with_move_back(ha_engine, engine_agents):
    """Maintenance asked with move_back empties the host into the other one; activated, the
    host is Up and the VMs that left migrate back to it."""
    engine = ha_engine.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start("a"))
    h2 = await add_up_host(engine, "h2", await engine_agents.start("b"))
    vms = [await up_vm(engine, f"v{i}", h1.id) for i in range(3)]
    job = await job_done(engine, (await engine.maintenance(h1.id, move_back=True)).id, 30)
    assert job.status == "succeeded", job.error
    assert job.result["moved"] == {"v0": "moved to h2", "v1": "moved to h2", "v2": "moved to h2"}
    assert (await engine.get_host(h1.id)).dynamic.status == "Maintenance"
    moves = await events_of(engine, "MAINTENANCE_MIGRATION", host_id=h1.id)
    assert len(moves) == 3 and all("chosen by the scheduler" in e.message for e in moves)
    activated = await job_done(engine, (await engine.activate(h1.id)).id)
    assert activated.status == "succeeded" and activated.result["status"] == "Up"
    for vm in vms:
        await eventually(lambda v=vm: engine.get_vm(v.id),
                         lambda row: row.dynamic.run_on_host == h1.id and
                         row.dynamic.status == "Up", timeout=20, what="moved back")  # fmt: skip
    assert len(await events_of(engine, "MAINTENANCE_MOVE_BACK", host_id=h1.id)) == 3
    assert (await engine.list_vms(host_id=h2.id)) == []


@pytest.mark.parametrize("ha_engine", [{"maintenance_deadline": 3}], indirect=True)
@pytest_twisted.ensureDeferred
async def test_maintenance_deadline_reports_and_reactivates(ha_engine, engine_agents):
    """A host whose pinned VM cannot leave stays PreparingForMaintenance until the deadline;
    then one error event lists what could not move and why, and the host is Up again."""
    engine = ha_engine.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start("a"))
    await add_up_host(engine, "h2", await engine_agents.start("b"))
    await up_vm(engine, "pinned", h1.id, pinned_host=str(h1.id))
    job = await job_done(engine, (await engine.maintenance(h1.id)).id)
    assert job.status == "failed" and "pinned" in job.error
    await host_status(engine, h1.id, "PreparingForMaintenance")
    [report] = await eventually(lambda: events_of(engine, "MAINTENANCE_DEADLINE_EXCEEDED"),
                                bool, timeout=10, what="the deadline report")  # fmt: skip
    assert "pinned: it is pinned to this host" in report.message
    assert report.severity == "error"
    await host_status(engine, h1.id, "Up")


@pytest_twisted.ensureDeferred
async def test_manager_refusals_are_action_refused(ha_engine, engine_agents):
    """Requests the manager refuses fail with ActionRefused and its reason: maintenance of a
    host in its grace period with VMs, a second start while HA waits, migrating an Unknown VM."""
    engine = ha_engine.engine
    agent = await engine_agents.start()
    h1 = await add_up_host(engine, "h1", agent)
    vm = await up_vm(engine, "v", h1.id)
    await agent.stop()
    await host_status(engine, h1.id, "Connecting")
    with pytest.raises(ActionRefused, match="grace period"):
        await engine.maintenance(h1.id)
    await vm_status(engine, vm.id, "Unknown", timeout=8)
    with pytest.raises(ActionRefused, match="Unknown"):
        await engine.migrate_vm(vm.id)
    await agent.start()
    await host_status(engine, h1.id, "Up")


@pytest_twisted.ensureDeferred
async def test_an_engine_restart_resumes_ha(ha_engine, engine_agents):
    """An HA VM left Down with an error by the previous engine run (its host fenced) is
    restarted by the next one, which says what it resumed."""
    engine = ha_engine.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    vm = await engine.add_vm({"name": "lost", "memory_mib": 128, "ha": True})
    await ha_engine.stop()
    store = await open_store(ha_engine.config.db)
    row = await store.get_vm(vm.id)
    await store.set_vm_dynamic(replace(row.dynamic, exit_status="error",
                                       exit_reason="host_fenced"), force=True)  # fmt: skip
    store.close()
    await ha_engine.start()
    engine = ha_engine.engine
    await eventually(lambda: engine.get_vm(vm.id), lambda v: v.dynamic.status == "Up",
                     timeout=15, what="the HA VM restarted")  # fmt: skip
    [resumed] = (await events_of(engine, "HA_STATE_RESUMED"))[:1]
    assert "1 HA VMs to restart" in resumed.message
