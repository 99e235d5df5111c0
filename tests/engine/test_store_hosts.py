"""PostgresStore on real PostgreSQL: hosts (static, dynamic, statistics and their history)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from pg_harness import fake_clock, new_host, new_vm, open_store

from engine.store.errors import Conflict, DuplicateName, InvalidValue, NotFound
from engine.store.rows import HostDynamic, HostStatistics, HostStatus, VmDynamic, VmStatus


@pytest_twisted.ensureDeferred
async def test_add_and_get(store):
    """A host added reads back whole, by id and by name, ``Installing`` with no statistics."""
    host = new_host("h1", port=4000, token="secret")
    added = await store.add_host(host)
    assert added.static.name == "h1" and added.static.port == 4000
    assert added.static.token == "secret" and added.static.created is not None
    assert added.dynamic.status is HostStatus.INSTALLING
    assert added.statistics is None
    assert await store.get_host(host.id) == added
    assert await store.get_host_by_name("h1") == added


@pytest_twisted.ensureDeferred
async def test_add_with_initial_dynamic(store):
    """``add_host`` takes an initial runtime state, whatever host id that state carries."""
    host = new_host("h1")
    added = await store.add_host(
        host, dynamic=HostDynamic(uuid.uuid4(), status=HostStatus.CONNECTING, cpu_count=8)
    )
    assert added.dynamic.host_id == host.id
    assert added.dynamic.status is HostStatus.CONNECTING and added.dynamic.cpu_count == 8


@pytest_twisted.ensureDeferred
async def test_list_by_name(store):
    """``list_hosts`` returns every host, ordered by name."""
    for name in ("c", "a", "b"):
        await store.add_host(new_host(name))
    assert [h.name for h in await store.list_hosts()] == ["a", "b", "c"]


@pytest_twisted.ensureDeferred
async def test_duplicate_name(store):
    """A second host with a taken name fails with ``DuplicateName`` and adds nothing."""
    await store.add_host(new_host("h1"))
    with pytest.raises(DuplicateName) as caught:
        await store.add_host(new_host("h1"))
    assert caught.value.kind == "host" and caught.value.name == "h1"
    assert len(await store.list_hosts()) == 1


@pytest_twisted.ensureDeferred
async def test_unknown_ids(store):
    """Every host method given an unknown id or name fails with ``NotFound``."""
    missing = uuid.uuid4()
    calls = [
        lambda: store.get_host(missing),
        lambda: store.get_host_by_name("nope"),
        lambda: store.update_host(missing, address="x"),
        lambda: store.remove_host(missing),
        lambda: store.update_host_dynamic(missing, status=HostStatus.UP),
        lambda: store.record_host_statistics(HostStatistics(missing, cpu_user=1.0)),
    ]
    for call in calls:
        with pytest.raises(NotFound) as caught:
            await call()
        assert caught.value.kind == "host"


@pytest_twisted.ensureDeferred
async def test_update_static(store):
    """``update_host`` changes the given fields only and moves ``updated``."""
    clock = fake_clock()
    timed = await open_store(store.dsn, clock=clock)
    try:
        host = new_host("h1", address="10.0.0.1")
        before = await timed.add_host(host)
        clock.advance(5)
        after = await timed.update_host(host.id, name="h2", port=5555)
    finally:
        timed.close()
    assert (after.name, after.static.port, after.static.address) == ("h2", 5555, "10.0.0.1")
    assert after.static.updated - before.static.updated == timedelta(seconds=5)
    assert after.static.created == before.static.created


@pytest_twisted.ensureDeferred
async def test_rename_to_taken_name(store):
    """Renaming a host to another host's name fails with ``DuplicateName``; nothing changes."""
    await store.add_host(new_host("h1"))
    other = new_host("h2")
    await store.add_host(other)
    with pytest.raises(DuplicateName):
        await store.update_host(other.id, name="h1")
    assert (await store.get_host(other.id)).name == "h2"


@pytest_twisted.ensureDeferred
async def test_update_refuses_fixed_and_unknown_fields(store):
    """Changing an id, a timestamp or a field that does not exist is a ``TypeError``."""
    host = new_host("h1")
    await store.add_host(host)
    for changes in ({"id": uuid.uuid4()}, {"created": datetime.now(UTC)}, {"colour": "red"}):
        with pytest.raises(TypeError):
            await store.update_host(host.id, **changes)


