"""``power``: fencing through a host's power-management driver (``status``, ``off``, ``on``,
``reboot``).

The host's power settings name a driver (stevedore namespace ``vdsmlike.engine.power``) and its
options; this agent loads the driver, checks the options, and lets it act and observe. A
``reboot`` is ``off`` then ``on``, and stops after an ``off`` that is not proven: nothing is
started while the old host may still run. A host without power management enabled, a driver
that is not installed, or options the driver refuses are ``failed`` results, never exceptions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from . import result as fr
from .interfaces import FenceSettings, FenceTarget, IFenceAgent, IPowerDriver
from .plugins import FencePluginError, power_driver
from .result import FenceAction, FenceResult


@implementer(IFenceAgent)
class PowerFenceAgent:
    """
    The ``power`` fence agent (see the module docstring).

    :param reactor: given to the drivers.
    :param settings: unused (the driver's options hold its timeouts).
    :param drivers: finds a driver factory by name (the installed plugins by default).
    """

    name = "power"
    actions = frozenset({FenceAction.STATUS, FenceAction.OFF, FenceAction.ON,
                         FenceAction.REBOOT})  # fmt: skip

    def __init__(
        self,
        *,
        reactor: Any,
        settings: FenceSettings | None = None,
        drivers: Callable[[str], Any] = power_driver,
    ) -> None:
        self._reactor = reactor
        self._drivers = drivers

    def fence(self, host: FenceTarget, action: str) -> Deferred[FenceResult]:
        """See ``IFenceAgent.fence``."""
        if action not in self.actions:
            raise ValueError(f"the power fence agent can {', '.join(sorted(self.actions))}, "
                             f"not {action!r}")  # fmt: skip
        d = Deferred.fromCoroutine(self._fence(host, FenceAction(action)))
        return d.addCallback(lambda found: found.by(self.name))

    def driver(self, host: FenceTarget, action: str) -> IPowerDriver | FenceResult:
        """:returns: the host's driver, or the failed result saying why there is none."""
        power = host.power
        if power is None or not power.enabled:
            return fr.failed(action, f"host {host.name} has no power management enabled")
        try:
            factory = self._drivers(power.driver)
            options = factory.check_options(power.options)
        except FencePluginError as e:
            return fr.failed(action, str(e))
        except ValueError as e:
            return fr.failed(action, f"power driver {power.driver!r}: bad options: {e}")
        return factory(options, reactor=self._reactor)

    async def _fence(self, host: FenceTarget, action: FenceAction) -> FenceResult:
        driver = self.driver(host, action)
        if isinstance(driver, FenceResult):
            return driver
        if action is FenceAction.STATUS:
            return await driver.status()
        if action is FenceAction.ON:
            return await driver.on()
        off = await driver.off()
        if action is FenceAction.OFF:
            return off
        if not off.done:
            return fr.reboot_result(off, None)
        return fr.reboot_result(off, await driver.on())
