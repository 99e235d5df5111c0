"""The tuning verbs MOM drives, through the whole agent over a real WebSocket, on libvirt's test
driver: CPU tune, ioTune and its policy, KSM into a fake sysfs tree, and every refusal.

The test driver has no vCPU bandwidth, so the adapter keeps quota and period for it (see
``vdsmlike/virt/libvirt.py``); its block IO limits are libvirt's own. The real calls on QEMU are
in ``test_agent_tuning_qemu.py``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest_twisted
from agent_harness import eventually, node_uri, start_agent
from test_agent_testdriver import expect_error

from vdsmlike.host.ksm import KSM_LIMITS
from vdsmlike.virt.tuning import IO_TUNE_KEYS
from vdsmlike.vm.domxml import build_domain
from vdsmlike.vm.tune import TUNE_NS

ZERO = dict.fromkeys(IO_TUNE_KEYS, 0)
QOS = (
    f'<ovirt-tune:qos xmlns:ovirt-tune="{TUNE_NS}"><ovirt-tune:vcpuLimit>50</ovirt-tune:vcpuLimit>'
    '<ovirt-tune:ioTune><ovirt-tune:device name="vda" path="/images/a.img"><ovirt-tune:maximum>'
    "<ovirt-tune:total_iops_sec>800</ovirt-tune:total_iops_sec></ovirt-tune:maximum>"
    "</ovirt-tune:device></ovirt-tune:ioTune></ovirt-tune:qos>"
)


def ksm_tree(tmp_path: Path) -> Path:
    """A fake KSM sysfs directory, every knob at 0."""
    tree = tmp_path / "ksm"
    tree.mkdir()
    for knob in KSM_LIMITS:
        (tree / knob).write_text("0\n")
    return tree


@pytest_twisted.async_yield_fixture
async def agent(tmp_path):
    """A strict agent on a private test-driver host, KSM going to a fake tree."""
    running = await start_agent(
        tmp_path, libvirt_uri=node_uri(tmp_path), ksm_dir=str(ksm_tree(tmp_path))
    )
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture
async def advisory_agent(tmp_path):
    """The same agent in VDSM's advisory mode: bad values reach the handlers."""
    running = await start_agent(
        tmp_path, libvirt_uri=node_uri(tmp_path), ksm_dir=str(ksm_tree(tmp_path)), strict=False
    )
    yield running
    await running.stop()


async def create_vm(agent, *, qos: str = "") -> str:
    """Create a VM with disks vda (/images/a.img) and vdb, and a CD-ROM; wait until Up."""
    vm_id = str(uuid.uuid4())
    params = {
        "vmId": vm_id,
        "vmName": "t-" + vm_id[:6],
        "memSize": 128,
        "drives": [
            {"path": "/images/a.img", "format": "raw", "iface": "virtio"},
            {"path": "/images/b.img", "format": "raw", "iface": "virtio"},
            {"device": "cdrom", "iface": "ide"},
        ],
    }
    xml = build_domain(params, domain_type="kvm").replace("<metadata>", f"<metadata>{qos}", 1)
    await agent.call("VM.create", {"vmParams": {"xml": xml}})
    await agent.wait_for_status(vm_id, "Up")
    return vm_id


async def vm_stats(agent, vm_id):
    [stats] = await agent.call("VM.getStats", [vm_id])
    return stats


@pytest_twisted.ensureDeferred
async def test_cpu_tune_verbs_show_in_vm_stats(agent):
    """setCpuTuneQuota and setCpuTunePeriod answer true and VM stats report the new values,
    with the policy's vcpuUserLimit, as MOM's CpuTune collector reads them."""
    vm_id = await create_vm(agent, qos=QOS)
    stats = await eventually(lambda: vm_stats(agent, vm_id), lambda s: "vcpuQuota" in s)
    assert (stats["vcpuQuota"], stats["vcpuPeriod"], stats["vcpuUserLimit"]) == (
        "-1",
        "100000",
        "50",
    )
    assert await agent.call("VM.setCpuTuneQuota", {"vmID": vm_id, "quota": 25000}) is True
    assert await agent.call("VM.setCpuTunePeriod", [vm_id, 50000]) is True
    stats = await eventually(lambda: vm_stats(agent, vm_id), lambda s: "vcpuCount" in s)
    assert (stats["vcpuQuota"], stats["vcpuPeriod"], stats["vcpuCount"]) == ("25000", "50000", "1")
    [listed] = await agent.call("Host.getAllVmStats")
    assert (listed["vcpuQuota"], listed["vcpuUserLimit"]) == ("25000", "50")


