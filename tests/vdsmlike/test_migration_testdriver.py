"""Agent-to-agent migration between two real agents on libvirt's test driver (emulated).

Two production service trees run in this process, each on its own ``test:///<node.xml>`` host,
and talk to each other over a real WebSocket link (``VM.migrationCreate``, ``VM.destroy``,
``VM.migrationFinish``). The test driver cannot migrate, so the hypervisor adapters emulate the
transfer (``vdsmlike.vm.migration_emulation``); everything above them is real: slots, hooks,
states, events, the convergence schedule, cancel, the destination refusing.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from agent_harness import node_uri, start_agent, wait_until

from vdsmlike.client import RemoteError

MIB = 1024 * 1024
FAST = {"migration_monitor_interval": 0.05, "migration_retry_timeout": 0.2}


@pytest_twisted.async_yield_fixture
async def pair(tmp_path):
    """Two agents, a and b, on separate test-driver hosts."""
    agents = await start_pair(tmp_path)
    yield agents
    for agent in agents:
        await agent.stop()


async def start_pair(tmp_path, a: dict | None = None, b: dict | None = None):
    started = []
    for name, extra in (("a", a), ("b", b)):
        directory = tmp_path / name
        directory.mkdir()
        settings = {**FAST, **(extra or {})}
        started.append(await start_agent(directory, libvirt_uri=node_uri(directory), **settings))
    return started


def dst(agent) -> str:
    """The agent's ``host:port``, VDSM's form of ``dst``."""
    parts = urlsplit(agent.url)
    return f"{parts.hostname}:{parts.port}"


async def create_up(agent, memory_mib: int = 32) -> str:
    vm_id = str(uuid.uuid4())
    params = {"vmId": vm_id, "vmName": "m-" + vm_id[:8], "memSize": memory_mib}
    await agent.call("VM.create", {"vmParams": params})
    await agent.wait_for_status(vm_id, "Up")
    return vm_id


def progress_events(agent, vm_id: str) -> list[dict]:
    return [p[vm_id] for e, p in agent.events if e == f"|virt|VM_migration_status|{vm_id}"]


def down_details(agent, vm_id: str) -> dict:
    """The details of the VM's Down event."""
    [details] = [
        p[vm_id]
        for e, p in agent.events
        if e == f"|virt|VM_status|{vm_id}" and p[vm_id]["status"] == "Down"
    ]
    return details


async def status(agent, vm_id: str) -> dict:
    return await agent.call("VM.getMigrationStatus", [vm_id])


async def wait_state(agent, vm_id: str, state: str, timeout: float = 20.0) -> dict:
    last: dict = {}

    async def check():
        last.update(await status(agent, vm_id))
        return last["state"] == state

    await wait_until_async(check, timeout, f"{vm_id} migration {state}")
    return last


async def wait_until_async(check, timeout: float, what: str) -> None:
    import time

    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)


async def domains(agent) -> dict[str, int]:
    return {d.vm_id: d.state.value for d in await agent.top.hypervisor.list_domains()}


def install_hook(agent_dir: Path, point: str, body: str) -> Path:
    """Install an executable Python hook script at ``point`` in an agent's hooks dir."""
    path = agent_dir / "state" / "hooks" / point / "50_test"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(0o755)
    return path


# -- the hand-over --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_vm_moves_to_the_destination_and_back(pair):
    """The source goes Up, Migration Source, Down (exit 4); the destination Migration
    Destination, Up; progress events reach 100; the VM can come back once destroyed here."""
    a, b = pair
    vm_id = await create_up(a)
    assert await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b)}}) is True
    await b.wait_for_status(vm_id, "Up")
    await a.wait_for_status(vm_id, "Down")
    assert a.statuses(vm_id)[-3:] == ["Up", "Migration Source", "Down"]
    assert b.statuses(vm_id) == ["Migration Destination", "Up"]
    [down] = await a.call("VM.getStats", [vm_id])
    assert (down["exitReason"], down["exitCode"]) == (4, 0)
    progress = [event["progress"] for event in progress_events(a, vm_id)]
    assert progress[0] == 0 and progress[-1] == 100 and progress == sorted(progress)
    final = await status(a, vm_id)
    assert (final["state"], final["status"]["code"], final["progress"]) == ("succeeded", 0, 100)
    assert vm_id not in await domains(a)
    assert (await domains(b))[vm_id] == 1  # running
    [moved] = await b.call("Host.getVMFullList", {"vmList": [vm_id]})
    assert moved["memSize"] == 32

    await a.call("VM.destroy", [vm_id])
    await b.call("VM.migrate", {"vmID": vm_id, "params": {"dst": a.url}})
    await wait_until(lambda: a.statuses(vm_id)[-1:] == ["Up"], 20, "back on a")
    await b.wait_for_status(vm_id, "Down")
    assert (await domains(a))[vm_id] == 1


