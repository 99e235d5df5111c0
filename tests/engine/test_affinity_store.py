"""Affinity groups in the store, on real PostgreSQL: the rows with their members, what removing
a VM or a host does to them, typed failures, and the migration from schema version 3."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from pg_harness import new_host, new_vm, open_store
from twisted.internet import reactor

from engine.store.affinity import AffinityGroupRow
from engine.store.errors import DuplicateName, InvalidValue, NotFound
from engine.store.migrations import load_migrations, migrate, schema_version
from engine.store.pool import ReconnectingPool


def group(name: str, **fields) -> AffinityGroupRow:
    """A group row with a fresh id."""
    return AffinityGroupRow(id=uuid.uuid4(), name=name, **fields)


@pytest_twisted.ensureDeferred
async def test_groups_keep_their_members_and_lose_removed_vms_and_hosts(store):
    """A group is stored with its member VMs and hosts, read back whole, changed (members
    replaced whole), and loses a VM or host that is removed; removing it leaves the VMs."""
    h1, h2 = new_host("h1"), new_host("h2")
    for h in (h1, h2):
        await store.add_host(h)
    a, b, c = new_vm("a"), new_vm("b"), new_vm("c")
    for vm in (a, b, c):
        await store.add_vm(vm)
    row = group(
        "web",
        vm_polarity="negative",
        hard=True,
        vms=(a.id, b.id),
        hosts=(h1.id,),
        host_polarity="negative",
        hosts_hard=False,
        priority=2.5,
    )
    stored = await store.add_affinity_group(row)
    assert set(stored.vms) == {a.id, b.id} and stored.hosts == (h1.id,)
    assert (stored.vm_polarity, stored.hard, stored.hosts_hard, stored.priority) == (
        "negative", True, False, 2.5)  # fmt: skip
    assert stored.created is not None
    await store.add_affinity_group(group("db", vm_polarity="positive", vms=(c.id,)))
    assert [g.name for g in await store.list_affinity_groups()] == ["db", "web"]

    changed = await store.update_affinity_group(row.id, vms=(b.id, c.id), priority=1.0)
    assert set(changed.vms) == {b.id, c.id} and changed.hosts == (h1.id,)
    await store.remove_vm(c.id)
    await store.remove_host(h1.id)
    again = await store.get_affinity_group(row.id)
    assert again.vms == (b.id,) and again.hosts == ()
    assert (await store.list_affinity_groups())[0].vms == ()  # db lost c

    await store.remove_affinity_group(row.id)
    with pytest.raises(NotFound):
        await store.get_affinity_group(row.id)
    assert (await store.get_vm(b.id)).name == "b"


@pytest_twisted.ensureDeferred
async def test_typed_failures(store):
    """Duplicate names, unknown members and bad values are the store's typed errors, and
    leave nothing behind."""
    vm = new_vm("a")
    await store.add_vm(vm)
    await store.add_affinity_group(group("g"))
    with pytest.raises(DuplicateName) as taken:
        await store.add_affinity_group(group("g"))
    assert taken.value.kind == "affinity group"
    with pytest.raises(NotFound) as missing:
        await store.add_affinity_group(group("h", vms=(uuid.uuid4(),)))
    assert missing.value.kind == "vm"
    with pytest.raises(InvalidValue):
        await store.add_affinity_group(group("i", vm_polarity="sideways"))
    with pytest.raises(NotFound):
        await store.update_affinity_group(uuid.uuid4(), priority=3.0)
    with pytest.raises(NotFound):
        await store.remove_affinity_group(uuid.uuid4())
    with pytest.raises(TypeError, match="colour"):
        await store.update_affinity_group(uuid.uuid4(), colour="red")
    assert [g.name for g in await store.list_affinity_groups()] == ["g"]


@pytest_twisted.async_yield_fixture
async def version_3(pg):
    """A database at schema version 3 with a host and a VM, and its DSN."""
    name = await pg.new_database(migrated=False)
    pool = ReconnectingPool(pg.dsn(name), reactor=reactor, size=1)
    await pool.start()
    assert await migrate(pool, load_migrations()[:3]) == [1, 2, 3]
    yield pool, pg.dsn(name)
    pool.close()
    await pg.drop_database(name)


@pytest_twisted.ensureDeferred
async def test_upgrade_from_version_3(version_3):
    """A version-3 database with hosts and VMs takes migration 4, keeps its data, and the
    store then keeps groups over the old VMs."""
    pool, dsn = version_3
    host, vm = new_host("old-host"), new_vm("old-vm")

    async def version_3_data(tx):
        await tx.execute(
            "INSERT INTO host_static (id, name, address) VALUES (%s, %s, %s)",
            (host.id, host.name, host.address),
        )
        await tx.execute("INSERT INTO host_dynamic (host_id, status) VALUES (%s, 'Up')", (host.id,))
        await tx.execute(
            "INSERT INTO vm_static (id, name, mem_mib) VALUES (%s, %s, 256)", (vm.id, vm.name)
        )
        await tx.execute("INSERT INTO vm_dynamic (vm_id, status) VALUES (%s, 'Down')", (vm.id,))

    await pool.run(version_3_data)
    later = [m.version for m in load_migrations()][3:]
    assert later[0] == 4 and await migrate(pool) == later
    assert await schema_version(pool) == later[-1]
    store = await open_store(dsn)
    try:
        assert (await store.get_vm_by_name("old-vm")).id == vm.id
        stored = await store.add_affinity_group(group("g", vms=(vm.id,), hosts=(host.id,)))
        assert stored.vms == (vm.id,) and stored.hosts == (host.id,)
    finally:
        store.close()
