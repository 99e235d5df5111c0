"""The ``soft`` fence agent against real agents over the engine's real link: an agent child
process supervised by the test-host launcher (restarted as a new instance), an agent with no
supervisor (it refuses), and no agent at all."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from link_harness import InProcessAgent, Recorder, free_port, wait_for
from twisted.application.internet import backoffPolicy
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from engine.fence.cgroup import find_cgroup2
from engine.fence.interfaces import FenceSettings, FenceTarget, IFenceAgent
from engine.fence.result import Outcome, Power
from engine.fence.soft import SoftFenceAgent
from engine.hostlink import HostLink
from vdsmlike.testhost import TestHostProcess

SETTINGS = FenceSettings(restart_timeout=30.0, exit_delay=0.2, call_timeout=5.0,
                         poll_interval=0.05)  # fmt: skip


class Links:
    """Engine links to agents, stopped at teardown."""

    def __init__(self) -> None:
        self.made: list[HostLink] = []

    def to(self, url: str) -> HostLink:
        link = HostLink(url, Recorder(), reactor=reactor, label="test host",
                        retry_policy=backoffPolicy(initialDelay=0.05, maxDelay=0.3),
                        connect_timeout=2.0, call_timeout=5.0, heartbeat_interval=1.0,
                        heartbeat_timeout=2.0, auto_ping_interval=0)  # fmt: skip
        link.startService()
        self.made.append(link)
        return link


@pytest_twisted.async_yield_fixture
async def links():
    made = Links()
    yield made
    for link in made.made:
        await link.stopService()


@pytest.fixture
def supervised():
    """A test host on libvirt's test driver: an agent child process under the launcher."""
    directory = Path(tempfile.mkdtemp(prefix="vlh-", dir="/tmp"))
    cgroup = f"vdsmlike-tests/soft-{uuid.uuid4().hex[:8]}" if find_cgroup2() else None
    host = TestHostProcess(directory, cgroup=cgroup, libvirt_uri="test:///default",
                           settings=("mom.enabled=false",))  # fmt: skip
    host.launch()
    yield host
    host.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


def target(link: HostLink | None) -> FenceTarget:
    return FenceTarget(uuid.uuid4(), "host1", link=link)


def test_the_agent_provides_its_interface():
    """SoftFenceAgent is an IFenceAgent that restarts and asks."""
    agent = SoftFenceAgent(reactor=reactor)
    assert verifyObject(IFenceAgent, agent)
    assert agent.actions == {"restart", "status"}
    with pytest.raises(ValueError, match="not 'off'"):
        agent.fence(target(None), "off")


@pytest_twisted.ensureDeferred
async def test_restart_brings_back_a_new_agent_instance(supervised, links):
    """The agent answers Host.restart, exits 75, the launcher starts it again, and the link
    reconnects to a new instance: done, with both instances in the proof."""
    link = links.to(await supervised.wait_url(reactor))
    caps = await link.when_connected()
    before = caps["agentInstance"]
    result = await SoftFenceAgent(reactor=reactor, settings=SETTINGS).fence(target(link), "restart")
    assert (result.action, result.outcome, result.power) == ("restart", Outcome.DONE, Power.ON)
    after = link.capabilities["agentInstance"]
    assert after != before
    assert f"agent instance {before}" in result.proof and f"agent instance {after}" in result.proof
    assert "Host.restart answered" in result.proof and result.agent == "soft"
    assert supervised.state()["agent_starts"] == 2
    log = (supervised.dir / "testhost.log").read_text()
    assert "exited with status 75" in log and "restart requested" in log


@pytest_twisted.ensureDeferred
async def test_status_is_on_while_the_agent_answers(supervised, links):
    """An answer to Host.ping2 proves the host on, naming the instance."""
    link = links.to(await supervised.wait_url(reactor))
    caps = await link.when_connected()
    found = await SoftFenceAgent(reactor=reactor, settings=SETTINGS).fence(target(link), "status")
    assert (found.outcome, found.power) == (Outcome.DONE, Power.ON)
    assert (
        found.proof == f"agent instance {caps['agentInstance']} (started at "
        f"{caps['agentStarted']:.3f}) answered Host.ping2"
    )


@pytest_twisted.ensureDeferred
async def test_a_restart_that_does_not_come_back_fails(supervised, links):
    """With the supervisor frozen, the agent exits and nobody starts it: failed after the
    timeout, power unknown (the link is down). It comes back once the launcher runs again."""
    link = links.to(await supervised.wait_url(reactor))
    await link.when_connected()
    launcher = supervised.state()["pid"]
    os.kill(launcher, signal.SIGSTOP)
    try:
        quick = FenceSettings(restart_timeout=2.0, exit_delay=0.1, poll_interval=0.05)
        result = await SoftFenceAgent(reactor=reactor, settings=quick).fence(
            target(link), "restart"
        )
    finally:
        os.kill(launcher, signal.SIGCONT)
    assert (result.outcome, result.power) == (Outcome.FAILED, Power.UNKNOWN), result
    assert "after 2 s the link is down" in result.proof
    await wait_for(reactor, lambda: link.connected, timeout=20, what="the agent back")


@pytest_twisted.ensureDeferred
async def test_without_a_link_nothing_is_asked(links):
    """No agent listening: restart fails at once (cannot ask), status is unknown."""
    link = links.to(f"ws://127.0.0.1:{free_port()}/jsonrpc")
    agent = SoftFenceAgent(reactor=reactor, settings=SETTINGS)
    restart = await agent.fence(target(link), "restart")
    assert (restart.outcome, restart.power) == (Outcome.FAILED, Power.UNKNOWN)
    assert restart.message == "cannot ask: the link to the agent of host host1 is down"
    status = await agent.fence(target(link), "status")
    assert (status.outcome, status.power) == (Outcome.UNKNOWN, Power.UNKNOWN)
    nolink = await agent.fence(target(None), "restart")
    assert "has no link to its agent" in nolink.message


@pytest_twisted.async_yield_fixture
async def embedded_agent(tmp_path):
    agent = InProcessAgent(tmp_path, reactor)
    await agent.start()
    yield agent
    await agent.stop()


@pytest_twisted.ensureDeferred
async def test_an_agent_without_a_supervisor_refuses(embedded_agent, links):
    """An agent inside another program cannot be started again, so it refuses (44) and keeps
    running: failed, power on, with the refusal in the proof."""
    link = links.to(embedded_agent.url)
    await link.when_connected()
    result = await SoftFenceAgent(reactor=reactor, settings=SETTINGS).fence(target(link), "restart")
    assert (result.outcome, result.power) == (Outcome.FAILED, Power.ON), result
    assert "answered Host.restart with error 44" in result.proof
    assert await link.call("Host.ping2") is True