@pytest_twisted.ensureDeferred
async def test_a_vm_that_exists_on_the_destination_is_refused(pair):
    """Migrating to a host that still lists the VM (Down) fails there with 4; the VM stays Up."""
    a, b = pair
    vm_id = await create_up(a)
    await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b)}})
    await a.wait_for_status(vm_id, "Down")
    await b.wait_for_status(vm_id, "Up")
    await b.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(a)}})
    failed = await wait_state(b, vm_id, "failed")
    assert failed["status"]["code"] == 12 and "already exists" in failed["status"]["message"]
    assert b.statuses(vm_id)[-2:] == ["Migration Source", "Up"]
    assert (await domains(b))[vm_id] == 1


# -- limits ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_third_outgoing_migration_waits_for_a_slot(pair):
    """With two outgoing slots, a third migration is Migration Source but waits (progress 0)
    until one of the first two ends; then all three arrive."""
    a, b = pair
    vms = [await create_up(a) for _ in range(3)]
    for vm_id in vms:
        params = {"dst": dst(b), "maxBandwidth": 16}
        assert await a.call("VM.migrate", {"vmID": vm_id, "params": params}) is True
    states = [(await status(a, vm_id))["state"] for vm_id in vms]
    assert states[2] == "waiting" and set(states[:2]) <= {"preparing", "migrating"}
    stats = await a.call("Host.getStats")
    assert stats["outgoingVmMigrations"] == 3
    assert b.statuses(vms[2]) == []
    await wait_until(lambda: "Up" in b.statuses(vms[0]) or "Up" in b.statuses(vms[1]), 20, "one")
    assert "Up" not in b.statuses(vms[2])
    for vm_id in vms:
        await b.wait_for_status(vm_id, "Up")
        await a.wait_for_status(vm_id, "Down")


@pytest_twisted.ensureDeferred
async def test_a_full_destination_is_asked_again(tmp_path):
    """A destination receiving its limit answers 82; the source waits, retries and gets there."""
    a, b = await start_pair(tmp_path, b={"max_incoming_migrations": 1})
    try:
        first, second = await create_up(a), await create_up(a)
        for vm_id in (first, second):
            await a.call(
                "VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b), "maxBandwidth": 16}}
            )
        await b.wait_for_status(first, "Migration Destination")
        xml = (await a.call("Host.dumpxmls", [[first]]))["domxmls"][first]
        with pytest.raises(RemoteError) as refused:
            other = str(uuid.uuid4())
            await b.call(
                "VM.migrationCreate",
                {
                    "vmID": other,
                    "params": {"_srcDomXML": xml.replace(first, other), "emulated": True},
                },
            )
        assert refused.value.code == 82
        waiting = await status(a, second)
        assert waiting["state"] in ("preparing", "waiting") and waiting["progress"] == 0
        for vm_id in (first, second):
            await b.wait_for_status(vm_id, "Up")
        assert b.statuses(second) == ["Migration Destination", "Up"]
    finally:
        for agent in (a, b):
            await agent.stop()


# -- cancel, change, failures ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cancel_in_the_middle_leaves_the_vm_up_here(pair):
    """A cancelled migration ends cancelled (12); the VM is Up again on the source and its
    half on the destination is gone, libvirt domain included."""
    a, b = pair
    vm_id = await create_up(a, memory_mib=64)
    await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b), "maxBandwidth": 8}})
    await wait_until(lambda: any(e["progress"] > 5 for e in progress_events(a, vm_id)), 20, "5 %")
    assert await a.call("VM.migrateCancel", [vm_id]) is True
    cancelled = await wait_state(a, vm_id, "cancelled")
    assert cancelled["status"]["code"] == 12 and 0 < cancelled["progress"] < 100
    await wait_until(lambda: a.statuses(vm_id)[-1:] == ["Up"], 10, "Up again")
    assert a.statuses(vm_id)[-2:] == ["Migration Source", "Up"]
    await b.wait_for_status(vm_id, "Down")
    assert down_details(b, vm_id)["exitReason"] == 8  # the incoming half failed
    assert vm_id not in await b.call("Host.getVMList")
    assert vm_id not in await domains(b)
    assert (await domains(a))[vm_id] == 1
    with pytest.raises(RemoteError) as again:
        await a.call("VM.migrateCancel", [vm_id])
    assert again.value.code == 47