@pytest_twisted.ensureDeferred
async def test_io_tune_verbs_round_trip(agent):
    """setIoTune by name and by path, read back by getIoTune, VM stats and the policies."""
    vm_id = await create_vm(agent, qos=QOS)
    assert await agent.call("VM.getIoTune", [vm_id]) == [
        {"name": "vda", "path": "/images/a.img", "ioTune": ZERO},
        {"name": "vdb", "path": "/images/b.img", "ioTune": ZERO},
    ]
    tunables = [
        {"name": "vda", "ioTune": {"total_iops_sec": 400}},
        {"path": "/images/b.img", "ioTune": {"read_bytes_sec": 1048576, "write_iops_sec": 20}},
    ]
    assert await agent.call("VM.setIoTune", {"vmID": vm_id, "tunables": tunables}) is True
    await agent.call("VM.setIoTune", [vm_id, [{"name": "vdb", "ioTune": {"write_iops_sec": 0}}]])
    current = [
        {"name": "vda", "path": "/images/a.img", "ioTune": ZERO | {"total_iops_sec": 400}},
        {"name": "vdb", "path": "/images/b.img", "ioTune": ZERO | {"read_bytes_sec": 1048576}},
    ]
    assert await agent.call("VM.getIoTune", [vm_id]) == current
    stats = await eventually(lambda: vm_stats(agent, vm_id), lambda s: "ioTune" in s)
    assert stats["ioTune"] == current
    policy = [{"name": "vda", "path": "/images/a.img", "maximum": {"total_iops_sec": 800}}]
    assert await agent.call("VM.getIoTunePolicy", [vm_id]) == policy
    assert await agent.call("Host.getAllVmIoTunePolicies") == {
        vm_id: {"policy": policy, "current_values": current}
    }


@pytest_twisted.ensureDeferred
async def test_ksm_tune_writes_the_knobs(agent, tmp_path):
    """setKsmTune writes the knobs given into the configured KSM directory."""
    params = {"run": 1, "pages_to_scan": 1250, "sleep_millisecs": 10, "merge_across_nodes": 1}
    assert await agent.call("Host.setKsmTune", {"tuningParams": params}) is True
    written = {p.name: int(p.read_text()) for p in (tmp_path / "ksm").iterdir()}
    assert written == params


