"""Every admin API verb against an in-memory ``FakeEngine``: its result's wire shape (checked
against ``schema/engine.yml`` by the server) and its errors: unknown ids, duplicate names,
conflicts, refusals with the scheduler's per-host explanation."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from api_harness import FakeEngine, start_api, until

from engine.store.rows import HostStatic, HostStatistics, VmStatistics
from vdsmlike.client import RemoteError

UNKNOWN = "0a0b0c0d-0000-4000-8000-000000000000"


@pytest_twisted.async_yield_fixture
async def api(store):
    """The API on a ``FakeEngine`` (hosts of 4096 MiB) and the real store."""
    server = await start_api(FakeEngine(), store)
    yield server
    await server.stop()


async def refused(d, code):
    """Await ``d``; :returns: its ``RemoteError``, which must have ``code``."""
    with pytest.raises(RemoteError) as caught:
        await d
    assert caught.value.code == code, caught.value
    return caught.value


async def finished(client, job):
    """Wait for a job to finish; :returns: the finished job."""
    latest = {}

    async def poll():
        latest.update(await client.call("Jobs.get", {"id": job["id"]}))

    await poll()
    while latest["status"] not in ("succeeded", "failed"):
        await poll()
    return latest


async def add_hosts(client, *names):
    """Add hosts; :returns: their ids by name."""
    ids = {}
    for name in names:
        host = await client.call("Hosts.add", {"name": name, "address": f"{name}.test"})
        ids[name] = host["id"]
    return ids


@pytest_twisted.ensureDeferred
async def test_hosts(api):
    """Hosts.add/list/get/remove answer Host shapes; the agent token never goes out."""
    client = await api.login()
    host = await client.call(
        "Hosts.add", {"name": "host2", "address": "10.0.0.2", "port": 1234, "token": "s3cret"}
    )
    assert host["name"] == "host2" and host["port"] == 1234 and host["status"] == "Up"
    assert host["created"].endswith("Z") and host["statistics"] is None
    uuid.UUID(host["id"])
    await client.call("Hosts.add", ["host1", "10.0.0.1"])  # positional params
    listed = await client.call("Hosts.list")
    assert [h["name"] for h in listed] == ["host1", "host2"]
    details = await client.call("Hosts.get", {"id": host["id"].upper()})
    assert details["capabilities"] == {"cpuCores": "4"} and details["id"] == host["id"]
    assert "s3cret" not in json.dumps([listed, details])
    assert await client.call("Hosts.remove", {"id": host["id"]}) is True
    assert [h["name"] for h in await client.call("Hosts.list")] == ["host1"]


@pytest_twisted.ensureDeferred
async def test_duplicate_names(api):
    """A taken host or VM name is 4091 with the kind and the name in data."""
    client = await api.login()
    await add_hosts(client, "host1")
    error = await refused(client.call("Hosts.add", {"name": "host1", "address": "x"}), 4091)
    assert error.data == {"kind": "host", "name": "host1"}
    assert error.message == "Name already in use: a host named 'host1' already exists"
    first = await client.call("VMs.add", {"name": "web1", "memory_mib": 256})
    error = await refused(client.call("VMs.add", {"name": "web1", "memory_mib": 512}), 4091)
    assert error.data == {"kind": "vm", "name": "web1"}
    await client.call("VMs.add", {"name": "web2", "memory_mib": 256})
    update = client.call("VMs.update", {"id": first["id"], "changes": {"name": "web2"}})
    assert (await refused(update, 4091)).data == {"kind": "vm", "name": "web2"}


@pytest_twisted.ensureDeferred
async def test_unknown_ids(api):
    """Every verb given an unknown id answers 404 with the kind and the id in data."""
    client = await api.login()
    calls = [
        ("Hosts.get", {"id": UNKNOWN}, "host"),
        ("Hosts.remove", {"id": UNKNOWN}, "host"),
        ("Hosts.maintenance", {"id": UNKNOWN}, "host"),
        ("Hosts.activate", {"id": UNKNOWN}, "host"),
        ("Hosts.statistics", {"id": UNKNOWN}, "host"),
        ("VMs.get", {"id": UNKNOWN}, "vm"),
        ("VMs.update", {"id": UNKNOWN, "changes": {"vcpus": 2}}, "vm"),
        ("VMs.remove", {"id": UNKNOWN}, "vm"),
        ("VMs.start", {"id": UNKNOWN}, "vm"),
        ("VMs.stop", {"id": UNKNOWN}, "vm"),
        ("VMs.shutdown", {"id": UNKNOWN}, "vm"),
        ("VMs.pause", {"id": UNKNOWN}, "vm"),
        ("VMs.resume", {"id": UNKNOWN}, "vm"),
        ("VMs.migrate", {"id": UNKNOWN}, "vm"),
        ("VMs.statistics", {"id": UNKNOWN}, "vm"),
        ("VMs.add", {"name": "x", "memory_mib": 1, "pinned_host_id": UNKNOWN}, "host"),
        ("Jobs.get", {"id": UNKNOWN}, "job"),
    ]
    results = await client.batch([(verb, params) for verb, params, _ in calls])
    for (verb, _, kind), result in zip(calls, results, strict=True):
        assert isinstance(result, RemoteError), verb
        assert result.code == 404, (verb, result)
        assert result.data == {"kind": kind, "id": UNKNOWN}, verb
        assert result.message == f"Not found: no {kind} {UNKNOWN}", verb
    assert await client.call("VMs.list") == []


@pytest_twisted.ensureDeferred
async def test_vm_definition(api):
    """VMs.add/list/get/update answer Vm shapes with the wire's names and defaults."""
    client = await api.login()
    hosts = await add_hosts(client, "host1", "host2")
    spec = {
        "name": "web1", "memory_mib": 512, "vcpus": 2, "kernel": "/boot/vmlinuz",
        "initrd": "/boot/initrd", "cmdline": "console=ttyS0", "disks": [{"path": "/d.img"}],
        "nics": [{"macAddr": "52:54:00:00:00:01"}], "custom": {"k": "v"}, "ha": True,
        "ha_priority": 50, "pinned_host_id": hosts["host1"],
    }
    vm = await client.call("VMs.add", spec)
    assert {k: vm[k] for k in spec} == spec
    assert vm["status"] == "Down" and vm["run_on_host_id"] is None and vm["external"] is False
    small = await client.call("VMs.add", {"name": "db1", "memory_mib": 128})
    assert (small["vcpus"], small["disks"], small["custom"], small["ha"]) == (1, [], {}, False)
    assert small["pinned_host_id"] is None and small["kernel"] is None
    assert [v["name"] for v in await client.call("VMs.list")] == ["db1", "web1"]
    assert await client.call("VMs.get", {"id": vm["id"]}) == vm
    changed = await client.call(
        "VMs.update",
        {"id": vm["id"], "changes": {"memory_mib": 1024, "pinned_host_id": None, "kernel": None}},
    )
    assert (changed["memory_mib"], changed["pinned_host_id"], changed["kernel"]) == (
        1024, None, None)
    assert changed["name"] == "web1" and changed["vcpus"] == 2


