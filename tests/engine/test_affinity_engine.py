"""Affinity groups through the engine and its admin API: real PostgreSQL, real in-process
agents on libvirt's test driver (16 GiB, 4 CPUs each), real WebSockets with results checked
against ``schema/engine.yml``. Groups are defined with ``AffinityGroups.*``, checked against each
other, and honoured by the scheduler for starts, migrations and maintenance."""

from __future__ import annotations

import re

import pytest
import pytest_twisted
from api_harness import ApiServer
from engine_harness import add_up_host, events_of, host_status, job_done, vm_status
from test_api_engine import admin_password, refused

from engine.errors import ActionRefused
from engine.store.errors import Conflict, NotFound

UNKNOWN = "0a0b0c0d-0000-4000-8000-000000000000"


@pytest_twisted.async_yield_fixture
async def client(engine_run):
    """A logged-in API client (validation on) over the running engine and its store."""
    server = await ApiServer(engine_run.engine, engine_run.top.store).start()
    server.password = admin_password(engine_run)
    connection = await server.login(password=server.password)
    yield connection
    await server.stop()


async def started(engine, vm_id):
    """Start a VM, wait for its job to succeed; :returns: the host's name."""
    job = await job_done(engine, (await engine.start_vm(vm_id)).id)
    assert job.status == "succeeded", job.error
    return job.result["host"]


@pytest_twisted.ensureDeferred
async def test_hard_apart_groups_spread_vms_and_refuse_a_start_with_reasons(
    engine_run, engine_agents, client
):
    """Two VMs of a hard apart group land on different hosts although one host could take
    both; a third VM kept apart from each (two more groups) finds no host: its start is refused
    with each host's vm_affinity reason; once one of those groups is removed it starts, on the
    host the remaining rule allows."""
    engine = engine_run.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    await add_up_host(engine, "h2", await engine_agents.start())
    vms = [await engine.add_vm({"name": f"web{i}", "memory_mib": 128}) for i in (1, 2, 3)]
    ids = [str(vm.id) for vm in vms]
    add = "AffinityGroups.add"
    group = await client.call(add, {"name": "web", "vm_polarity": "negative", "hard": True,
                                    "vm_ids": ids[:2]})  # fmt: skip
    assert group["vm_polarity"] == "negative" and sorted(group["vm_ids"]) == sorted(ids[:2])
    assert group["hosts_hard"] is None and group["priority"] == 1 and group["host_ids"] == []
    first, second = await started(engine, vms[0].id), await started(engine, vms[1].id)
    assert {first, second} == {"h1", "h2"}
    await client.call(add, {"name": "w13", "vm_polarity": "negative", "hard": True,
                            "vm_ids": [ids[0], ids[2]]})  # fmt: skip
    w23 = await client.call(add, {"name": "w23", "vm_polarity": "negative", "hard": True,
                                  "vm_ids": [ids[1], ids[2]]})  # fmt: skip
    with pytest.raises(ActionRefused) as caught:
        await engine.start_vm(vms[2].id)
    explanation = caught.value.explanation
    assert set(explanation) == {"h1", "h2"}
    assert "group 'w13' (hard, apart) has web1" in " ".join(explanation[first])
    assert "group 'w23' (hard, apart) has web2" in " ".join(explanation[second])
    error = await refused(client.call("VMs.start", {"id": ids[2]}), 4092)
    assert "vm_affinity" in error.message
    assert await client.call("AffinityGroups.remove", {"id": w23["id"]}) is True
    assert await started(engine, vms[2].id) == second
    added = await events_of(engine, "AFFINITY_GROUP_ADDED")
    assert any("web1, web2 apart (hard)" in e.message for e in added)
    assert await events_of(engine, "AFFINITY_GROUP_REMOVED")


