"""PostgresStore on real PostgreSQL: VMs (definition, runtime state in notify_time order,
statistics in batches)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from pg_harness import fake_clock, new_host, new_vm, open_store
from twisted.internet.defer import gatherResults

from engine.store.errors import DuplicateName, InvalidValue, NotFound
from engine.store.rows import VmDynamic, VmStatistics, VmStatus


@pytest_twisted.ensureDeferred
async def test_add_and_get(store):
    """A VM added reads back whole, JSON fields included, ``Down`` with no statistics."""
    vm = new_vm(
        "web1", mem_mib=512, vcpus=2, kernel="/boot/vmlinuz", initrd="/boot/initrd.img",
        cmdline="console=ttyS0", disks=[{"path": "/var/lib/a.qcow2", "format": "qcow2"}],
        nics=[{"mac": "52:54:00:00:00:01", "network": "default"}],
        custom={"hook": {"x": 1}}, ha=True, ha_priority=50,
    )
    added = await store.add_vm(vm)
    assert added.static.disks == vm.disks and added.static.nics == vm.nics
    assert added.static.custom == {"hook": {"x": 1}}
    assert (added.static.ha, added.static.ha_priority, added.static.vcpus) == (True, 50, 2)
    assert added.dynamic.status is VmStatus.DOWN and added.dynamic.external is False
    assert added.statistics is None
    assert await store.get_vm(vm.id) == added
    assert await store.get_vm_by_name("web1") == added


@pytest_twisted.ensureDeferred
async def test_add_external(store):
    """An external VM found running is added with the state it was found in."""
    host = new_host("h1")
    await store.add_host(host)
    vm = new_vm("stray")
    added = await store.add_vm(
        vm, dynamic=VmDynamic(vm.id, VmStatus.UP, run_on_host=host.id, external=True)
    )
    assert added.dynamic.external and added.dynamic.run_on_host == host.id
    assert [v.name for v in await store.list_vms(host_id=host.id)] == ["stray"]


@pytest_twisted.ensureDeferred
async def test_duplicate_and_invalid(store):
    """A taken name fails with ``DuplicateName``; no memory, with ``InvalidValue``."""
    await store.add_vm(new_vm("web1"))
    with pytest.raises(DuplicateName) as caught:
        await store.add_vm(new_vm("web1"))
    assert caught.value.kind == "vm"
    with pytest.raises(InvalidValue):
        await store.add_vm(new_vm("web2", mem_mib=0))
    assert [v.name for v in await store.list_vms()] == ["web1"]


@pytest_twisted.ensureDeferred
async def test_pinned_to_unknown_host(store):
    """Pinning to a host that does not exist fails with ``NotFound`` naming that host."""
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as caught:
        await store.add_vm(new_vm("web1", pinned_host=missing))
    assert (caught.value.kind, caught.value.key) == ("host", missing)
    assert await store.list_vms() == []


@pytest_twisted.ensureDeferred
async def test_unknown_ids(store):
    """Every VM method given an unknown id or name fails with ``NotFound``."""
    missing = uuid.uuid4()
    calls = [
        lambda: store.get_vm(missing),
        lambda: store.get_vm_by_name("nope"),
        lambda: store.update_vm(missing, mem_mib=1024),
        lambda: store.remove_vm(missing),
        lambda: store.set_vm_dynamic(VmDynamic(missing, VmStatus.UP)),
    ]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            await call()
        assert caught.value.kind == "vm"


@pytest_twisted.ensureDeferred
async def test_update_and_remove(store):
    """``update_vm`` changes the given fields; a removed VM and its rows are gone."""
    host = new_host("h1")
    await store.add_host(host)
    vm = new_vm("web1")
    await store.add_vm(vm)
    updated = await store.update_vm(vm.id, mem_mib=2048, nics=[], pinned_host=host.id)
    assert (updated.static.mem_mib, updated.static.nics) == (2048, [])
    assert updated.static.pinned_host == host.id
    await store.add_vm(new_vm("web2"))
    with pytest.raises(DuplicateName):
        await store.update_vm(vm.id, name="web2")
    await store.record_vm_statistics([VmStatistics(vm.id, cpu_percent=1.0)])
    await store.remove_vm(vm.id)
    assert [v.name for v in await store.list_vms()] == ["web2"]
    assert await store.vm_statistics_history(vm.id) == []


@pytest_twisted.ensureDeferred
async def test_list_by_host(store):
    """``list_vms(host_id=...)`` gives the VMs running on that host or migrating to it."""
    a, b = new_host("a"), new_host("b")
    await store.add_host(a)
    await store.add_host(b)
    vms = {name: new_vm(name) for name in ("on-a", "on-b", "a-to-b", "down")}
    for vm in vms.values():
        await store.add_vm(vm)
    await store.set_vm_dynamic(VmDynamic(vms["on-a"].id, VmStatus.UP, run_on_host=a.id))
    await store.set_vm_dynamic(VmDynamic(vms["on-b"].id, VmStatus.UP, run_on_host=b.id))
    await store.set_vm_dynamic(
        VmDynamic(vms["a-to-b"].id, VmStatus.MIGRATING_FROM, run_on_host=a.id,
                  migrating_to_host=b.id)
    )
    assert [v.name for v in await store.list_vms(host_id=a.id)] == ["a-to-b", "on-a"]
    assert [v.name for v in await store.list_vms(host_id=b.id)] == ["a-to-b", "on-b"]
    assert len(await store.list_vms()) == 4


@pytest_twisted.ensureDeferred
async def test_dynamic_on_unknown_host(store):
    """A runtime state naming a host that does not exist fails with ``NotFound``."""
    vm = new_vm("web1")
    await store.add_vm(vm)
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as caught:
        await store.set_vm_dynamic(VmDynamic(vm.id, VmStatus.UP, run_on_host=missing))
    assert (caught.value.kind, caught.value.key) == ("host", missing)


@pytest_twisted.ensureDeferred
async def test_older_status_event_is_refused(store):
    """A status event older than the stored one is refused and leaves the newer state."""
    host = new_host("h1")
    await store.add_host(host)
    vm = new_vm("web1")
    await store.add_vm(vm)
    up = VmDynamic(vm.id, VmStatus.UP, run_on_host=host.id, last_notify_time=2000)
    stale = VmDynamic(vm.id, VmStatus.POWERING_UP, run_on_host=host.id, last_notify_time=1000)
    assert await store.set_vm_dynamic(up) is True
    assert await store.set_vm_dynamic(stale) is False
    dyn = (await store.get_vm(vm.id)).dynamic
    assert (dyn.status, dyn.last_notify_time) == (VmStatus.UP, 2000)
    same = VmDynamic(vm.id, VmStatus.UP, run_on_host=host.id, last_notify_time=2000)
    assert await store.set_vm_dynamic(same) is True  # a repeated event is harmless


@pytest_twisted.ensureDeferred
async def test_status_events_in_any_order(store):
    """Events applied concurrently in a shuffled order leave the newest event's state."""
    vm = new_vm("web1")
    await store.add_vm(vm)
    statuses = [VmStatus.WAIT_FOR_LAUNCH, VmStatus.POWERING_UP, VmStatus.UP, VmStatus.PAUSED,
                VmStatus.UP, VmStatus.POWERING_DOWN, VmStatus.DOWN]
    events = [VmDynamic(vm.id, s, last_notify_time=100 * (n + 1), exit_reason=str(n))
              for n, s in enumerate(statuses)]
    random.Random(5).shuffle(events)
    await gatherResults([store.set_vm_dynamic(e) for e in events])
    dyn = (await store.get_vm(vm.id)).dynamic
    assert (dyn.status, dyn.last_notify_time, dyn.exit_reason) == (VmStatus.DOWN, 700, "6")