@pytest_twisted.ensureDeferred
async def test_vm_lifecycle(api):
    """Start, pause, resume, migrate, shutdown, stop: each answers a Job that then succeeds."""
    client = await api.login()
    hosts = await add_hosts(client, "host1", "host2")
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 256})
    job = await client.call("VMs.start", {"id": vm["id"], "host_id": hosts["host2"]})
    assert (job["action"], job["target_kind"], job["target_id"]) == ("start", "vm", vm["id"])
    assert job["status"] == "pending" and job["progress"] == 0
    done = await finished(client, job)
    assert done["status"] == "succeeded" and done["result"] == {"host_id": hosts["host2"]}
    on_host2 = await client.call("VMs.list", {"host_id": hosts["host2"]})
    assert [v["id"] for v in on_host2] == [vm["id"]]
    assert on_host2[0]["status"] == "Up" and on_host2[0]["run_on_host_id"] == hosts["host2"]
    assert await client.call("VMs.list", {"host_id": hosts["host1"]}) == []
    for verb, status in [("VMs.pause", "Paused"), ("VMs.resume", "Up")]:
        await finished(client, await client.call(verb, {"id": vm["id"]}))
        assert (await client.call("VMs.get", {"id": vm["id"]}))["status"] == status
    await finished(client, await client.call("VMs.migrate", {"id": vm["id"]}))
    assert (await client.call("VMs.get", {"id": vm["id"]}))["run_on_host_id"] == hosts["host1"]
    await finished(client, await client.call("VMs.shutdown", {"id": vm["id"]}))
    assert (await client.call("VMs.get", {"id": vm["id"]}))["status"] == "Down"
    await finished(client, await client.call("VMs.start", {"id": vm["id"]}))
    await finished(client, await client.call("VMs.stop", {"id": vm["id"]}))
    assert (await client.call("VMs.get", {"id": vm["id"]}))["status"] == "Down"
    assert await client.call("VMs.remove", {"id": vm["id"]}) is True
    await refused(client.call("VMs.get", {"id": vm["id"]}), 404)