@pytest_twisted.ensureDeferred
async def test_change_params_speeds_a_slow_migration_up(pair):
    """migrateChangeParams raises the bandwidth of a running migration, which then finishes;
    without a migration it answers 81."""
    a, b = pair
    vm_id = await create_up(a, memory_mib=64)
    with pytest.raises(RemoteError) as idle:
        await a.call("VM.migrateChangeParams", {"vmID": vm_id, "params": {"maxBandwidth": 5}})
    assert idle.value.code == 81
    await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b), "maxBandwidth": 1}})
    await wait_state(a, vm_id, "migrating")
    params = {"vmID": vm_id, "params": {"maxBandwidth": 0}}
    assert await a.call("VM.migrateChangeParams", params) is True
    assert (await status(a, vm_id))["maxBandwidth"] == 0
    await wait_state(a, vm_id, "succeeded", timeout=10)
    await b.wait_for_status(vm_id, "Up")


@pytest_twisted.ensureDeferred
async def test_a_vetoing_source_hook_keeps_the_vm_up(pair, tmp_path):
    """before_vm_migrate_source exiting 2 makes VM.migrate fail with 1500 and its message;
    the VM never leaves Up and the destination hears nothing."""
    a, b = pair
    install_hook(
        tmp_path / "a", "before_vm_migrate_source", "sys.stderr.write('not today')\nsys.exit(2)"
    )
    vm_id = await create_up(a)
    with pytest.raises(RemoteError) as veto:
        await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b)}})
    assert veto.value.code == 1500 and "not today" in veto.value.message
    assert "Migration Source" not in a.statuses(vm_id)
    assert (await status(a, vm_id))["state"] == "none"
    assert b.statuses(vm_id) == [] and vm_id not in await domains(b)
    assert await a.call("Host.ping2") is True


@pytest_twisted.ensureDeferred
async def test_a_refusing_destination_hook_fails_the_migration(pair, tmp_path):
    """before_vm_migrate_destination failing on the destination fails the migration with its
    message; the VM is Up again on the source."""
    a, b = pair
    install_hook(
        tmp_path / "b", "before_vm_migrate_destination", "sys.stderr.write('full up')\nsys.exit(1)"
    )
    vm_id = await create_up(a)
    assert await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b)}}) is True
    failed = await wait_state(a, vm_id, "failed")
    assert "1500" in failed["error"] and "full up" in failed["error"]
    await wait_until(lambda: a.statuses(vm_id)[-1:] == ["Up"], 10, "Up again")
    assert b.statuses(vm_id) == [] and vm_id not in await domains(b)


@pytest_twisted.ensureDeferred
async def test_an_unreachable_destination_fails_the_migration(pair):
    """A destination nobody listens on fails the migration; the VM is Up again."""
    a, _ = pair
    vm_id = await create_up(a)
    await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": "127.0.0.1:9"}})
    failed = await wait_state(a, vm_id, "failed")
    assert "cannot reach the destination" in failed["error"]
    await wait_until(lambda: a.statuses(vm_id)[-1:] == ["Up"], 10, "Up again")


@pytest_twisted.ensureDeferred
async def test_a_vm_destroyed_while_waiting_stops_its_migration(tmp_path):
    """A VM destroyed while it waits for an outgoing slot ends its migration cancelled and
    gives its place in line up; the migration behind it still runs."""
    a, b = await start_pair(tmp_path, a={"max_outgoing_migrations": 1})
    try:
        first, second, third = [await create_up(a) for _ in range(3)]
        for vm_id in (first, second, third):
            params = {"dst": dst(b), "maxBandwidth": 32}
            await a.call("VM.migrate", {"vmID": vm_id, "params": params})
        assert (await status(a, second))["state"] == "waiting"
        await a.call("VM.destroy", [second])
        await b.wait_for_status(first, "Up")
        await b.wait_for_status(third, "Up")
        assert b.statuses(second) == []
    finally:
        for agent in (a, b):
            await agent.stop()


# -- convergence ----------------------------------------------------------------------------

SCHEDULE = {
    "init": [{"name": "setDowntime", "params": ["100"]}],
    "stalling": [
        {"limit": 1, "action": {"name": "setDowntime", "params": ["150"]}},
        {"limit": -1, "action": {"name": "abort", "params": []}},
    ],
}


@pytest_twisted.ensureDeferred
async def test_the_convergence_schedule_aborts_a_migration_that_cannot_converge(pair):
    """A guest dirtying memory faster than the bandwidth stalls pass after pass: the schedule
    sets 100, then 150 ms, then aborts; the VM stays Up here."""
    a, b = pair
    vm_id = await create_up(a)
    a.top.hypervisor.set_emulated_dirty_rate(vm_id, 200 * MIB)
    params = {"dst": dst(b), "maxBandwidth": 64, "convergenceSchedule": SCHEDULE}
    await a.call("VM.migrate", {"vmID": vm_id, "params": params})
    failed = await wait_state(a, vm_id, "failed")
    assert "convergence schedule aborted" in failed["error"]
    assert failed["downtime"] == 150
    downtimes = [e.get("downtime") for e in progress_events(a, vm_id)]
    assert 100 in downtimes and 150 in downtimes
    await wait_until(lambda: a.statuses(vm_id)[-1:] == ["Up"], 10, "Up again")
    await b.wait_for_status(vm_id, "Down")
    assert down_details(b, vm_id)["exitReason"] == 8
    assert vm_id not in await b.call("Host.getVMList")


