"""The embedded MOM in a real agent on the libvirt test driver: the policy thread runs, its
controls reach libvirt, the MOM verbs change the policy at runtime, and bad policies are
refused with error 54 while the agent keeps serving."""

from __future__ import annotations

import pytest
import pytest_twisted
from agent_harness import eventually, node_uri, start_agent
from test_agent_testdriver import create_up

from vdsmlike.client import RemoteError

FAST_MOM = dict(mom_policy_interval=0.3, mom_host_interval=0.2, mom_guest_interval=0.2)
HALF_BALLOON = '(with Guests guest (guest.Control "balloon_target" (/ guest.balloon_max 2)))'


async def balloon_target(agent, vm_id) -> int:
    """The VM's balloon target (KiB), or -1 before its first statistics sample."""
    [stats] = await agent.call("VM.getStats", [vm_id])
    return int((stats.get("balloonInfo") or {}).get("balloon_target", -1))


async def balloon_current(agent, vm_id) -> int:
    """What libvirt reports as the VM's current balloon size (KiB)."""
    [stats] = await agent.call("VM.getStats", [vm_id])
    return int((stats.get("balloonInfo") or {}).get("balloon_cur", -1))


@pytest_twisted.ensureDeferred
async def test_policy_thread_balloons_guests_through_libvirt(tmp_path):
    """A policy set with Host.setMOMPolicy is evaluated by the thread and its balloon control
    becomes the VM's balloon target in libvirt; Host.getStats reports MOM active."""
    agent = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path), **FAST_MOM)
    try:
        assert (await agent.call("Host.getStats"))["momStatus"] == "active"
        vm_id = await create_up(agent, memSize=128)
        assert await agent.call("Host.setMOMPolicy", [HALF_BALLOON]) is True
        await eventually(lambda: balloon_target(agent, vm_id), lambda t: t == 65536, 10, 0.2)
        await eventually(lambda: balloon_current(agent, vm_id), lambda c: c == 65536, 10, 0.2)
        assert agent.top.mom.cycles > 0 and agent.top.mom.last.evaluated
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_bad_policies_and_parameters_are_refused_with_54_and_the_old_set_kept(tmp_path):
    """A policy that does not parse, or a parameter no policy defines, answers 54; the default
    set stays in place and valid parameters are accepted."""
    agent = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path), **FAST_MOM)
    try:
        store = agent.top.mom.engine.store
        before = store.named()
        assert "02-balloon" in before
        for verb, params in (
            ("Host.setMOMPolicy", ["(if 1 2"]),
            ("Host.setMOMPolicyParameters", [{"noSuchKnob": 1}]),
        ):
            with pytest.raises(RemoteError) as info:
                await agent.call(verb, params)
            assert info.value.code == 54, info.value
        assert store.named() == before
        assert await agent.call("Host.setMOMPolicyParameters", [{"balloonEnabled": True}])
        assert await agent.call("Host.setMOMPolicyParameters", [{"ksmEnabled": False}])
        assert "(set balloonEnabled True)" in store.named()["01-parameters"]
        assert "(set ksmEnabled False)" in store.named()["01-parameters"]
        assert await agent.call("Host.ping2") is True
    finally:
        await agent.stop()


@pytest_twisted.ensureDeferred
async def test_a_failing_policy_skips_the_controllers_and_the_thread_survives(tmp_path):
    """A policy that fails at evaluation sets nothing; the thread keeps cycling."""
    agent = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path), **FAST_MOM)
    try:
        vm_id = await create_up(agent, memSize=128)
        failing = '(with Guests guest (guest.Control "balloon_target" (/ 1 0)))'
        assert await agent.call("Host.setMOMPolicy", [failing]) is True
        mom = agent.top.mom
        start = mom.cycles
        await eventually(lambda: _cycles(mom), lambda n: n >= start + 2, 10, 0.2)
        assert not mom.last.evaluated and mom.alive
        assert await eventually(lambda: balloon_target(agent, vm_id), lambda t: t != -1) == 131072
    finally:
        await agent.stop()


async def _cycles(mom) -> int:
    return mom.cycles


@pytest_twisted.ensureDeferred
async def test_mom_disabled_reports_disabled_and_refuses_policies(tmp_path):
    """With [mom] enabled = false there is no thread, momStatus is disabled, verbs answer 54."""
    agent = await start_agent(tmp_path, libvirt_uri=node_uri(tmp_path), mom_enabled=False)
    try:
        assert agent.top.mom is None
        assert (await agent.call("Host.getStats"))["momStatus"] == "disabled"
        with pytest.raises(RemoteError) as info:
            await agent.call("Host.setMOMPolicy", ["0"])
        assert info.value.code == 54
    finally:
        await agent.stop()
