"""``FenceActions``: the engine's fence actions on request (the admin API), as jobs with proof.

- **Power management settings** are checked by their driver before they are stored (an
  unknown driver or a wrong option is refused, naming it), and an audit event records the
  change without option values.
- **Power status** asks the power driver when the host has power management enabled, else
  its agent (``soft``): a read, neither a job nor an event.
- **Fencing** is a job on the host (one action at a time per host, with the other host
  actions): ``HOST_FENCE_STEP_STARTED``, then one ``HOST_FENCE_STEP_DONE`` / ``_FAILED`` /
  ``_UNKNOWN`` event per step with its proof. The job succeeds only when the fence is proven
  done; its result is the ``FenceResult``. Powering off (or rebooting) a host that is Up with
  running VMs is refused unless forced.

A power-off proven done is a fact the engine acts on: the host goes Down (``fenced``; a host in
Maintenance stays there) and its VMs go Down with an error, which is what HA restarts look
for. Nothing here decides to fence by itself: that is the cluster manager's job, which calls
:meth:`FenceActions.fence` (and reads ``fencing_enabled``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from twisted.logger import Logger

from ..decide.hoststate import HostEvent, HostState
from ..events import Auditor
from ..interfaces import IStore
from ..jobs import JobFailed, JobRunner, Prepared, Progress
from ..store.auditlog import AuditType
from ..store.errors import Conflict, InvalidValue, NotFound
from ..store.rows import HostPowerManagement, Job
from . import result as fr
from . import wire
from .interfaces import FenceSettings, FenceTarget, PowerSettings
from .plugins import FencePluginError, load_agents, power_driver
from .result import FenceAction, FenceResult, Outcome, Power

#: The audit event of a fence step, by its outcome.
STEP_EVENTS = {
    Outcome.DONE: AuditType.HOST_FENCE_STEP_DONE,
    Outcome.FAILED: AuditType.HOST_FENCE_STEP_FAILED,
    Outcome.UNKNOWN: AuditType.HOST_FENCE_STEP_UNKNOWN,
}

#: States in which a host's agent answers and its VMs run: powering it off kills them.
_LIVE = frozenset({HostState.UP, HostState.PREPARING_FOR_MAINTENANCE})


def default_agent(action: str, power_enabled: bool) -> str:
    """Pure: the fence agent for ``action`` when none is named."""
    if action == FenceAction.RESTART:
        return "soft"
    if action == FenceAction.STATUS and not power_enabled:
        return "soft"
    return "power"


def proven_off(result: FenceResult) -> bool:
    """Pure: whether ``result`` (or one of its steps) proves the host powered off."""
    steps = result.steps or (result,)
    return any(s.action == FenceAction.OFF and s.done and s.power is Power.OFF for s in steps)


class FenceActions:
    """
    Fence actions on request (see the module docstring).

    :param monitors: the engine's host monitors by id (their links and states).
    :param vmsync: marks the VMs of a host proven off Down.
    :param reactor: given to the fence agents and power drivers.
    :param agents: ``{name: IFenceAgent}``; the installed plugins, loaded at first use, by
        default.
    """

    log = Logger()

    def __init__(
        self,
        *,
        store: IStore,
        jobs: JobRunner,
        auditor: Auditor,
        monitors: Mapping[UUID, Any],
        vmsync: Any,
        reactor: Any,
        settings: FenceSettings | None = None,
        agents: Mapping[str, Any] | None = None,
    ) -> None:
        self._store, self._jobs, self._auditor = store, jobs, auditor
        self._monitors, self._vmsync, self._reactor = monitors, vmsync, reactor
        self.settings = settings or FenceSettings()
        self._agents = dict(agents) if agents is not None else None

    @property
    def agents(self) -> dict[str, Any]:
        """The fence agents by name. :raises FencePluginError: when they cannot be loaded."""
        if self._agents is None:
            self._agents = load_agents(reactor=self._reactor, settings=self.settings)
        return self._agents

    def _monitor(self, host_id: UUID) -> Any:
        monitor = self._monitors.get(host_id)
        if monitor is None:
            raise NotFound("host", host_id)
        return monitor

    # -- settings ----------------------------------------------------------------------------

    async def get_power_management(self, host_id: UUID) -> HostPowerManagement:
        """The host's settings (secrets included: :mod:`engine.fence.wire` hides them)."""
        return await self._store.get_power_management(host_id)

    async def set_power_management(
        self, host_id: UUID, *, enabled: bool, driver: str, options: Mapping[str, Any],
        fencing_enabled: bool = True,
    ) -> HostPowerManagement:  # fmt: skip
        """Check with the driver, store, and record (see the module docstring)."""
        host = await self._store.get_host(host_id)
        checked = dict(options)
        if driver:
            try:
                checked = power_driver(driver).check_options(options)
            except FencePluginError as e:
                raise InvalidValue(str(e)) from None
            except ValueError as e:
                raise InvalidValue(f"power driver {driver!r}: {e}") from None
        elif enabled or options:
            raise InvalidValue("power management needs a driver (e.g. 'process') to be enabled "
                               "or to take options")  # fmt: skip
        row = await self._store.set_power_management(HostPowerManagement(
            host_id, enabled=enabled, driver=driver, options=checked,
            fencing_enabled=fencing_enabled))  # fmt: skip
        declared = self.secret_options(driver)
        await self._auditor.record(
            AuditType.HOST_POWER_MANAGEMENT_SET, host_id=host_id, host=host.name,
            summary=wire.summary(row, declared),
            options=wire.without_secrets(row.options, declared),
        )  # fmt: skip
        return row

    @staticmethod
    def secret_options(driver: str) -> frozenset[str]:
        """The option names a driver declares secret (none for one not installed)."""
        try:
            return frozenset(power_driver(driver).secret_options) if driver else frozenset()
        except FencePluginError:
            return frozenset()

    async def _target(self, host_id: UUID) -> FenceTarget:
        monitor = self._monitor(host_id)
        row = await self._store.get_power_management(host_id)
        power = PowerSettings(row.enabled, row.driver, dict(row.options), row.fencing_enabled)
        return FenceTarget(monitor.id, monitor.name, link=monitor.link, power=power)

    # -- status ------------------------------------------------------------------------------

    async def power_status(self, host_id: UUID) -> FenceResult:
        """The host's power as observed now (see ``IEngine.power_status``)."""
        target = await self._target(host_id)
        enabled = target.power is not None and target.power.enabled
        agent = self._agent(default_agent(FenceAction.STATUS, enabled), FenceAction.STATUS)
        return await agent.fence(target, FenceAction.STATUS)

    # -- fencing -----------------------------------------------------------------------------

    def _agent(self, name: str, action: str) -> Any:
        try:
            agents = self.agents
        except FencePluginError as e:
            raise InvalidValue(f"fencing is not available: {e}") from None
        agent = agents.get(name)
        if agent is None:
            raise InvalidValue(f"no fence agent {name!r} (installed: {', '.join(sorted(agents))})")
        if action not in agent.actions:
            can = ", ".join(sorted(agent.actions))
            raise InvalidValue(f"the {name} fence agent cannot {action} (it can: {can})")
        return agent

    async def fence(
        self, host_id: UUID, action: str, *, agent: str | None = None, force: bool = False,
        key: str | None = None,
    ) -> Job:  # fmt: skip
        """Fence a host as a job (see ``IEngine.fence``)."""
        monitor = self._monitor(host_id)
        if action not in set(FenceAction):
            raise InvalidValue(f"unknown fence action {action!r} (known: "
                               f"{', '.join(a.value for a in FenceAction)})")  # fmt: skip

        async def prepare() -> Prepared:
            target = await self._target(host_id)
            enabled = target.power is not None and target.power.enabled
            name = agent or default_agent(action, enabled)
            chosen = self._agent(name, action)
            if name == "power" and not enabled:
                raise Conflict(f"host {monitor.name} has no power management enabled: set it "
                               "with Hosts.setPowerManagement first")  # fmt: skip
            self._check_force(monitor, action, force)
            return Prepared((target, chosen))

        async def run(job: Job, context: Any, progress: Progress) -> Any:
            target, chosen = context
            return await self._run(job, monitor, target, chosen, action, progress)

        return await self._jobs.submit(
            f"fence_{action}", target_kind="host", target_id=host_id,
            label=f"host {monitor.name}", key=key, prepare=prepare, run=run,
        )  # fmt: skip

    @staticmethod
    def _check_force(monitor: Any, action: str, force: bool) -> None:
        """:raises Conflict: for powering off a live host with VMs, unless forced."""
        if force or action not in (FenceAction.OFF, FenceAction.REBOOT):
            return
        running = monitor.running_vms()
        if monitor.state in _LIVE and running:
            names = ", ".join(sorted(v.name for v in running))
            raise Conflict(
                f"host {monitor.name} is {monitor.state} and runs {len(running)} VM(s) "
                f"({names}): powering it off would kill them. Move them away (maintenance) "
                "first, or pass force: true to power it off anyway"
            )

    async def _run(self, job: Job, monitor: Any, target: FenceTarget, agent: Any, action: str,
                   progress: Progress) -> Any:  # fmt: skip
        ids = {"host_id": monitor.id, "job_id": job.id, "host": monitor.name}
        await self._auditor.record(AuditType.HOST_FENCE_STEP_STARTED, **ids, action=action,
                                   agent=agent.name)  # fmt: skip
        await progress(10)
        if action == FenceAction.REBOOT:
            # Step by step, so that the power-off is acted on before the host can come back:
            # applied after the power-on, "Down" would overwrite the agent's reconnection.
            off = await self._step(agent, target, FenceAction.OFF, monitor, job, ids)
            await progress(50)
            on = (
                await self._step(agent, target, FenceAction.ON, monitor, job, ids)
                if off.done
                else None
            )
            result = fr.reboot_result(off, on).by(agent.name)
        else:
            result = await self._step(agent, target, action, monitor, job, ids)
        if not result.done:
            raise JobFailed(f"{action} of host {monitor.name}: {result.outcome}: "
                            f"{result.message} (proof: {result.proof})")  # fmt: skip
        return {"host": monitor.name, **wire.fence_result(result)}

    async def _step(self, agent: Any, target: FenceTarget, action: str, monitor: Any, job: Job,
                    ids: dict[str, Any]) -> FenceResult:  # fmt: skip
        """One fence action: carry it out, record it with its proof, act on a proven off."""
        step = await agent.fence(target, action)
        await self._auditor.record(
            STEP_EVENTS[step.outcome], **ids, action=step.action, agent=step.agent,
            outcome=str(step.outcome), power=str(step.power), proof=step.proof,
            message=step.message,
        )  # fmt: skip
        if proven_off(step):
            await self._powered_off(monitor, job)
        return step

    async def _powered_off(self, monitor: Any, job: Job) -> None:
        """The host is proven off: Down (unless in Maintenance), and its VMs Down."""
        detail = f"fence job {job.id}"
        if monitor.state is not HostState.MAINTENANCE:
            await monitor.command(HostEvent.FENCED, detail)
        reason = f"host {monitor.name} was powered off by fencing ({detail})"
        lost = monitor.running_vms()
        for vm in lost:
            await self._vmsync.mark_down(vm.id, monitor, reason)
        self.log.info("host {host} proven off: {count} VMs marked Down", host=monitor.name,
                      count=len(lost))  # fmt: skip