@pytest_twisted.ensureDeferred
async def test_a_longer_downtime_lets_a_busy_guest_converge(pair):
    """When the schedule allows a long enough downtime, a busy guest's migration converges."""
    a, b = pair
    vm_id = await create_up(a)
    a.top.hypervisor.set_emulated_dirty_rate(vm_id, 80 * MIB)
    schedule = {
        "init": [{"name": "setDowntime", "params": [100]}],
        "stalling": [{"limit": 0, "action": {"name": "setDowntime", "params": [1000]}}],
    }
    params = {"dst": dst(b), "maxBandwidth": 64, "convergenceSchedule": schedule}
    await a.call("VM.migrate", {"vmID": vm_id, "params": params})
    done = await wait_state(a, vm_id, "succeeded")
    assert done["downtime"] == 1000
    await b.wait_for_status(vm_id, "Up")


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,code",
    [
        ({}, -32602),
        ({"dst": "127.0.0.1:99999"}, 91),
        ({"dst": "127.0.0.1:1", "method": "offline"}, -32602),
        ({"dst": "127.0.0.1:1", "autoConverge": "maybe"}, -32602),
        ({"dst": "127.0.0.1:1", "convergenceSchedule": {"init": [{"name": "setDowntime"}]}}, 91),
        ({"dst": "127.0.0.1:1", "zerocopy": True}, 91),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_migrate_params_get_clear_errors(pair, params, code):
    """Bad params are refused with a clear error and nothing starts; the agent keeps serving."""
    a, _ = pair
    vm_id = await create_up(a)
    with pytest.raises(RemoteError) as refused:
        await a.call("VM.migrate", {"vmID": vm_id, "params": params})
    assert refused.value.code == code, refused.value
    assert (await status(a, vm_id))["state"] == "none"
    assert await a.call("Host.ping2") is True


@pytest_twisted.ensureDeferred
async def test_migration_verbs_on_unknown_or_idle_vms(pair):
    """Unknown VMs get 1; a status query of a VM never migrated says so; a VM migrating
    already refuses a second migration with 51."""
    a, b = pair
    unknown = str(uuid.uuid4())
    for verb, params in (
        ("VM.migrate", {"vmID": unknown, "params": {"dst": dst(b)}}),
        ("VM.migrateCancel", {"vmID": unknown}),
        ("VM.getMigrationStatus", {"vmID": unknown}),
    ):
        with pytest.raises(RemoteError) as missing:
            await a.call(verb, params)
        assert missing.value.code == 1
    vm_id = await create_up(a)
    idle = await status(a, vm_id)
    assert idle == {"status": {"code": 0, "message": "No migration"}, "progress": 0,
                    "state": "none", "postcopy": False}  # fmt: skip
    await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b), "maxBandwidth": 8}})
    with pytest.raises(RemoteError) as busy:
        await a.call("VM.migrate", {"vmID": vm_id, "params": {"dst": dst(b)}})
    assert busy.value.code == 51
    await a.call("VM.migrateCancel", [vm_id])
    await wait_state(a, vm_id, "cancelled")


@pytest_twisted.ensureDeferred
async def test_migration_create_refuses_what_it_cannot_receive(pair):
    """migrationCreate refuses a real (non-emulated) source with 75, XML for another VM with 91,
    broken XML with 9 and a VM it has with 4."""
    a, b = pair
    vm_id = await create_up(b)
    xml = (await b.call("Host.dumpxmls", [[vm_id]]))["domxmls"][vm_id]
    other = str(uuid.uuid4())
    for params, code in (
        ({"_srcDomXML": xml.replace(vm_id, other)}, 75),
        ({"_srcDomXML": xml, "emulated": True}, 91),
        ({"_srcDomXML": "<domain", "emulated": True}, 9),
    ):
        with pytest.raises(RemoteError) as refused:
            await a.call("VM.migrationCreate", {"vmID": other, "params": params})
        assert refused.value.code == code, refused.value
    with pytest.raises(RemoteError) as exists:
        await b.call(
            "VM.migrationCreate", {"vmID": vm_id, "params": {"_srcDomXML": xml, "emulated": True}}
        )
    assert exists.value.code == 4
    assert a.top.container.vms() == [] and await a.call("Host.ping2") is True