@pytest_twisted.ensureDeferred
async def test_conflicting_groups_are_refused_naming_them(engine_run, engine_agents, client):
    """A group that contradicts the hard groups already there is refused with 409 naming the
    groups and VMs, and is not stored; unknown members are 404, a taken name 4091; list, get
    and remove work, and a removed VM leaves its groups."""
    engine = engine_run.engine
    await add_up_host(engine, "h1", await engine_agents.start())
    await add_up_host(engine, "h2", await engine_agents.start())
    a, b, c = [str((await engine.add_vm({"name": n, "memory_mib": 128})).id) for n in "abc"]
    add = "AffinityGroups.add"
    ab = await client.call(add, {"name": "ab", "vm_polarity": "positive", "hard": True,
                                 "vm_ids": [a, b]})  # fmt: skip
    bc = await client.call(add, {"name": "bc", "vm_polarity": "positive", "hard": True,
                                 "vm_ids": [b, c]})  # fmt: skip
    error = await refused(client.call(add, {"name": "split", "vm_polarity": "negative",
                                            "hard": True, "vm_ids": [a, c]}), 409)  # fmt: skip
    assert re.search(
        r"(a and c|c and a) must run together \(hard: 'ab', 'bc'\) and apart "
        r"\(hard: 'split'\)",
        error.message,
    )
    error = await refused(
        client.call(
            add, {"name": "wide", "vm_polarity": "negative", "hard": True, "vm_ids": [a, b, c]}
        ),
        409,
    )
    assert "only 2 hosts may run them" in error.message
    await refused(client.call(add, {"name": "ab", "vm_ids": [c]}), 4091)
    await refused(client.call(add, {"name": "ghost", "vm_ids": [UNKNOWN]}), 404)
    await refused(client.call(add, {"name": "bad", "vm_polarity": "sideways"}), -32602)
    with pytest.raises(Conflict, match="'ab'"):
        await engine.update_affinity_group(bc["id"], {"vm_polarity": "negative", "vms": [a, b]})
    listed = await client.call("AffinityGroups.list", {})
    assert [g["name"] for g in listed] == ["ab", "bc"]
    await engine.remove_vm(a)
    got = await client.call("AffinityGroups.get", {"id": ab["id"]})
    assert got["vm_ids"] == [b]
    assert await client.call("AffinityGroups.remove", {"id": ab["id"]}) is True
    await refused(client.call("AffinityGroups.get", {"id": ab["id"]}), 404)
    with pytest.raises(NotFound):
        await engine.get_affinity_group(ab["id"])
    assert await events_of(engine, "AFFINITY_GROUP_REMOVED")


@pytest_twisted.ensureDeferred
async def test_maintenance_keeps_a_hard_together_group_on_one_host(
    engine_run, engine_agents, client
):
    """Two VMs that must run together leave a host going into maintenance for one host, even
    though the scheduler would spread them; a VM that would split them is refused."""
    engine = engine_run.engine
    h1 = await add_up_host(engine, "h1", await engine_agents.start())
    await add_up_host(engine, "h2", await engine_agents.start())
    await add_up_host(engine, "h3", await engine_agents.start())
    app = await engine.add_vm({"name": "app", "memory_mib": 128, "pinned_host": h1.id})
    cache = await engine.add_vm({"name": "cache", "memory_mib": 128})
    await client.call("AffinityGroups.add", {
        "name": "stack", "vm_polarity": "positive", "hard": True,
        "vm_ids": [str(app.id), str(cache.id)]})  # fmt: skip
    assert await started(engine, app.id) == "h1"
    assert await started(engine, cache.id) == "h1"  # follows app
    await engine.update_vm(app.id, {"pinned_host": None})
    for vm in (app, cache):
        await vm_status(engine, vm.id, "Up")
    job = await job_done(engine, (await engine.maintenance(h1.id)).id, timeout=30)
    assert job.status == "succeeded", job.error
    await host_status(engine, h1.id, "Maintenance")
    moved = [await vm_status(engine, vm.id, "Up") for vm in (app, cache)]
    assert moved[0].dynamic.run_on_host == moved[1].dynamic.run_on_host != h1.id