@pytest_twisted.ensureDeferred
async def test_refused_start_explains_every_host(api):
    """A start no host can take is 4092 with the reason and each host's explanation in data."""
    client = await api.login()
    await add_hosts(client, "host2", "host1")
    vm = await client.call("VMs.add", {"name": "huge", "memory_mib": 65536})
    error = await refused(client.call("VMs.start", {"id": vm["id"]}), 4092)
    assert error.message == "Action refused: no host can run VM huge (65536 MiB)"
    assert error.data["reason"] == "no host can run VM huge (65536 MiB)"
    assert [h["name"] for h in error.data["hosts"]] == ["host1", "host2"]
    for host in error.data["hosts"]:
        assert host["passed"] is False and host["score"] is None
        assert host["reasons"] == ["refused by memory: needs 65536 MiB, 4096 MiB schedulable"]
    assert await client.call("Jobs.list") == []
    assert (await client.call("VMs.get", {"id": vm["id"]}))["status"] == "Down"


@pytest_twisted.ensureDeferred
async def test_refused_and_conflicting_actions(api):
    """Actions that make no sense now are 4092 or 409, and change nothing."""
    client = await api.login()
    hosts = await add_hosts(client, "host1")
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 256})
    for verb in ("VMs.stop", "VMs.pause", "VMs.resume", "VMs.shutdown", "VMs.migrate"):
        error = await refused(client.call(verb, {"id": vm["id"]}), 4092)
        assert error.data["reason"] == "VM web1 is Down", verb
    await finished(client, await client.call("VMs.start", {"id": vm["id"]}))
    error = await refused(client.call("VMs.migrate", {"id": vm["id"]}), 4092)
    assert error.data["hosts"][0]["reasons"] == ["refused by excluded: the VM runs there"]
    error = await refused(client.call("VMs.remove", {"id": vm["id"]}), 409)
    assert error.message == "Conflict: VM web1 is Up, not Down"
    error = await refused(client.call("Hosts.remove", {"id": hosts["host1"]}), 409)
    assert "still has VMs" in error.message
    await refused(client.call("Hosts.maintenance", {"id": hosts["host1"]}), 4092)


@pytest_twisted.ensureDeferred
async def test_host_maintenance_and_activation(api):
    """Hosts.maintenance (with move_back passed to the engine) and Hosts.activate answer jobs
    that move the host's status."""
    client = await api.login()
    hosts = await add_hosts(client, "host1")
    job = await client.call("Hosts.maintenance", {"id": hosts["host1"], "move_back": True})
    assert (job["action"], job["target_kind"]) == ("maintenance", "host")
    assert api.engine.move_back is True
    await finished(client, job)
    assert (await client.call("Hosts.get", {"id": hosts["host1"]}))["status"] == "Maintenance"
    await finished(client, await client.call("Hosts.activate", {"id": hosts["host1"]}))
    assert (await client.call("Hosts.get", {"id": hosts["host1"]}))["status"] == "Up"


@pytest_twisted.ensureDeferred
async def test_idempotency_keys(api):
    """A repeated key finds the first job; the key for another action is a 409."""
    client = await api.login()
    await add_hosts(client, "host1")
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 256})
    first = await client.call("VMs.start", {"id": vm["id"], "idempotency_key": "k1"})
    again = await client.call("VMs.start", {"id": vm["id"], "idempotency_key": "k1"})
    assert again["id"] == first["id"] and again["idempotency_key"] == "k1"
    await finished(client, first)
    error = await refused(client.call("VMs.stop", {"id": vm["id"], "idempotency_key": "k1"}), 409)
    assert "idempotency key 'k1'" in error.message


@pytest_twisted.ensureDeferred
async def test_jobs_list_and_get(api):
    """Jobs.list filters by status and target, newest first; Jobs.get answers one job."""
    client = await api.login()
    hosts = await add_hosts(client, "host1", "host2")
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 256})
    start = await client.call("VMs.start", {"id": vm["id"], "host_id": hosts["host1"]})
    start = await finished(client, start)
    maintenance = await client.call("Hosts.maintenance", {"id": hosts["host2"]})
    await until(lambda: api.engine.jobs[uuid.UUID(maintenance["id"])].status != "pending")
    jobs = await client.call("Jobs.list")
    assert [j["id"] for j in jobs] == [maintenance["id"], start["id"]]
    assert [j["id"] for j in await client.call("Jobs.list", {"target_id": vm["id"]})] == [
        start["id"]]
    assert len(await client.call("Jobs.list", {"status": "succeeded", "limit": 1})) == 1
    assert await client.call("Jobs.list", {"status": "running"}) == []
    assert await client.call("Jobs.get", {"id": start["id"]}) == start


