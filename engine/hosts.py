"""``HostActions``: add and remove hosts, put them into maintenance and activate them.

Adding a host writes it and starts its :class:`~engine.monitoring.HostMonitor` (which connects).
Maintenance is a job: the host goes PreparingForMaintenance (the scheduler stops placing VMs
there: only Up hosts pass its status filter), every VM on it is migrated away (each migration a
job of its own, placed by the scheduler), and once none is left the host is in Maintenance. A VM
that cannot move is named in the job's error with the reason, and the host stays
PreparingForMaintenance; it completes by itself once its last VM is gone (stopped, or moved
later), as the monitoring sees after each poll. Activating brings the host back Up.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from uuid import UUID

from twisted.logger import Logger

from .decide.hoststate import HostEvent, HostState, InvalidTransition
from .errors import ActionRefused
from .events import Auditor, LiveEvents
from .interfaces import IStore
from .jobs import JobFailed, JobRunner, Prepared, Progress
from .monitoring import HostMonitor, added
from .store.auditlog import AuditType
from .store.errors import Conflict, InvalidValue, NotFound
from .store.rows import Host, HostDynamic, HostStatic, Job, JobStatus

MonitorFactory = Callable[[Host, Any], HostMonitor]
Migrate = Callable[..., Awaitable[Job]]


def check_host_fields(name: Any, address: Any, port: Any) -> None:
    """:raises InvalidValue: for an empty name or address, or a port outside 1-65535."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"a host needs a name, got {name!r}")
    if not isinstance(address, str) or not address.strip() or " " in address.strip():
        raise InvalidValue(f"a host needs an address (a name or an IP), got {address!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidValue(f"port must be 1-65535, got {port!r}")


class HostActions:
    """
    Host operations (see the module docstring).

    :param monitors: the engine's monitors by host id (this adds and removes entries).
    :param make_monitor: builds a started-to-be monitor for a host row and its initial status.
    :param migrate: ``VmActions.migrate_vm``, for evacuation.
    :param finished: ``JobRunner.finished``, to wait for those migrations.
    """

    log = Logger()

    def __init__(
        self,
        *,
        store: IStore,
        jobs: JobRunner,
        auditor: Auditor,
        live: LiveEvents,
        monitors: MutableMapping[UUID, HostMonitor],
        make_monitor: MonitorFactory,
        migrate: Migrate,
        clock: Any,
    ) -> None:
        self._store, self._jobs, self._auditor, self._live = store, jobs, auditor, live
        self._monitors, self._make_monitor = monitors, make_monitor
        self._migrate = migrate
        self._clock = clock

    def monitor(self, host_id: UUID) -> HostMonitor:
        """:returns: the host's monitor. :raises NotFound: for an unknown host."""
        found = self._monitors.get(host_id)
        if found is None:
            raise NotFound("host", host_id)
        return found

    def _watch(self, host: Host, status: Any) -> HostMonitor:
        monitor = self._make_monitor(host, status)
        monitor.after_vm_poll.append(self._maybe_evacuated)
        self._monitors[host.id] = monitor
        monitor.start()
        return monitor

    async def add_host(self, name: str, address: str, *, port: int, token: str) -> Host:
        """Write the host and start watching it (see ``IEngine.add_host``)."""
        check_host_fields(name, address, port)
        static = HostStatic(id=uuid.uuid4(), name=name.strip(), address=address.strip(),
                            port=port, token=token or "")
        detail = f"agent at {static.address}:{static.port}"
        status = added(self._clock.seconds(), detail)
        host = await self._store.add_host(
            static, dynamic=HostDynamic(static.id, status_reason=f"host added ({detail})")
        )
        await self._auditor.record(AuditType.HOST_ADDED, host_id=host.id, host=host.name,
                                   address=f"{static.address}:{static.port}")
        self._watch(host, status)
        self._live.publish("host", host)
        return host

    def start_monitor(self, host: Host, status: Any) -> None:
        """Watch a host read from the store (engine start)."""
        self._watch(host, status)

    async def remove_host(self, host_id: UUID) -> None:
        """Forget a host in Maintenance (or never connected) with no VMs."""
        monitor = self.monitor(host_id)
        if monitor.running_vms():
            names = ", ".join(sorted(v.name for v in monitor.running_vms()))
            raise Conflict(f"host {monitor.name} still runs VMs: {names}")
        if self._jobs.busy(host_id):
            raise Conflict(f"host {monitor.name} is busy with job {self._jobs.holder(host_id)}")
        try:
            monitor.check(HostEvent.REMOVED)
        except InvalidTransition as e:
            raise ActionRefused(f"cannot remove host {monitor.name}: it is {e.state}; "
                                f"{e.reason}") from None
        await self._store.remove_host(host_id)
        self._monitors.pop(host_id, None)
        await monitor.stop()
        await self._auditor.record(AuditType.HOST_REMOVED, host_id=host_id, host=monitor.name)

    # -- maintenance -------------------------------------------------------------------------

    async def maintenance(self, host_id: UUID, *, key: str | None) -> Job:
        """Evacuate the host and put it into Maintenance, as a job."""
        monitor = self.monitor(host_id)

        async def prepare() -> Prepared:
            try:
                monitor.check(HostEvent.MAINTENANCE_REQUESTED)
            except InvalidTransition as e:
                raise ActionRefused(f"host {monitor.name}: {e.reason}") from None
            if monitor.state in (HostState.CONNECTING, HostState.NON_RESPONSIVE) and \
                    monitor.running_vms():
                raise ActionRefused(
                    f"host {monitor.name} is {monitor.state} with VMs whose state is unknown; "
                    "they cannot be evacuated until it answers (or is fenced)")
            return Prepared(monitor)

        return await self._jobs.submit(
            "maintenance", target_kind="host", target_id=host_id, label=f"host {monitor.name}",
            key=key, prepare=prepare, run=self._run_maintenance)

    async def _run_maintenance(self, job: Job, monitor: HostMonitor, progress: Progress) -> Any:
        await monitor.command(HostEvent.MAINTENANCE_REQUESTED, f"job {job.id}")
        if monitor.state is HostState.MAINTENANCE:
            return {"moved": {}, "host": monitor.name}
        outcomes = await self._evacuate(monitor, progress)
        stuck = {name: why for name, why in outcomes.items() if not why.startswith("moved")}
        if stuck:
            reason = (f"{len(stuck)} of {len(outcomes)} VMs could not leave host "
                      f"{monitor.name}: " + "; ".join(f"{n}: {w}" for n, w in sorted(stuck.items()))
                      + f". The host stays {monitor.state}; it enters Maintenance once no VM "
                      "is left on it")
            await self._auditor.record(AuditType.HOST_MAINTENANCE_FAILED, host_id=monitor.id,
                                       job_id=job.id, host=monitor.name, reason=reason,
                                       vms=outcomes)
            raise JobFailed(reason)
        self._evacuated(monitor, f"job {job.id}")
        return {"moved": outcomes, "host": monitor.name}

    async def _evacuate(self, monitor: HostMonitor, progress: Progress) -> dict[str, str]:
        outcomes: dict[str, str] = {}
        jobs: dict[str, Job] = {}
        for vm in monitor.running_vms():
            try:
                jobs[vm.name] = await self._migrate(vm.id, host_id=None, key=None)
            except ActionRefused as e:
                outcomes[vm.name] = e.reason
        await progress(20)
        for name, started in jobs.items():
            done = await self._jobs.finished(started.id)
            if done is not None and done.status is JobStatus.SUCCEEDED:
                outcomes[name] = f"moved to {done.result.get('host')}"
            else:
                outcomes[name] = done.error if done is not None else "outcome unknown"
        return outcomes

    def _evacuated(self, monitor: HostMonitor, detail: str) -> None:
        try:
            monitor.command(HostEvent.VMS_EVACUATED, detail)
        except InvalidTransition:
            pass  # completed meanwhile, or activated again

    def _maybe_evacuated(self, monitor: HostMonitor) -> None:
        """After a poll: a host preparing for maintenance with no VM left enters it."""
        if monitor.state is not HostState.PREPARING_FOR_MAINTENANCE:
            return
        if monitor.running_vms() or self._jobs.busy(monitor.id):
            return
        self._evacuated(monitor, "no VM left on the host")

    async def activate(self, host_id: UUID, *, key: str | None) -> Job:
        """Bring a host out of Maintenance, as a job."""
        monitor = self.monitor(host_id)

        async def prepare() -> Prepared:
            try:
                monitor.check(HostEvent.ACTIVATE_REQUESTED)
            except InvalidTransition as e:
                raise ActionRefused(f"cannot activate host {monitor.name}: {e.reason}") from None
            return Prepared(monitor)

        async def run(job: Job, monitor: HostMonitor, progress: Progress) -> Any:
            t = await monitor.command(HostEvent.ACTIVATE_REQUESTED, f"job {job.id}")
            return {"host": monitor.name, "status": str(t.after.state)}

        return await self._jobs.submit(
            "activate", target_kind="host", target_id=host_id, label=f"host {monitor.name}",
            key=key, prepare=prepare, run=run)
