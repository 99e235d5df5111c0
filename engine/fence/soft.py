"""``soft``: fencing by asking the host's agent to restart itself, over the engine's own link.

oVirt's first step for a NonResponsive host is an SSH "soft fence" (``vdsm-tool
service-restart vdsmd``): a wedged agent is often all that is wrong, and restarting it leaves
the VMs running. We ask over the JSON-RPC link instead (``Host.restart``): the agent answers,
exits with a distinct status a moment later, and its supervisor (systemd, or the test-host
launcher) starts it again; it recovers its VMs from libvirt.

The proof is a *new agent instance*: the agent reports an ``agentInstance`` id (new in every
process) and ``agentStarted`` in its capabilities, which the link reads at each connection.
``done`` once the link is connected again to a different instance; ``failed`` when the link is
down (nobody to ask), the agent refuses, or no new instance answers within the timeout. The
agent that is asked may act even when its answer is lost, so a lost answer does not stop the
wait. ``status`` asks the agent to answer ``Host.ping2``: an answer proves the host is on; no
link proves nothing (``unknown``).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from zope.interface import implementer

from engine.hostlink import CallTimeout, LinkDown
from vdsmlike.client import RemoteError

from . import result as fr
from .interfaces import FenceSettings, FenceTarget, IFenceAgent
from .result import AgentInstance, FenceAction, FenceResult, Outcome, Power


@implementer(IFenceAgent)
class SoftFenceAgent:
    """
    The ``soft`` fence agent (see the module docstring).

    :param reactor: keeps time.
    :param settings: ``restart_timeout``, ``exit_delay``, ``call_timeout``, ``poll_interval``.
    """

    name = "soft"
    actions = frozenset({FenceAction.RESTART, FenceAction.STATUS})

    def __init__(self, *, reactor: Any, settings: FenceSettings | None = None) -> None:
        self._clock = reactor
        self.settings = settings or FenceSettings()

    def fence(self, host: FenceTarget, action: str) -> Deferred[FenceResult]:
        """See ``IFenceAgent.fence``."""
        if action not in self.actions:
            raise ValueError(f"the soft fence agent can restart the agent or ask its status, "
                             f"not {action!r}")  # fmt: skip
        run = self._restart if action == FenceAction.RESTART else self._status
        d = Deferred.fromCoroutine(run(host))
        return d.addCallback(lambda found: found.by(self.name))

    def _link_down(self, host: FenceTarget) -> str | None:
        link = host.link
        if link is None:
            return f"host {host.name} has no link to its agent"
        if not link.connected:
            return f"the link to the agent of host {host.name} is down"
        return None

    async def _status(self, host: FenceTarget) -> FenceResult:
        down = self._link_down(host)
        if down is not None:
            return fr.unknown(FenceAction.STATUS, f"{down}: the agent cannot tell")
        instance = AgentInstance.of(host.link.capabilities) or "the agent"
        try:
            await host.link.call("Host.ping2", timeout=self.settings.call_timeout)
            answered = f"{instance} answered Host.ping2"
        except RemoteError as e:  # an error is an answer too: the process is alive
            answered = f"{instance} answered Host.ping2 with error {e.code}"
        except (LinkDown, CallTimeout) as e:
            return fr.unknown(FenceAction.STATUS, f"the agent did not answer: {e}")
        return FenceResult(FenceAction.STATUS, Outcome.DONE, Power.ON, answered,
                           "on: its agent answers")  # fmt: skip

    async def _restart(self, host: FenceTarget) -> FenceResult:
        down = self._link_down(host)
        if down is not None:
            return fr.failed(FenceAction.RESTART, f"cannot ask: {down}")
        before = AgentInstance.of(host.link.capabilities)
        if before is None:
            return fr.failed(FenceAction.RESTART, "the agent reports no agentInstance in its "
                             "capabilities, so a restart could not be proven; not asked",
                             power=Power.ON)  # fmt: skip
        started = time.monotonic()
        delay = self.settings.exit_delay
        try:
            await host.link.call("Host.restart", {"delay": delay},
                                 timeout=self.settings.call_timeout)  # fmt: skip
            asked = f"Host.restart answered; the agent exits {delay:g} s later"
        except RemoteError as e:
            return fr.failed(FenceAction.RESTART, f"the agent refused to restart: {e.message}",
                             power=Power.ON, proof=f"{before} answered Host.restart with "
                             f"error {e.code}: {e.message}")  # fmt: skip
        except (LinkDown, CallTimeout) as e:
            asked = f"Host.restart got no answer ({e}); the agent may have acted"
        after = await self._new_instance(host, before, started)
        waited = time.monotonic() - started
        return fr.restart_result(before, after, waited=waited,
                                 timeout=self.settings.restart_timeout, asked=asked)  # fmt: skip

    async def _new_instance(
        self, host: FenceTarget, before: AgentInstance, started: float
    ) -> AgentInstance | None:
        """Poll the link until another instance answers it, or the timeout passes."""
        while True:
            link = host.link
            after = AgentInstance.of(link.capabilities) if link.connected else None
            if after is not None and after.instance != before.instance:
                return after
            if time.monotonic() - started >= self.settings.restart_timeout:
                return after
            await deferLater(self._clock, self.settings.poll_interval, lambda: None)
