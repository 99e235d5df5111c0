"""Fence agents and power drivers as installed plugins (stevedore, from setup.cfg's entry
points), and the ``power`` agent's refusals, which are results with a reason, never
exceptions."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from engine.fence.interfaces import FenceSettings, FenceTarget, IFenceAgent, PowerSettings
from engine.fence.plugins import FencePluginError, installed, load_agents, power_driver
from engine.fence.power import PowerFenceAgent
from engine.fence.process import ProcessPowerDriver
from engine.fence.result import Outcome, Power
from engine.fence.soft import SoftFenceAgent


def test_our_plugins_are_installed_and_load_by_name():
    """soft and power load as IFenceAgents with the settings given; process is a driver."""
    assert {"soft", "power"} <= set(installed("vdsmlike.engine.fence"))
    settings = FenceSettings(restart_timeout=7.0)
    agents = load_agents(reactor=reactor, settings=settings)
    assert isinstance(agents["soft"], SoftFenceAgent) and agents["soft"].settings == settings
    assert isinstance(agents["power"], PowerFenceAgent)
    for agent in agents.values():
        assert verifyObject(IFenceAgent, agent)
    assert power_driver("process") is ProcessPowerDriver


def test_unknown_plugins_are_named_with_what_is_installed():
    """An unknown agent or driver is an error naming it and the installed ones."""
    with pytest.raises(FencePluginError, match=r"no fence agent 'ipmi' .*installed: .*power"):
        load_agents(["ipmi"], reactor=reactor)
    with pytest.raises(FencePluginError, match=r"no power driver 'redfish' .*process"):
        power_driver("redfish")
    with pytest.raises(FencePluginError, match="no power driver is configured"):
        power_driver("")


def host(power: PowerSettings | None) -> FenceTarget:
    return FenceTarget(uuid.uuid4(), "h1", power=power)


@pytest.mark.parametrize(
    ("power", "reason"),
    [
        (None, "host h1 has no power management enabled"),
        (PowerSettings(enabled=False, driver="process", options={"cgroup": "x"}),
         "host h1 has no power management enabled"),
        (PowerSettings(enabled=True, driver="redfish"), "no power driver 'redfish'"),
        (PowerSettings(enabled=True, driver="process", options={"colour": "red"}),
         "power driver 'process': bad options: unknown option(s) colour"),
    ],
)  # fmt: skip
@pytest_twisted.ensureDeferred
async def test_the_power_agent_refuses_with_a_reason(power, reason):
    """Without usable power management every action is a failed result saying why."""
    agent = PowerFenceAgent(reactor=reactor)
    for action in ("status", "off", "on", "reboot"):
        result = await agent.fence(host(power), action)
        assert (result.outcome, result.power, result.agent) == (Outcome.FAILED, Power.UNKNOWN,
                                                                "power")  # fmt: skip
        assert reason in result.message and result.action == action


def test_the_power_agent_does_not_restart_agents():
    """Restarting an agent is the soft agent's; asking the power agent is a ValueError."""
    with pytest.raises(ValueError, match="not 'restart'"):
        PowerFenceAgent(reactor=reactor).fence(host(None), "restart")
