"""PostgresStore on real PostgreSQL: hosts' power management settings."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import pytest_twisted
from pg_harness import new_host

from engine.store.errors import InvalidValue, NotFound
from engine.store.rows import HostPowerManagement


@pytest_twisted.ensureDeferred
async def test_a_host_without_settings_has_the_disabled_defaults(store):
    """No row yet: disabled, no driver, no options, fencing enabled, never updated."""
    host = await store.add_host(new_host("h1"))
    assert await store.get_power_management(host.id) == HostPowerManagement(host.id)


@pytest_twisted.ensureDeferred
async def test_settings_are_replaced_whole_and_read_back(store):
    """Set twice: the second replaces the first, options (nested JSON included) kept as given,
    stamped with the store's time."""
    host = await store.add_host(new_host("h1"))
    first = HostPowerManagement(host.id, enabled=True, driver="process",
                                options={"cgroup": "vl/h1", "start": ["python3", "-m", "x"]},
                                fencing_enabled=False)  # fmt: skip
    stored = await store.set_power_management(first)
    assert dataclasses.replace(stored, updated=None) == first and stored.updated is not None
    second = HostPowerManagement(host.id, enabled=False, driver="process", options={})
    assert (await store.set_power_management(second)).options == {}
    assert (await store.get_power_management(host.id)).fencing_enabled is True


@pytest_twisted.ensureDeferred
async def test_unknown_hosts_and_inconsistent_settings_are_refused(store):
    """An unknown host is NotFound both ways; enabled without a driver is InvalidValue."""
    with pytest.raises(NotFound):
        await store.get_power_management(uuid.uuid4())
    with pytest.raises(NotFound):
        await store.set_power_management(HostPowerManagement(uuid.uuid4()))
    host = await store.add_host(new_host("h1"))
    with pytest.raises(InvalidValue):
        await store.set_power_management(HostPowerManagement(host.id, enabled=True))


@pytest_twisted.ensureDeferred
async def test_settings_go_with_their_host(store):
    """Removing a host removes its settings; a new host of the same name starts clean."""
    host = await store.add_host(new_host("h1"))
    await store.set_power_management(HostPowerManagement(host.id, enabled=True,
                                                         driver="process"))  # fmt: skip
    await store.remove_host(host.id)
    again = await store.add_host(new_host("h1"))
    assert (await store.get_power_management(again.id)).enabled is False
