"""The whole agent over a real WebSocket, on libvirt's test driver: lifecycle, views, errors.

These run the production service tree (``make_service``) in this process against a private
``test:///<file>`` host, with every result and event validated against the schema.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from agent_harness import eventually, wait_until

from vdsmlike.client import RemoteError
from vdsmlike.vm.domxml import build_domain


def legacy_params(**extra):
    params = {"vmId": str(uuid.uuid4()), "vmName": "vm-" + uuid.uuid4().hex[:6], "memSize": 128}
    params.update(extra)
    return params


async def create_up(agent, **extra) -> str:
    """Create a VM from legacy params and wait until it is reported Up; :returns: its id."""
    params = legacy_params(**extra)
    await agent.call("VM.create", {"vmParams": params})
    await agent.wait_for_status(params["vmId"], "Up")
    return params["vmId"]


async def expect_error(agent, method, params, code):
    with pytest.raises(RemoteError) as info:
        await agent.call(method, params)
    assert info.value.code == code, info.value
    return info.value.message


@pytest_twisted.ensureDeferred
async def test_vm_lifecycle_reports_vdsm_states_in_order(agent):
    """A VM goes WaitForLaunch, Powering up, Up, Paused, Up, Down, each reported once, in order."""
    params = legacy_params()
    vm_id = params["vmId"]
    created = await agent.call("VM.create", {"vmParams": params})
    assert created["status"] == "WaitForLaunch" and created["vmId"] == vm_id
    await agent.wait_for_status(vm_id, "Up")
    assert await agent.call("VM.pause", {"vmID": vm_id}) is True
    await agent.wait_for_status(vm_id, "Paused")
    assert await agent.call("VM.cont", [vm_id]) is True
    await wait_until(lambda: agent.statuses(vm_id).count("Up") == 2, 5, "Up again")
    assert await agent.call("VM.destroy", {"vmID": vm_id}) is True
    await agent.wait_for_status(vm_id, "Down")
    assert agent.statuses(vm_id) == [
        "WaitForLaunch",
        "Powering up",
        "Up",
        "Paused",
        "Up",
        "Down",
    ]
    assert vm_id not in await agent.call("Host.getVMList")


@pytest_twisted.ensureDeferred
async def test_status_events_are_ordered_by_notify_time(agent):
    """notify_time and statusTime strictly increase across one VM's status events."""
    vm_id = await create_up(agent)
    await agent.call("VM.destroy", [vm_id])
    await agent.wait_for_status(vm_id, "Down")
    times = [p["notify_time"] for e, p in agent.events if vm_id in e]
    status_times = [p[vm_id]["statusTime"] for e, p in agent.events if vm_id in e]
    assert times == sorted(set(times)) and len(times) == 4
    assert status_times == sorted(set(status_times))


@pytest_twisted.ensureDeferred
async def test_guest_shutdown_stays_listed_down_until_destroy(agent):
    """A shut-down VM is listed Down with exit reason 6 until VM.destroy removes it."""
    vm_id = await create_up(agent)
    assert await agent.call("VM.shutdown", {"vmID": vm_id, "timeout": 5}) is True
    await agent.wait_for_status(vm_id, "Down")
    [stats] = await agent.call("VM.getStats", [vm_id])
    assert (stats["status"], stats["exitReason"], stats["exitCode"]) == ("Down", 6, 0)
    assert vm_id in await agent.call("Host.getVMList")
    assert agent.statuses(vm_id).count("Down") == 1
    await agent.call("VM.destroy", [vm_id])
    assert agent.statuses(vm_id).count("Down") == 1
    assert vm_id not in await agent.call("Host.getVMList")


@pytest_twisted.ensureDeferred
async def test_create_from_domain_xml_keeps_custom_properties(agent):
    """A VM created from domain XML with our metadata shows its custom properties and XML."""
    params = legacy_params(custom={"tier": "gold"})
    xml = build_domain(params, domain_type="kvm")
    created = await agent.call("VM.create", {"vmID": params["vmId"], "vmParams": {"xml": xml}})
    assert created["custom"] == {"tier": "gold"}
    await agent.wait_for_status(params["vmId"], "Up")
    [full] = await agent.call("Host.getVMFullList", {"vmList": [params["vmId"]]})
    assert full["custom"] == {"tier": "gold"} and full["memSize"] == 128
    xmls = await agent.call("Host.dumpxmls", {"vmList": [params["vmId"]]})
    assert "tier" in xmls["domxmls"][params["vmId"]]