@pytest_twisted.ensureDeferred
async def test_bad_tuning_requests_get_clear_errors_and_the_agent_serves_on(agent, tmp_path):
    """Unknown VMs, Down VMs, mistyped, unknown or out-of-range values, unknown disks, mixed
    limits and values libvirt refuses each get their error; nothing changes, the agent serves."""
    vm_id = await create_vm(agent)
    other = str(uuid.uuid4())
    for verb, params in (
        ("VM.setCpuTuneQuota", [other, 5000]),
        ("VM.setCpuTunePeriod", [other, 5000]),
        ("VM.setIoTune", [other, []]),
        ("VM.getIoTune", [other]),
        ("VM.getIoTunePolicy", [other]),
    ):
        assert "does not exist" in await expect_error(agent, verb, params, 1)

    def set_io(name, values):
        return [vm_id, [{"name": name, "ioTune": values}]]

    for verb, params, code, text in (
        ("VM.setCpuTuneQuota", [vm_id, "50%"], -32602, "quota: '50%' is not of type 'integer'"),
        ("VM.setCpuTunePeriod", [vm_id, 1.5], -32602, "period: 1.5 is not of type 'integer'"),
        ("VM.setCpuTuneQuota", [vm_id, 500], 62, "out of range [1000, 17592186044415]"),
        ("VM.setCpuTunePeriod", [vm_id, 5], 62, "out of range [1000, 1000000]"),
        ("VM.setIoTune", set_io("vda", {"iops": 5}), -32602, "ioTune.iops: unknown property"),
        ("VM.setIoTune", set_io("vda", {"read_iops_sec": -5}), -32602, "less than the minimum"),
        ("VM.setIoTune", set_io("vdz", {"read_iops_sec": 5}), 64, "Device vdz not found"),
        ("VM.setIoTune", set_io("hdc", {"read_iops_sec": 5}), 64, "Device hdc not found"),
        ("VM.setIoTune", set_io("vda", {"total_bytes_sec": 9, "read_bytes_sec": 9}), 64,
         "can not be set at the same time"),
        ("VM.setIoTune", set_io("vda", {"read_bytes_sec": 10**16}), 64, "no more than"),
        ("Host.setKsmTune", [{"run": 3}], -32602, "tuningParams.run: 3 is greater than"),
        ("Host.setKsmTune", [{"pages_to_scan": 2**32}], -32602, "pages_to_scan"),
        ("Host.setKsmTune", [{"full_scans": 0}], -32602, "full_scans: unknown property"),
    ):  # fmt: skip
        message = await expect_error(agent, verb, params, code)
        assert text in message, (verb, params, message)

    stats = await eventually(lambda: vm_stats(agent, vm_id), lambda s: "vcpuQuota" in s)
    assert (stats["vcpuQuota"], stats["vcpuPeriod"]) == ("-1", "100000")
    assert await agent.call("VM.getIoTune", [vm_id]) == [
        {"name": "vda", "path": "/images/a.img", "ioTune": ZERO},
        {"name": "vdb", "path": "/images/b.img", "ioTune": ZERO},
    ]
    assert {p.read_text() for p in (tmp_path / "ksm").iterdir()} == {"0\n"}

    await agent.call("VM.shutdown", {"vmID": vm_id, "timeout": 5})
    await agent.wait_for_status(vm_id, "Down")
    await expect_error(agent, "VM.setCpuTuneQuota", [vm_id, 5000], 6)
    await expect_error(agent, "VM.getIoTune", [vm_id], 6)
    assert await agent.call("Host.getAllVmIoTunePolicies") == {vm_id: {}}
    assert await agent.call("Host.ping2") is True


@pytest_twisted.ensureDeferred
async def test_advisory_agent_answers_vdsm_codes_for_bad_values(advisory_agent, tmp_path):
    """With advisory validation, bad values reach the handlers and get VDSM's 62, 64 and 71."""
    agent = advisory_agent
    vm_id = await create_vm(agent)
    for verb, params, code, text in (
        ("VM.setCpuTuneQuota", [vm_id, "50%"], 62, "an integer is required for quota"),
        ("VM.setCpuTunePeriod", [vm_id, None], 62, "an integer is required for period"),
        ("VM.setIoTune", [vm_id, [{"name": "vda", "ioTune": {"iops": 5}}]], 64,
         "parameter iops name is invalid"),
        ("VM.setIoTune", [vm_id, [{"name": "vda", "ioTune": {"read_iops_sec": -5}}]], 64,
         "equal or greater than zero"),
        ("VM.setIoTune", [vm_id, {"name": "vda"}], 64, "tunables must be a list"),
        ("Host.setKsmTune", [{"run": 3}], 71, "invalid value (3) for ksm tuning param run"),
        ("Host.setKsmTune", [{"run": 1, "full_scans": 0}], 71, "invalid key"),
        ("Host.setKsmTune", ["run"], 71, "tuningParams must be an object"),
    ):  # fmt: skip
        message = await expect_error(agent, verb, params, code)
        assert text in message, (verb, params, message)
    assert await agent.call("VM.setCpuTuneQuota", [vm_id, "20000"]) is True
    stats = await eventually(lambda: vm_stats(agent, vm_id), lambda s: "vcpuQuota" in s)
    assert stats["vcpuQuota"] == "20000"
    assert {p.read_text() for p in (tmp_path / "ksm").iterdir()} == {"0\n"}
