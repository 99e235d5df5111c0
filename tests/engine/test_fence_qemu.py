"""End to end with a real guest: a test host launched with ``vdsmlike.testhost`` (its cgroup, a
session ``libvirtd`` as an unprivileged user, an agent child process) runs the tiny test guest
for the engine (real PostgreSQL, the admin API over WebSockets). A soft fence restarts the
agent and the guest keeps running; ``Hosts.fence off`` kills the host whole, guest included
(its QEMU process is gone from /proc); ``on`` brings the agent back."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from api_harness import ApiServer
from engine_harness import eventually
from guests import READY_MARKER, guest_xml, last_tick, serial_text
from twisted.internet import reactor

from engine.fence.cgroup import Cgroup, find_cgroup2
from engine.fence.process import ProcessPowerDriver
from engine.fence.procs import alive
from engine.fence.result import Outcome, Power
from vdsmlike.agentproc import connect_when_ready
from vdsmlike.libvirtd import ensure_user
from vdsmlike.testhost import TestHostProcess

pytestmark = [pytest.mark.slow, pytest.mark.qemu]


@pytest.fixture
def qemu_host(guest_image):
    """A test host with a session libvirtd in a cgroup; killed and removed after the test."""
    if find_cgroup2() is None:
        pytest.skip("cgroup v2 is not mounted on this machine")
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed")
    if os.geteuid() != 0:
        pytest.skip("running libvirtd as an unprivileged user needs root")
    ensure_user()
    directory = Path(tempfile.mkdtemp(prefix="vlq-", dir="/tmp"))
    host = TestHostProcess(directory, cgroup=f"vdsmlike-tests/qemu-{uuid.uuid4().hex[:8]}",
                           settings=("vars.vm_sample_interval=1", "vars.host_sample_interval=1",
                                     "vars.guest_wait_timeout=2"))  # fmt: skip
    host.launch()
    yield host
    host.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.async_yield_fixture
async def api(engine_run):
    server = await ApiServer(engine_run.engine, engine_run.top.store).start()
    password = Path(engine_run.config.password_file).read_text().strip()
    server.client = await server.login("admin", password)
    yield server
    await server.client.close()
    await server.stop()


async def finished(call, job, timeout=120.0):
    return await eventually(lambda: call("Jobs.get", {"id": job["id"]}),
                            lambda j: j["status"] in ("succeeded", "failed"), timeout,
                            interval=0.2, what=f"job {job['action']}")  # fmt: skip


async def host_in(call, host_id, status, timeout=60.0):
    return await eventually(lambda: call("Hosts.get", {"id": host_id}),
                            lambda h: h["status"] == status, timeout, interval=0.2,
                            what=f"host {status}")  # fmt: skip


def qemu_of(host: TestHostProcess):
    """The QEMU processes in the host's cgroup."""
    return [p for p in Cgroup(host.cgroup).members() if p.name.startswith("qemu")]


async def serial(path: Path) -> str:
    return serial_text(path)