@pytest_twisted.ensureDeferred
async def test_host_views_validate_against_the_schema(agent):
    """Host verbs answer with VDSM's shapes (checked by the agent's own result validation)."""
    assert await agent.call("Host.ping2") is True
    caps = await agent.call("Host.getCapabilities")
    assert caps["cpuCores"] and "4.5" in caps["supportedENGINEs"]
    assert caps["libvirtUri"].startswith("test://")
    try:
        hwinfo = await agent.call("Host.getHardwareInfo")
        assert set(hwinfo) >= {"systemManufacturer", "systemUUID"}
    except RemoteError as e:  # a host without DMI (like some VMs and containers)
        assert e.code == 57 and "dmi" in e.message
    stats = await agent.call("Host.getStats")
    assert stats["vmCount"] == 0 and isinstance(stats["cpuLoad"], str)
    vm_id = await create_up(agent)
    all_stats = await agent.call("Host.getAllVmStats")
    assert [s["vmId"] for s in all_stats] == [vm_id]
    assert (await agent.call("Host.getStats"))["vmActive"] == 1
    listed = await agent.call("Host.getVMList", {"onlyUUID": False})
    assert listed == [{"vmId": vm_id, "status": "Up"}]


@pytest_twisted.ensureDeferred
async def test_balloon_target_is_applied_and_reported(agent):
    """VM.setBalloonTarget changes the balloon; VM stats report the target."""
    vm_id = await create_up(agent, memSize=256)
    assert await agent.call("VM.setBalloonTarget", {"vmID": vm_id, "target": 131072}) is True

    async def balloon_info():
        [stats] = await agent.call("VM.getStats", [vm_id])
        return stats.get("balloonInfo", {})

    info = await eventually(balloon_info, lambda i: i.get("balloon_cur") == "131072")
    assert info["balloon_target"] == "131072" and info["balloon_cur"] == "131072"
    message = await expect_error(agent, "VM.setBalloonTarget", [vm_id, 10**9], 53)
    assert "exceeds" in message


@pytest_twisted.ensureDeferred
async def test_bad_requests_get_clear_errors_and_lose_nothing(agent):
    """Unknown VMs, duplicates, bad XML, bad types and unknown verbs each get VDSM's error."""
    params = legacy_params()
    vm_id = params["vmId"]
    await agent.call("VM.create", {"vmParams": params})
    await expect_error(agent, "VM.create", {"vmParams": params}, 4)
    await expect_error(agent, "VM.destroy", [str(uuid.uuid4())], 1)
    await expect_error(agent, "VM.getStats", [str(uuid.uuid4())], 1)
    await expect_error(agent, "Host.noSuchVerb", [], -32601)
    message = await expect_error(
        agent, "VM.create", {"vmParams": {**params, "memSize": -1}}, -32602
    )
    assert "memSize" in message
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><domain>&b;</domain>'
    )
    message = await expect_error(agent, "VM.create", {"vmParams": {"xml": bomb}}, 9)
    assert "XML" in message
    external = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<domain><name>&x;</name></domain>"
    )
    await expect_error(agent, "VM.create", {"vmParams": {"xml": external}}, 9)
    await expect_error(agent, "VM.cont", [vm_id], 16)
    # The agent still serves, and nothing was duplicated or lost.
    await agent.wait_for_status(vm_id, "Up")
    assert await agent.call("Host.getVMList") == [vm_id]


@pytest_twisted.ensureDeferred
async def test_destroy_while_launching_reports_destroyed_on_startup(agent):
    """A VM destroyed right after VM.create ends Down once, with no domain left behind."""
    params = legacy_params()
    vm_id = params["vmId"]
    create = agent.call("VM.create", {"vmParams": params})
    destroy = agent.call("VM.destroy", [vm_id])
    await create
    assert await destroy is True
    await agent.wait_for_status(vm_id, "Down")
    assert agent.statuses(vm_id).count("Down") == 1
    assert await agent.call("Host.getVMList") == []
    domains = await agent.top.core._hv.list_domains()
    assert vm_id not in [d.vm_id for d in domains]
