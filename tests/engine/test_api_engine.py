"""The admin API end to end: the real engine core (``engine.core.Engine`` in the production
service tree), real PostgreSQL, and real agents in this process on libvirt's test driver
(16 GiB, 4 CPUs each), driven over real WebSockets with results and notifications checked
against ``schema/engine.yml``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import pytest_twisted
from api_harness import ApiServer, login, until
from engine_harness import eventually
from twisted.internet.utils import getProcessOutputAndValue

from engine.service import ADMIN
from vdsmlike.client import RemoteError

REPO = str(Path(__file__).resolve().parents[2])
UNKNOWN = "0a0b0c0d-0000-4000-8000-000000000000"


def admin_password(running) -> str:
    """The admin password the engine wrote at its first start."""
    return Path(running.config.password_file).read_text().strip()


@pytest_twisted.async_yield_fixture
async def api(engine_run):
    """The API with validation on, over the running engine and its store."""
    server = await ApiServer(engine_run.engine, engine_run.top.store).start()
    server.password = admin_password(engine_run)
    yield server
    await server.stop()


async def refused(d, code):
    """Await ``d``; :returns: its ``RemoteError``, which must have ``code``."""
    with pytest.raises(RemoteError) as caught:
        await d
    assert caught.value.code == code, caught.value
    return caught.value


async def notified(client, predicate, what, timeout=15.0):
    """Wait for a notification ``predicate(event_id, params)`` accepts; :returns: its params."""
    found = []

    def check():
        found.extend(p for e, p in client.events if predicate(e, p))
        return found

    await until(check, timeout, what)
    return found[0]


async def up_host(client, name, agent):
    """Add an agent as a host and wait for the notification that it is Up; :returns: it."""
    host = await client.call("Hosts.add", {"name": name, "address": "127.0.0.1",
                                           "port": agent.port})
    assert host["status"] == "Installing"
    await notified(client, lambda e, p: e == f"|engine|host|{host['id']}"
                   and p["host"]["status"] == "Up", f"host {name} Up")
    return host


async def job_end(client, job):
    """Wait for the notification that a job ended; :returns: the job."""
    params = await notified(client, lambda e, p: e == f"|engine|job|{job['id']}"
                            and p["job"]["status"] in ("succeeded", "failed"), "the job's end")
    return params["job"]


@pytest_twisted.ensureDeferred
async def test_through_the_engines_own_site(engine_run, tmp_path):
    """The engine mounts the API at /api: the admin logs in with the password it printed."""
    url = engine_run.url.replace("http://", "ws://") + "api"
    client = await login(url, ADMIN, admin_password(engine_run))
    assert await client.call("Hosts.list") == []
    events = await client.call("Events.list", {"type": "ENGINE_STARTED"})
    assert events and events[0]["message"] == "Engine started"
    password = tmp_path / "password"
    password.write_text(admin_password(engine_run) + "\n")
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "vdsmlike.cli.client", "--url", url, "--user", ADMIN, "--password-file",
         str(password), "Engine.ping"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO}, path=REPO,
    )
    assert code == 0, err
    assert json.loads(out)["version"] == "0.1"


@pytest_twisted.ensureDeferred
async def test_host_and_vm_lifecycle(api, engine_agents):
    """A host is added and comes Up, a VM is defined, started, stopped and removed, all seen
    in results, notifications and the audit log."""
    client = await api.login(ADMIN, api.password)
    await client.call("Engine.subscribe")
    host = await up_host(client, "h1", await engine_agents.start())
    details = await client.call("Hosts.get", {"id": host["id"]})
    assert details["status"] == "Up" and details["mem_total_mib"] == 16384
    assert details["capabilities"]
    vm = await client.call("VMs.add", {"name": "web1", "memory_mib": 256, "vcpus": 2,
                                       "nics": [{"model": "virtio"}], "custom": {"role": "web"}})
    assert vm["status"] == "Down" and vm["nics"][0]["macAddr"].startswith("56:6f:")
    job = await client.call("VMs.start", {"id": vm["id"]})
    assert job["action"] == "start" and job["target_id"] == vm["id"]
    done = await job_end(client, job)
    assert done["status"] == "succeeded" and done["progress"] == 100, done
    await notified(client, lambda e, p: e == f"|engine|vm|{vm['id']}"
                   and p["vm"]["status"] == "Up", "the VM Up")
    running = await client.call("VMs.get", {"id": vm["id"]})
    assert running["run_on_host_id"] == host["id"]
    assert [v["id"] for v in await client.call("VMs.list", {"host_id": host["id"]})] == [vm["id"]]
    [placed] = await client.call("Events.list", {"vm_id": vm["id"], "type": "VM_PLACED"})
    assert placed["details"]["host"] == "h1"
    stop = await client.call("VMs.stop", {"id": vm["id"], "idempotency_key": "stop-1"})
    assert (await client.call("VMs.stop", {"id": vm["id"], "idempotency_key": "stop-1"}))[
        "id"] == stop["id"]
    assert (await job_end(client, stop))["status"] == "succeeded"
    await notified(client, lambda e, p: e == f"|engine|vm|{vm['id']}"
                   and p["vm"]["status"] == "Down", "the VM Down")
    assert await client.call("VMs.remove", {"id": vm["id"]}) is True
    removed = await notified(client, lambda e, p: e == f"|engine|removed|{vm['id']}",
                             "the removal")
    assert removed["kind"] == "vm"
    samples = await eventually(lambda: client.call("Hosts.statistics", {"id": host["id"]}),
                               lambda samples: samples, what="host statistics")
    assert samples[-1]["cpu_idle"] is not None
    jobs = await client.call("Jobs.list", {"target_id": vm["id"]})
    assert {j["action"] for j in jobs} == {"start", "stop"}


@pytest_twisted.ensureDeferred
async def test_refused_start_carries_the_schedulers_explanation(api, engine_agents):
    """A VM no host can hold is refused with 4092 and, for every host (by id and name), why
    (memory)."""
    client = await api.login(ADMIN, api.password)
    await client.call("Engine.subscribe")
    await up_host(client, "h1", await engine_agents.start())
    await up_host(client, "h2", await engine_agents.start())
    vm = await client.call("VMs.add", {"name": "huge", "memory_mib": 65536})
    error = await refused(client.call("VMs.start", {"id": vm["id"]}), 4092)
    assert error.message.startswith("Action refused: ")
    hosts = error.data["hosts"]
    assert sorted(h["name"] for h in hosts) == ["h1", "h2"]
    ids = {h["name"]: h["id"] for h in await client.call("Hosts.list")}
    assert {h["name"]: h["id"] for h in hosts} == ids, "each explanation names its host's id"
    for host in hosts:
        assert host["passed"] is False
        assert any("memory" in reason for reason in host["reasons"]), host
    refusals = await client.call("Events.list", {"vm_id": vm["id"], "type": "VM_START_REFUSED"})
    assert refusals and refusals[0]["severity"] == "warning"
    assert (await client.call("VMs.get", {"id": vm["id"]}))["status"] == "Down"


@pytest_twisted.ensureDeferred
async def test_core_errors_on_the_wire(api, engine_agents):
    """Unknown ids, duplicate names, conflicts and values the core refuses get their codes,
    and the engine keeps serving."""
    client = await api.login(ADMIN, api.password)
    await client.call("Engine.subscribe")
    host = await up_host(client, "h1", await engine_agents.start())
    for verb, params, kind in [("Hosts.get", {"id": UNKNOWN}, "host"),
                               ("VMs.start", {"id": UNKNOWN}, "vm"),
                               ("VMs.update", {"id": UNKNOWN, "changes": {"vcpus": 2}}, "vm"),
                               ("Jobs.get", {"id": UNKNOWN}, "job")]:
        error = await refused(client.call(verb, params), 404)
        assert error.data["kind"] == kind, verb
    error = await refused(client.call("Hosts.add", {"name": "h1", "address": "x"}), 4091)
    assert error.data == {"kind": "host", "name": "h1"}
    name = '<img src=x onerror="alert(1)">'  # no "/": the agent refuses it in a vmName
    vm = await client.call("VMs.add", {"name": name, "memory_mib": 128})
    await refused(client.call("VMs.add", {"name": name, "memory_mib": 128}), 4091)
    error = await refused(
        client.call("VMs.add", {"name": "d", "memory_mib": 128, "disks": [{"format": "raw"}]}),
        -32602)
    assert "disks[0].path is required" in error.message
    started = await job_end(client, await client.call("VMs.start", {"id": vm["id"]}))
    assert started["status"] == "succeeded", started["error"]
    await refused(client.call("VMs.start", {"id": vm["id"]}), 4092)
    await refused(client.call("VMs.remove", {"id": vm["id"]}), 409)
    error = await refused(client.call("Hosts.remove", {"id": host["id"]}), 409)
    assert error.message == f"Conflict: host h1 still runs VMs: {name}"
    assert (await client.call("VMs.get", {"id": vm["id"]}))["name"] == name
    assert await client.call("Engine.ping")


@pytest_twisted.ensureDeferred
async def test_vm_statistics_arrive_live(api, engine_agents):
    """A running VM's statistics are published with every poll, not only with state changes:
    a subscriber sees new samples arrive while the VM stays Up."""
    client = await api.login(ADMIN, api.password)
    await client.call("Engine.subscribe")
    host = await up_host(client, "h1", await engine_agents.start())
    vm = await client.call("VMs.add", {"name": "sampled", "memory_mib": 128})
    await client.call("VMs.start", {"id": vm["id"], "host_id": host["id"]})
    await eventually(lambda: client.call("VMs.get", {"id": vm["id"]}),
                     lambda v: v["status"] == "Up", timeout=15, what="the VM Up")
    mark = len(client.events)

    def sampled_while_up():
        return [p["vm"] for e, p in client.events[mark:] if e == f"|engine|vm|{vm['id']}"
                and p["vm"]["status"] == "Up" and p["vm"]["statistics"] is not None]

    await until(lambda: len(sampled_while_up()) >= 3, 15, "three live samples of an Up VM")