@pytest_twisted.ensureDeferred
async def test_fencing_a_test_host_running_a_real_guest(api, qemu_host, guest_image):
    """Soft fencing keeps the guest; power off kills its QEMU with the host, proven; on
    brings the host's agent back Up."""
    call = api.client.call
    await qemu_host.wait_url(reactor, timeout=90)
    added = await call("Hosts.add", {"name": "q1", "address": "127.0.0.1",
                                     "port": qemu_host.port})  # fmt: skip
    hid = (await host_in(call, added["id"], "Up"))["id"]
    await call("Hosts.setPowerManagement", {
        "id": hid, "enabled": True, "driver": "process",
        "options": qemu_host.power_options(start_timeout=90, stop_timeout=30)})  # fmt: skip
    vm = await call("VMs.add", {"name": "guest", "memory_mib": 192,
                                "kernel": str(guest_image / "vmlinuz"),
                                "initrd": str(guest_image / "initrd.img"),
                                "cmdline": "console=ttyS0 quiet"})  # fmt: skip
    started = await finished(call, await call("VMs.start", {"id": vm["id"], "host_id": hid}))
    assert started["status"] == "succeeded", started["error"]
    console = qemu_host.dir / "agent" / "serial" / f"{vm['id']}.log"
    await eventually(lambda: serial(console), lambda text: READY_MARKER in text, 60,
                     interval=0.2, what="the guest's ready marker")  # fmt: skip
    [qemu] = qemu_of(qemu_host)
    assert os.stat(f"/proc/{qemu.pid}").st_uid == ensure_user()[0]  # the daemon's user

    restarted = await finished(call, await call("Hosts.fence", {"id": hid, "action": "restart"}))
    assert restarted["status"] == "succeeded", restarted["error"]
    assert alive(qemu), "the guest must outlive a soft fence"
    tick = last_tick(console)
    await eventually(lambda: serial(console), lambda _: (last_tick(console) or 0) > (tick or 0),
                     15, interval=0.2, what="the guest still counting")  # fmt: skip
    await eventually(lambda: call("VMs.get", {"id": vm["id"]}), lambda v: v["status"] == "Up",
                     30, interval=0.2, what="the guest Up after the restart")  # fmt: skip

    off = await finished(call, await call("Hosts.fence", {"id": hid, "action": "off",
                                                          "force": True}))  # fmt: skip
    assert off["status"] == "succeeded", off["error"]
    assert not alive(qemu) and not os.path.exists(f"/proc/{qemu.pid}/exe")
    assert f" {qemu.pid}" in off["result"]["proof"]  # the guest's QEMU, among the killed
    status = await call("Hosts.powerStatus", {"id": hid})
    assert (status["power"], status["proof"]) == (
        "off", f"cgroup {Cgroup(qemu_host.cgroup).path} has no processes")  # fmt: skip
    down = await call("VMs.get", {"id": vm["id"]})
    assert (down["status"], down["exit_status"]) == ("Down", "error")
    await host_in(call, hid, "Down")

    on = await finished(call, await call("Hosts.fence", {"id": hid, "action": "on"}))
    assert on["status"] == "succeeded", on["error"]
    await host_in(call, hid, "Up", timeout=90)
    assert qemu_of(qemu_host) == []  # the guest is not started again by power-on


@pytest.fixture
def embedded_host(guest_image):
    """A test host on an embedded QEMU root in a cgroup; killed and removed after the test."""
    if find_cgroup2() is None:
        pytest.skip("cgroup v2 is not mounted on this machine")
    directory = Path(tempfile.mkdtemp(prefix="vlq-", dir="/tmp"))
    host = TestHostProcess(directory, cgroup=f"vdsmlike-tests/emb-{uuid.uuid4().hex[:8]}",
                           embedded=True)  # fmt: skip
    host.launch()
    yield host
    host.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


@pytest_twisted.ensureDeferred
async def test_an_embedded_hosts_guests_stay_in_its_cgroup_and_die_with_it(
    embedded_host, guest_image
):
    """libvirt would move an embedded root's QEMU (run as root) into a cgroup of its own; the
    launcher's root keeps it in the host's, so power off kills the guest too."""
    url = await embedded_host.wait_url(reactor, timeout=90)
    client = await connect_when_ready(reactor, url)
    vm_id = str(uuid.uuid4())
    console = embedded_host.dir / "console.log"
    xml = guest_xml(guest_image, console, vm_id=vm_id)
    await client.call("VM.create", {"vmID": vm_id, "vmParams": {"xml": xml}})
    await client.close()
    await eventually(lambda: serial(console), lambda text: READY_MARKER in text, 60,
                     interval=0.2, what="the guest's ready marker")  # fmt: skip
    [qemu] = qemu_of(embedded_host)
    options = ProcessPowerDriver.check_options(embedded_host.power_options(stop_timeout=30))
    off = await ProcessPowerDriver(options, reactor=reactor).off()
    assert (off.outcome, off.power) == (Outcome.DONE, Power.OFF), off
    assert f"qemu-system-x86 {qemu.pid}" in off.proof and not alive(qemu)