@pytest_twisted.ensureDeferred
async def test_unordered_and_forced_writes(store):
    """Without a notify time a write applies and keeps the stored one; ``force`` resets it."""
    vm = new_vm("web1")
    await store.add_vm(vm)
    await store.set_vm_dynamic(VmDynamic(vm.id, VmStatus.UP, last_notify_time=500))
    assert await store.set_vm_dynamic(VmDynamic(vm.id, VmStatus.POWERING_DOWN)) is True
    dyn = (await store.get_vm(vm.id)).dynamic
    assert (dyn.status, dyn.last_notify_time) == (VmStatus.POWERING_DOWN, 500)
    # The VM moved to a host whose notify clock is far behind: force resets the comparison.
    moved = VmDynamic(vm.id, VmStatus.UP, last_notify_time=7)
    assert await store.set_vm_dynamic(moved) is False
    assert await store.set_vm_dynamic(moved, force=True) is True
    assert await store.set_vm_dynamic(VmDynamic(vm.id, VmStatus.PAUSED, last_notify_time=8))
    assert (await store.get_vm(vm.id)).dynamic.status is VmStatus.PAUSED


@pytest_twisted.ensureDeferred
async def test_statistics_batch(store):
    """A batch stores each VM's latest sample and history; unknown VMs are skipped and a VM
    sampled twice keeps the last sample."""
    a, b = new_vm("a"), new_vm("b")
    await store.add_vm(a)
    await store.add_vm(b)
    recorded = await store.record_vm_statistics([
        VmStatistics(a.id, cpu_percent=10.0, mem_percent=20.0, balloon_cur_kib=262144,
                     net_rx_bytes=1, net_tx_bytes=2, disk_read_bytes=3, disk_write_bytes=4),
        VmStatistics(b.id, cpu_percent=1.0),
        VmStatistics(b.id, cpu_percent=2.0),
        VmStatistics(uuid.uuid4(), cpu_percent=99.0),
    ])
    assert recorded == 2
    stats_a = (await store.get_vm(a.id)).statistics
    assert stats_a is not None and stats_a.balloon_cur_kib == 262144
    assert (stats_a.net_rx_bytes, stats_a.disk_write_bytes) == (1, 4)
    assert (await store.get_vm(b.id)).statistics.cpu_percent == 2.0
    await store.record_vm_statistics([VmStatistics(b.id, cpu_percent=3.0)])
    assert [s.cpu_percent for s in await store.vm_statistics_history(b.id)] == [2.0, 3.0]
    assert await store.record_vm_statistics([]) == 0


@pytest_twisted.ensureDeferred
async def test_statistics_history_window(store):
    """History reads honour ``since`` and ``limit`` and drop samples past the retention."""
    clock = fake_clock()
    timed = await open_store(store.dsn, clock=clock)
    try:
        vm = new_vm("web1")
        await timed.add_vm(vm)
        start = datetime.fromtimestamp(clock.seconds(), UTC)
        for n in range(5):
            await timed.record_vm_statistics([VmStatistics(vm.id, cpu_percent=float(n))])
            clock.advance(3600)
        window = await timed.vm_statistics_history(vm.id, since=start + timedelta(hours=2))
        last_two = await timed.vm_statistics_history(vm.id, limit=2)
        clock.advance(3.5 * 3600)  # 8.5 h after the first sample: samples before 2.5 h go
        await timed.record_vm_statistics([VmStatistics(vm.id, cpu_percent=5.0)])
        remaining = await timed.vm_statistics_history(vm.id)
    finally:
        timed.close()
    assert [s.cpu_percent for s in window] == [2.0, 3.0, 4.0]
    assert [s.cpu_percent for s in last_two] == [3.0, 4.0]
    assert [s.cpu_percent for s in remaining] == [3.0, 4.0, 5.0]
