"""Power management and fencing through the admin API: the real engine core on real
PostgreSQL, over real WebSockets (results and notifications checked against
``schema/engine.yml``), with real test hosts (the launcher, its cgroup, an agent child process
on libvirt's test driver) powered off and on by the ``process`` driver."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from api_harness import ApiServer, until
from engine_harness import eventually
from link_harness import TEST_NODE_XML
from twisted.internet import reactor

from engine.fence.cgroup import find_cgroup2
from vdsmlike.client import RemoteError
from vdsmlike.testhost import TestHostProcess

UNKNOWN = "0a0b0c0d-0000-4000-8000-000000000000"


@pytest_twisted.async_yield_fixture
async def api(engine_run):
    """The API with validation on, over the running engine and its store."""
    server = await ApiServer(engine_run.engine, engine_run.top.store).start()
    password = Path(engine_run.config.password_file).read_text().strip()
    server.client = await server.login("admin", password)
    yield server
    await server.client.close()
    await server.stop()


class Hosts:
    """Test hosts on libvirt's test driver (a node of their own), each in a cgroup when cgroup
    v2 is there."""

    def __init__(self) -> None:
        self.made: list[TestHostProcess] = []

    async def start(self, name: str) -> TestHostProcess:
        directory = Path(tempfile.mkdtemp(prefix=f"vlh-{name}-", dir="/tmp"))
        (directory / "node.xml").write_text(TEST_NODE_XML)  # 16 GiB, 4 CPUs, no VMs
        cgroup = f"vdsmlike-tests/{name}-{uuid.uuid4().hex[:8]}" if find_cgroup2() else None
        host = TestHostProcess(directory, cgroup=cgroup, libvirt_uri=f"test://{directory}/node.xml",
                               settings=("vars.vm_sample_interval=0.5",
                                         "vars.guest_wait_timeout=0.3"))  # fmt: skip
        host.launch()
        self.made.append(host)
        await host.wait_url(reactor)
        return host


@pytest.fixture
def test_hosts():
    made = Hosts()
    yield made
    for host in made.made:
        host.cleanup()
        shutil.rmtree(host.dir, ignore_errors=True)


async def refused(d, code):
    """Await ``d``; :returns: its ``RemoteError``, which must have ``code``."""
    with pytest.raises(RemoteError) as caught:
        await d
    assert caught.value.code == code, caught.value
    return caught.value


async def add_up(api, name, host):
    """Register a test host and wait until it is Up; :returns: its wire Host."""
    added = await api.client.call("Hosts.add", {"name": name, "address": "127.0.0.1",
                                                "port": host.port})  # fmt: skip
    return await status(api, added["id"], "Up")


async def status(api, host_id, wanted, timeout=40.0):
    return await eventually(lambda: api.client.call("Hosts.get", {"id": host_id}),
                            lambda h: h["status"] == wanted, timeout,
                            what=f"host {wanted}")  # fmt: skip


async def finished(api, job, timeout=60.0):
    """Wait until a job is final; :returns: it."""
    return await eventually(lambda: api.client.call("Jobs.get", {"id": job["id"]}),
                            lambda j: j["status"] in ("succeeded", "failed"), timeout,
                            what=f"job {job['action']} final")  # fmt: skip


async def events(api, host_id, kind):
    return await api.client.call("Events.list", {"host_id": host_id, "type": kind, "limit": 50})


async def configure(api, host_id, host, **options):
    return await api.client.call("Hosts.setPowerManagement", {
        "id": host_id, "enabled": True, "driver": "process",
        "options": host.power_options(start_timeout=30, stop_timeout=10, **options)})  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_power_management_settings_are_checked_and_kept(api, test_hosts):
    """Settings are refused with a clear -32602 (unknown driver, unknown option, enabled
    without a driver) or 404, stored when valid, audited, and read back; status then comes
    from the driver."""
    host = await test_hosts.start("pm")
    wire_host = await add_up(api, "pm", host)
    hid = wire_host["id"]
    empty = await api.client.call("Hosts.getPowerManagement", {"id": hid})
    assert empty == {"host_id": hid, "enabled": False, "driver": "", "options": {},
                     "secret_options": [], "fencing_enabled": True, "updated": None}  # fmt: skip
    call = api.client.call
    error = await refused(
        call("Hosts.setPowerManagement", {"id": hid, "enabled": True, "driver": "ipmi"}), -32602
    )
    assert "no power driver 'ipmi' is installed (installed: process)" in error.message
    error = await refused(
        call(
            "Hosts.setPowerManagement",
            {"id": hid, "enabled": True, "driver": "process", "options": {"colour": "red"}},
        ),
        -32602,
    )
    assert "unknown option(s) colour" in error.message
    error = await refused(
        call("Hosts.setPowerManagement", {"id": hid, "enabled": True, "driver": ""}), -32602
    )
    assert "needs a driver" in error.message
    await refused(
        call("Hosts.setPowerManagement", {"id": UNKNOWN, "enabled": False, "driver": ""}), 404
    )
    stored = await configure(api, hid, host)
    assert stored["enabled"] and stored["driver"] == "process" and stored["updated"]
    assert stored["options"]["start"] == host.argv() and stored["options"]["stop_timeout"] == 10
    assert await call("Hosts.getPowerManagement", {"id": hid}) == stored
    [event] = await events(api, hid, "HOST_POWER_MANAGEMENT_SET")
    assert event["message"].startswith("Power management of host pm set: enabled, driver process")
    found = await call("Hosts.powerStatus", {"id": hid})
    assert (found["outcome"], found["power"], found["agent"]) == ("done", "on", "power")
    assert f" {host.state()['pid']}" in found["proof"]  # the launcher, by pid


@pytest_twisted.ensureDeferred
async def test_power_off_and_on_through_fence_jobs(api, test_hosts):
    """Off is refused (409) for an Up host running a VM unless forced; forced, the job proves
    it (no process left), the host goes Down and its VM Down with an error; power status is
    then off; on starts the host again and it comes back Up."""
    host = await test_hosts.start("off")
    hid = (await add_up(api, "off", host))["id"]
    await configure(api, hid, host)
    call = api.client.call
    vm = await call("VMs.add", {"name": "victim", "memory_mib": 128})
    started = await finished(api, await call("VMs.start", {"id": vm["id"], "host_id": hid}))
    assert started["status"] == "succeeded", started["error"]
    error = await refused(call("Hosts.fence", {"id": hid, "action": "off"}), 409)
    assert "runs 1 VM(s) (victim)" in error.message and "force: true" in error.message
    error = await refused(
        call("Hosts.fence", {"id": hid, "action": "off", "agent": "soft"}), -32602
    )
    assert "the soft fence agent cannot off" in error.message
    job = await call("Hosts.fence", {"id": hid, "action": "off", "force": True})
    assert job["action"] == "fence_off" and job["target_id"] == hid
    done = await finished(api, job)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert (result["outcome"], result["power"], result["agent"]) == ("done", "off", "power")
    assert "has no processes left (was " in result["proof"]
    [step] = await events(api, hid, "HOST_FENCE_STEP_DONE")
    assert step["job_id"] == job["id"] and step["details"]["proof"] == result["proof"]
    assert len(await events(api, hid, "HOST_FENCE_STEP_STARTED")) == 1
    await status(api, hid, "Down")
    victim = await call("VMs.get", {"id": vm["id"]})
    assert (victim["status"], victim["exit_status"]) == ("Down", "error")
    assert "powered off by fencing" in victim["exit_message"]
    off = await call("Hosts.powerStatus", {"id": hid})
    assert (off["power"], off["outcome"]) == ("off", "done")
    on = await finished(api, await call("Hosts.fence", {"id": hid, "action": "on"}))
    assert on["status"] == "succeeded", on["error"]
    assert (
        f"the agent's URL file {host.dir / 'agent.url'} says ws://127.0.0.1:{host.port}"
        in on["result"]["proof"]
    )
    await status(api, hid, "Up")


@pytest_twisted.ensureDeferred
async def test_reboot_has_two_steps_and_a_failed_fence_fails_its_job(api, test_hosts):
    """A reboot of a host without VMs needs no force and records off and on; a status the
    driver cannot observe is a failed job with an unknown step, and the engine serves on."""
    host = await test_hosts.start("rb")
    hid = (await add_up(api, "rb", host))["id"]
    await configure(api, hid, host)
    call = api.client.call
    rebooted = await finished(api, await call("Hosts.fence", {"id": hid, "action": "reboot"}))
    assert rebooted["status"] == "succeeded", rebooted["error"]
    assert [s["action"] for s in rebooted["result"]["steps"]] == ["off", "on"]
    assert len(await events(api, hid, "HOST_FENCE_STEP_DONE")) == 2
    await status(api, hid, "Up")
    await call(
        "Hosts.setPowerManagement",
        {
            "id": hid,
            "enabled": True,
            "driver": "process",
            "options": {"cgroup": "/tmp/not-a-cgroup"},
        },
    )
    blind = await finished(api, await call("Hosts.fence", {"id": hid, "action": "status"}))
    assert blind["status"] == "failed" and "unknown" in blind["error"]
    [unknown] = await events(api, hid, "HOST_FENCE_STEP_UNKNOWN")
    assert "not a cgroup under" in unknown["details"]["proof"]
    assert (await call("Hosts.get", {"id": hid}))["status"] == "Up"


@pytest_twisted.ensureDeferred
async def test_soft_restart_and_hosts_without_power_management(api, test_hosts):
    """Without power management: status asks the agent, power actions are 409, and a soft
    restart is a job proven by a new agent instance; the host is Up again after it."""
    host = await test_hosts.start("soft")
    hid = (await add_up(api, "soft", host))["id"]
    call = api.client.call
    found = await call("Hosts.powerStatus", {"id": hid})
    assert (found["power"], found["agent"]) == ("on", "soft")
    assert "answered Host.ping2" in found["proof"]
    error = await refused(call("Hosts.fence", {"id": hid, "action": "off"}), 409)
    assert "has no power management enabled" in error.message
    await refused(call("Hosts.fence", {"id": hid, "action": "explode"}), -32602)
    await refused(call("Hosts.fence", {"id": UNKNOWN, "action": "restart"}), 404)
    before = (await call("Hosts.get", {"id": hid}))["capabilities"]["agentInstance"]
    job = await call("Hosts.fence", {"id": hid, "action": "restart", "idempotency_key": "r1"})
    again = await call("Hosts.fence", {"id": hid, "action": "restart", "idempotency_key": "r1"})
    assert again["id"] == job["id"] and job["action"] == "fence_restart"
    done = await finished(api, job)
    assert done["status"] == "succeeded", done["error"]
    assert f"agent instance {before}" in done["result"]["proof"]
    await until(lambda: host.state().get("agent_starts") == 2, 30, "the agent restarted")
    up = await eventually(lambda: call("Hosts.get", {"id": hid}),
                          lambda h: h["capabilities"]["agentInstance"] != before, 40,
                          what="the new instance stored")  # fmt: skip
    assert up["status"] == "Up"
