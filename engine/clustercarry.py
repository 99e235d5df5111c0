"""``CommandCarrier``: carries out the cluster manager's commands and reports their outcomes.

Each command goes through what the engine already has, so a decision of the manager looks like
any admin action (a job, with its audit events) and is recorded like one:

=====================  ==================================================================
command                carried out by
=====================  ==================================================================
``SetHostStatus``      the host's :class:`~engine.monitoring.HostMonitor` writes the status
                       and reason, with the event that explains it, in one transaction
``MarkVmDown``,        :class:`~engine.vmtable.VmTable` writes the row with its event (no
``MarkVmUnknown``      write, and no event, when the row already says so)
``StartVm``            a ``start`` job on the manager's host (``VmActions.launch``, which
                       reports its outcome, as it does for the admin's starts)
``MigrateVm``          a ``migrate`` job to the manager's host (``VmActions.move``, likewise)
``StopVm``             ``VM.destroy`` on the host (an admin's stop is carried out by the
                       admin's own job; this is the fallback)
``FenceHost``          a fence job (``FenceActions.fence``): ``restart`` through the soft
                       agent, ``reboot`` (or ``off``) through the power agent
``ConfirmPowerStatus`` ``FenceActions.power_status``
``PowerHost``          a power job (``off`` / ``on``) for power saving
``Event``              an audit row (:func:`engine.clusterfacts.audit`)
=====================  ==================================================================

Outcomes go back to the manager as facts (``FenceDone``, ``PowerSeen``; ``JobDone`` when a
job could not even be submitted) through ``report``. Nothing here decides anything; an error in
one command is logged and never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from vdsmlike.client import RemoteError

from . import clusterfacts as cf
from .decide import commands as c
from .decide import facts as f
from .errors import ActionInProgress
from .events import Auditor
from .hostlink import CallTimeout, LinkDown
from .jobs import JobRunner
from .store.rows import Job
from .vmtable import VmTable

#: Attempts at submitting a fence job while another action holds the host.
_FENCE_ATTEMPTS = 3


class CommandCarrier:
    """
    Carries out the manager's commands (see the module docstring).

    :param monitors: the engine's host monitors by id.
    :param vm_actions: ``VmActions`` (``launch``, ``move``).
    :param fencing: ``FenceActions`` (``fence``, ``power_status``).
    :param report: gives the manager an outcome (``ClusterService.observe``).
    """

    log = Logger()

    def __init__(
        self,
        *,
        vms: VmTable,
        monitors: Mapping[UUID, Any],
        auditor: Auditor,
        jobs: JobRunner,
        vm_actions: Any,
        fencing: Any,
        report: Callable[..., Deferred],
    ) -> None:
        self._vms, self._monitors, self._auditor = vms, monitors, auditor
        self._jobs, self._vm_actions, self._fencing = jobs, vm_actions, fencing
        self._report = report

    def carry_out(self, commands: list[c.Command]) -> Deferred:
        """
        Carry out ``commands`` in order (jobs and fences run on in the background).

        :returns: a Deferred firing once the rows and events are written (never failing).
        """
        writes = []
        for command, event in cf.paired(commands):
            try:
                writes.append(self._one(command, event))
            except Exception:
                self.log.failure("carrying out {command} failed", command=command)
        return gatherResults(writes, consumeErrors=True).addErrback(self._logged)

    def _logged(self, failure: Any) -> None:
        self.log.failure("a cluster command failed", failure)

    def _one(self, command: c.Command, event: c.Event | None) -> Deferred:
        if isinstance(command, c.Event):
            return self._auditor.record_new(cf.audit(command))
        if isinstance(command, c.SetHostStatus):
            return self._host_status(command, event)
        if isinstance(command, c.MarkVmDown | c.MarkVmUnknown):
            return self._vm_row(command, event)
        if isinstance(command, c.StartVm):
            self._background(self._start(command))
        elif isinstance(command, c.MigrateVm):
            self._background(self._migrate(command))
        elif isinstance(command, c.StopVm):
            self._background(self._stop(command))
        elif isinstance(command, c.FenceHost):
            self._background(self._fence(command))
        elif isinstance(command, c.ConfirmPowerStatus):
            self._background(self._power_status(command))
        elif isinstance(command, c.PowerHost):
            self._background(self._power(command))
        else:
            self.log.warn("unknown cluster command {command}", command=command)
        return succeed(None)

    def _background(self, coroutine: Any) -> None:
        Deferred.fromCoroutine(coroutine).addErrback(self._logged)

    # -- rows --------------------------------------------------------------------------------

    def _host_status(self, command: c.SetHostStatus, event: c.Event | None) -> Deferred:
        monitor = self._monitors.get(UUID(command.host))
        audit = None if event is None else cf.audit(event)
        if monitor is None:  # removed meanwhile: the event alone
            return self._auditor.record_new(audit) if audit is not None else succeed(None)
        return monitor.write_status(command.status, command.reason, audit)

    def _vm_row(self, command: c.MarkVmDown | c.MarkVmUnknown, event: c.Event | None) -> Deferred:
        vm = self._vms.get(UUID(command.vm))
        if vm is None:
            return succeed(None)
        if isinstance(command, c.MarkVmDown):
            row = cf.down_row(vm, command)
        else:
            row = cf.unknown_row(vm, command)
        if row is None:  # the row says so already (VmSync saw it): no second event either
            return succeed(None)
        audit = None if event is None else cf.audit(event)
        return self._vms.apply(row, force=True, event=audit)

    # -- VMs ---------------------------------------------------------------------------------

    async def _start(self, command: c.StartVm) -> None:
        """A start job; ``VmActions`` reports its outcome (the admin's starts' too)."""
        try:
            await self._vm_actions.launch(UUID(command.vm), command.decision)
        except Exception as e:  # refused (busy, removed...): the manager retries elsewhere
            self._report(cf.job_done("start", command.vm, command.host, None, str(e)))

    async def _migrate(self, command: c.MigrateVm) -> None:
        """A migration job; ``VmActions`` reports its outcome."""
        try:
            await self._vm_actions.move(UUID(command.vm), command.decision)
        except Exception as e:
            self._report(cf.job_done("migrate", command.vm, command.dst, None, str(e)))

    async def _stop(self, command: c.StopVm) -> None:
        monitor = self._monitors.get(UUID(command.host))
        try:
            if monitor is None:
                raise LinkDown(f"host {command.host} is gone")
            await monitor.link.call("VM.destroy", {"vmID": command.vm})
        except (RemoteError, LinkDown, CallTimeout) as e:
            self._report(f.JobDone("stop", command.vm, command.host, False, str(e)))

    # -- fencing and power -------------------------------------------------------------------

    async def _fence(self, command: c.FenceHost) -> None:
        action, agent = cf.fence_action(command)
        host = UUID(command.host)
        job = await self._fence_job(host, action, agent, command.method)
        if job is None:
            return
        done = await self._jobs.finished(job.id)
        self._report(cf.fence_done(host, command.method, done))

    async def _fence_job(self, host: UUID, action: str, agent: str, method: str) -> Job | None:
        """Submit the fence job; while another action holds the host, wait for it first."""
        for attempt in range(_FENCE_ATTEMPTS):
            try:
                return await self._fencing.fence(host, action, agent=agent, force=True)
            except ActionInProgress as e:
                if e.job_id is None or attempt == _FENCE_ATTEMPTS - 1:
                    self._report(cf.fence_done(host, method, None, e.reason))
                    return None
                await self._jobs.finished(e.job_id)
            except Exception as e:
                self._report(cf.fence_done(host, method, None, str(e)))
                return None
        return None

    async def _power_status(self, command: c.ConfirmPowerStatus) -> None:
        host = UUID(command.host)
        try:
            result = await self._fencing.power_status(host)
        except Exception as e:
            self._report(f.PowerSeen(command.host, f.POWER_UNKNOWN, str(e)))
            return
        self._report(cf.power_seen(host, result))

    async def _power(self, command: c.PowerHost) -> None:
        try:
            job = await self._fencing.fence(UUID(command.host), command.action, agent="power",
                                            force=True)  # fmt: skip
        except Exception as e:
            self.log.warn("power saving: {action} of host {host} refused: {error}",
                          action=command.action, host=command.host, error=e)  # fmt: skip
            return
        done = await self._jobs.finished(job.id)
        if done is not None and done.error:
            self.log.warn("power saving: {action} of host {host} failed: {error}",
                          action=command.action, host=command.host, error=done.error)  # fmt: skip