@pytest_twisted.ensureDeferred
async def test_events_list_filters(api):
    """Events.list pages with since and before, filters by severity, host, VM, job and type."""
    client = await api.login()
    hosts = await add_hosts(client, "host1", "host2")
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 256})
    events = await client.call("Events.list")
    assert [e["type"] for e in events] == ["VM_ADDED", "HOST_ADDED", "HOST_ADDED"]
    newest, oldest = events[0], events[-1]
    assert newest["message"] == "VM web1 defined" and newest["vm_id"] == vm["id"]
    assert newest["severity"] == "normal" and newest["details"] == {"vm": "web1"}
    assert isinstance(newest["id"], str) and int(newest["id"]) > int(oldest["id"])
    since = await client.call("Events.list", {"since": oldest["id"]})
    assert [e["id"] for e in since] == [e["id"] for e in events[:2]]
    assert await client.call("Events.list", {"since": int(newest["id"])}) == []
    before = await client.call("Events.list", {"before": newest["id"], "limit": 1})
    assert [e["id"] for e in before] == [events[1]["id"]]
    by_host = await client.call("Events.list", {"host_id": hosts["host2"]})
    assert [e["host_id"] for e in by_host] == [hosts["host2"]]
    assert [e["id"] for e in await client.call("Events.list", {"vm_id": vm["id"]})] == [
        newest["id"]]
    assert len(await client.call("Events.list", {"type": "HOST_ADDED"})) == 2
    assert await client.call("Events.list", {"severity": "warning"}) == []
    await refused(client.call("VMs.start", {"id": vm["id"], "host_id": UNKNOWN}), 404)
    job = await client.call("VMs.start", {"id": vm["id"]})
    await until(lambda: api.engine.jobs[uuid.UUID(job["id"])].status == "succeeded")
    assert await client.call("Events.list", {"job_id": job["id"]}) == []


@pytest_twisted.ensureDeferred
async def test_statistics_history(api):
    """Hosts.statistics and VMs.statistics read the stored samples, oldest first."""
    client = await api.login()
    hosts = await add_hosts(client, "host1")
    host_id = uuid.UUID(hosts["host1"])
    await api.store.add_host(HostStatic(id=host_id, name="host1", address="host1.test"))
    now = datetime.now(UTC).replace(microsecond=0)
    for n in range(3):
        sample = HostStatistics(host_id, cpu_user=10.0 * n, mem_free_mib=1000 + n,
                                time=now - timedelta(seconds=30 - 10 * n))
        await api.store.record_host_statistics(sample)
    samples = await client.call("Hosts.statistics", {"id": hosts["host1"]})
    assert [s["cpu_user"] for s in samples] == [0.0, 10.0, 20.0]
    assert samples[0]["mem_free_mib"] == 1000 and samples[0]["ksm_enabled"] is None
    recent = await client.call(
        "Hosts.statistics", {"id": hosts["host1"], "since": samples[1]["time"], "limit": 5}
    )
    assert [s["cpu_user"] for s in recent] == [10.0, 20.0]
    assert [s["cpu_user"] for s in await client.call(
        "Hosts.statistics", {"id": hosts["host1"], "limit": 1})] == [20.0]
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 256})
    assert await client.call("VMs.statistics", {"id": vm["id"]}) == []
    vm_id = uuid.UUID(vm["id"])
    from engine.store.rows import VmStatic

    await api.store.add_vm(VmStatic(id=vm_id, name="web1", mem_mib=256))
    await api.store.record_vm_statistics([VmStatistics(vm_id, cpu_percent=5.5, time=now)])
    [sample] = await client.call("VMs.statistics", {"id": vm["id"]})
    assert sample["cpu_percent"] == 5.5 and sample["time"] == now.strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")


@pytest_twisted.ensureDeferred
async def test_html_in_names_is_plain_data(api):
    """Names with HTML, quotes and non-ASCII text go through untouched, in results and events."""
    client = await api.login()
    await client.call("Engine.subscribe", {"patterns": ["|engine|vm|*", "|engine|event|*"]})
    name = '<img src=x onerror="alert(1)">&amp; \'été\' </script>'
    host = await client.call("Hosts.add", {"name": "<b>host</b>", "address": "h<1>.test"})
    vm = await client.call("VMs.add", {"name": name, "memory_mib": 256})
    assert vm["name"] == name and host["name"] == "<b>host</b>"
    assert (await client.call("VMs.get", {"id": vm["id"]}))["name"] == name
    [event] = await client.call("Events.list", {"vm_id": vm["id"]})
    assert event["message"] == f"VM {name} defined"
    await until(lambda: any(p.get("vm", {}).get("name") == name for _, p in client.events))
    for bad in ("a\x00b", "line\nbreak", "", "x" * 201):
        await refused(client.call("VMs.add", {"name": bad, "memory_mib": 1}), -32602)
    assert await client.call("Engine.ping")