@pytest_twisted.ensureDeferred
async def test_invalid_values(store):
    """A port out of range or an empty name fails with ``InvalidValue``."""
    with pytest.raises(InvalidValue):
        await store.add_host(new_host("h1", port=70000))
    with pytest.raises(InvalidValue):
        await store.add_host(new_host(""))
    assert await store.list_hosts() == []


@pytest_twisted.ensureDeferred
async def test_update_dynamic(store):
    """``update_host_dynamic`` sets state, reason, last-seen time and capabilities."""
    host = new_host("h1")
    await store.add_host(host)
    seen = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    caps = {"cpuCores": "4", "numaNodes": {"0": {"totalMemory": "16384"}}}
    updated = await store.update_host_dynamic(
        host.id, status=HostStatus.UP, status_reason="", last_seen=seen, capabilities=caps,
        cpu_count=4, mem_total_mib=16384,
    )
    dyn = updated.dynamic
    assert (dyn.status, dyn.last_seen, dyn.capabilities) == (HostStatus.UP, seen, caps)
    assert (dyn.cpu_count, dyn.mem_total_mib) == (4, 16384)
    with pytest.raises(InvalidValue):
        await store.update_host_dynamic(host.id, status="Exploded")


@pytest_twisted.ensureDeferred
async def test_remove(store):
    """A removed host is gone with its dynamic and statistics rows."""
    host = new_host("h1")
    await store.add_host(host)
    await store.record_host_statistics(HostStatistics(host.id, cpu_user=5.0))
    await store.remove_host(host.id)
    assert await store.list_hosts() == []
    assert await store.host_statistics_history(host.id) == []
    await store.add_host(new_host("h1"))  # the name is free again


@pytest_twisted.ensureDeferred
async def test_remove_host_running_vms(store):
    """A host that VMs run on cannot be removed (``Conflict``); pinned VMs are unpinned."""
    host = new_host("h1")
    await store.add_host(host)
    running = new_vm("running")
    pinned = new_vm("pinned", pinned_host=host.id)
    await store.add_vm(running, dynamic=VmDynamic(running.id, VmStatus.UP, run_on_host=host.id))
    await store.add_vm(pinned)
    with pytest.raises(Conflict):
        await store.remove_host(host.id)
    await store.set_vm_dynamic(VmDynamic(running.id, VmStatus.DOWN), force=True)
    await store.remove_host(host.id)
    assert (await store.get_vm(pinned.id)).static.pinned_host is None


@pytest_twisted.ensureDeferred
async def test_statistics_latest_and_history(store):
    """Each sample replaces the host's latest statistics and joins its history, oldest first."""
    host = new_host("h1")
    await store.add_host(host)
    base = datetime.now(UTC)
    for n in range(3):
        await store.record_host_statistics(
            HostStatistics(host.id, cpu_user=float(n), mem_free_mib=1000 - n, vm_count=n,
                           ksm_enabled=True, time=base + timedelta(seconds=n))
        )
    latest = (await store.get_host(host.id)).statistics
    assert latest is not None and latest.cpu_user == 2.0 and latest.mem_free_mib == 998
    history = await store.host_statistics_history(host.id)
    assert [s.cpu_user for s in history] == [0.0, 1.0, 2.0]
    assert [s.cpu_user for s in await store.host_statistics_history(host.id, limit=2)] == [1, 2]
    since = await store.host_statistics_history(host.id, since=base + timedelta(seconds=1))
    assert [s.vm_count for s in since] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_statistics_history_retention(store):
    """History older than the retention is dropped as new samples arrive."""
    clock = fake_clock()
    timed = await open_store(store.dsn, clock=clock)
    try:
        host = new_host("h1")
        await timed.add_host(host)
        await timed.record_host_statistics(HostStatistics(host.id, cpu_user=1.0))
        clock.advance(3600)
        await timed.record_host_statistics(HostStatistics(host.id, cpu_user=2.0))
        clock.advance(6 * 3600 - 1800)  # the first sample is now older than six hours
        await timed.record_host_statistics(HostStatistics(host.id, cpu_user=3.0))
        history = await timed.host_statistics_history(host.id)
    finally:
        timed.close()
    assert [s.cpu_user for s in history] == [2.0, 3.0]
