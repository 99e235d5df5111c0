"""``Host.*`` verb handlers: the host's identity, statistics, and views over all its VMs; and
:class:`AgentRestart`, this agent process's identity and its way out for ``Host.restart``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from hooks.runner import NullHookRunner

from ..host.monitor import HostMonitor
from ..vm.container import VmContainer
from ..vm.monitor import VmStatsMonitor
from ..vm.tune import VmTuning
from ..vm.vm import vm_definition
from . import errors
from .hooked import around_hooks
from .verbs import verb

#: The agent's exit status after ``Host.restart`` (EX_TEMPFAIL): "start me again". systemd's
#: ``Restart=on-failure`` (or ``always``) and the test-host launcher both do.
RESTART_EXIT_STATUS = 75


class AgentRestart:
    """
    This agent process: its instance id and start time (reported in the capabilities, so the
    engine can tell a restarted agent from the same one), and its exit on ``Host.restart``.

    The daemon's entry point sets :attr:`exit` to something that stops the reactor; it then
    exits with :data:`RESTART_EXIT_STATUS` once :attr:`requested`. An agent embedded in another
    program (tests) leaves it None, and ``Host.restart`` is refused there.

    :param clock: schedules the exit; its ``seconds()`` is the start time.
    """

    log = Logger()

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self.instance = str(uuid.uuid4())
        self.started = float(clock.seconds())
        self.exit: Callable[[], object] | None = None
        self.requested = False

    def capabilities(self) -> dict[str, Any]:
        """The keys this adds to ``Host.getCapabilities``."""
        return {"agentInstance": self.instance, "agentStarted": self.started}

    def request(self, delay: float) -> dict[str, Any]:
        """
        Exit ``delay`` seconds from now (a second request changes nothing).

        :returns: ``Host.restart``'s answer.
        :raises errors.NotImplementedVerb: when nothing would start this agent again.
        """
        if self.exit is None:
            raise errors.NotImplementedVerb(
                "this agent runs inside another program, with no supervisor to start it again"
            )
        if not self.requested:
            self.requested = True
            self.log.warn("restart requested: exiting in {delay} s with status {status}",
                          delay=delay, status=RESTART_EXIT_STATUS)
            self._clock.callLater(delay, self.exit)
        return {"instance": self.instance, "delay": delay, "exitStatus": RESTART_EXIT_STATUS}


class HostApi:
    """The ``Host`` namespace (``Host.subscribe`` lives with the connection, in the RPC layer)."""

    def __init__(
        self,
        container: VmContainer,
        monitor: VmStatsMonitor,
        host: HostMonitor,
        *,
        hooks: Any = None,
        tuning: VmTuning | None = None,
        mom: Callable[[], dict[str, Any]] | None = None,
        restart: AgentRestart | None = None,
    ) -> None:
        """
        :param mom: the embedded MOM's status for ``Host.getStats``; ``None``: disabled.
        :param restart: this process's identity and exit (``Host.restart``); ``None``: no
            instance in the capabilities, and ``Host.restart`` refused.
        """
        self._restart = restart
        self._vms = container
        self._monitor = monitor
        self._host = host
        self._hooks = hooks if hooks is not None else NullHookRunner()
        self._tuning = tuning
        self._mom = mom

    @verb("Host.ping2")
    def ping2(self) -> bool:
        """Liveness check."""
        return True

    @verb("Host.getCapabilities")
    async def get_capabilities(self) -> dict[str, Any]:
        """What this host is and offers, with VDSM's keys."""
        installed = self._hooks.installed()
        instance = self._restart.capabilities() if self._restart is not None else {}
        return await around_hooks(
            self._hooks,
            "get_caps",
            lambda: {**self._host.capabilities(hooks=installed), **instance},
        )

    @verb("Host.restart")
    def restart(self, delay: float = 0.5) -> dict[str, Any]:
        """Answer, then exit for the supervisor to start the agent again; VMs keep running."""
        if self._restart is None:
            raise errors.NotImplementedVerb("this agent cannot restart itself")
        return self._restart.request(delay)

    @verb("Host.getHardwareInfo")
    async def get_hardware_info(self) -> dict[str, str]:
        """The host's DMI identity."""
        try:
            return await self._host.hardware_info()
        except OSError as e:
            raise errors.HardwareInfoError(str(e)) from None

    @verb("Host.getStats")
    async def get_stats(self) -> dict[str, Any]:
        """Host statistics from the last two samples."""
        return await around_hooks(
            self._hooks,
            "get_stats",
            lambda: self._host.stats(self._vms.vms(), mom=self._mom() if self._mom else None),
        )

    @verb("Host.getVMList")
    def get_vm_list(
        self, fullStatus: bool = False, vmList: list[str] = (), onlyUUID: bool = True
    ) -> list[Any]:
        """VM ids (``onlyUUID``), or ids with their status."""
        vms = self._select(vmList)
        if onlyUUID:
            return [vm.vm_id for vm in vms]
        return [{"vmId": vm.vm_id, "status": vm.state.value} for vm in vms]

    @verb("Host.getVMFullList")
    def get_vm_full_list(self, vmList: list[str] = ()) -> list[dict[str, Any]]:
        """The definitions of the VMs (all, or those listed)."""
        return [vm_definition(vm) for vm in self._select(vmList)]

    @verb("Host.getAllVmStats")
    async def get_all_vm_stats(self) -> list[dict[str, Any]]:
        """``VmStats`` of every VM, Down VMs included."""
        return await around_hooks(
            self._hooks,
            "get_all_vm_stats",
            lambda: [
                self._monitor.vm_stats(vm, elapsed=self._vms.elapsed(vm)) for vm in self._vms.vms()
            ],
        )

    def _tuned(self) -> VmTuning:
        if self._tuning is None:
            raise errors.NotImplementedVerb("tuning is not configured in this agent")
        return self._tuning

    @verb("Host.getAllVmIoTunePolicies")
    async def get_all_vm_io_tune_policies(self) -> dict[str, dict[str, Any]]:
        """Every VM's IO limit policy and current limits, as MOM reads them."""
        return await self._tuned().all_io_tune_policies()

    @verb("Host.setKsmTune")
    async def set_ksm_tune(self, tuningParams: dict[str, int]) -> bool:
        """Write KSM's knobs (run, merge_across_nodes, pages_to_scan, sleep_millisecs)."""
        return await self._tuned().set_ksm_tune(tuningParams)

    @verb("Host.dumpxmls")
    def dumpxmls(self, vmList: list[str]) -> dict[str, Any]:
        """The domain XML of each listed VM. :raises errors.NoSuchVM: for an unknown id."""
        return {"domxmls": {vm.vm_id: vm.xml for vm in (self._vms.get(i) for i in vmList)}}

    def _select(self, vm_ids: list[str]) -> list[Any]:
        if not vm_ids:
            return self._vms.vms()
        wanted = {i.lower() for i in vm_ids}
        return [vm for vm in self._vms.vms() if vm.vm_id in wanted]
