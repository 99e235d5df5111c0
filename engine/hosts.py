"""``HostActions``: add and remove hosts, put them into maintenance and activate them.

Adding a host writes it, tells the cluster manager (:class:`~engine.cluster.ClusterService`)
and starts its :class:`~engine.monitoring.HostMonitor` (which connects). Maintenance and
activation are the manager's to decide; here they are jobs that ask it and report:

- **maintenance**: the host goes PreparingForMaintenance (the scheduler no longer places VMs
  there); the manager migrates every VM away, spread by the scheduler, a few at a time
  (:mod:`engine.decide.evacuation`). The job succeeds once the host is in Maintenance, with
  where each VM went. It fails, with every VM that could not leave and why, once each VM left
  has had an outcome and nothing is in flight: the host then stays PreparingForMaintenance,
  the manager keeps trying, and the host enters Maintenance by itself once empty (or goes back
  Up at the maintenance deadline, with a report, unless configured to stay). It fails too
  when the host stops preparing (it died: HA takes over; the deadline passed).
- **activate**: the host goes Up (or Connecting until its agent answers); VMs moved away with
  ``move_back`` migrate back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, MutableMapping
from typing import Any
from uuid import UUID

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .cluster import ClusterService
from .decide.clusteradmin import MaintenanceReport
from .decide.hoststate import HostState
from .errors import ActionRefused
from .events import Auditor, LiveEvents
from .interfaces import IStore
from .jobs import JobFailed, JobRunner, Prepared, Progress
from .monitoring import HostMonitor
from .store.auditlog import AuditType
from .store.errors import Conflict, InvalidValue, NotFound
from .store.rows import Host, HostDynamic, HostStatic, Job

MonitorFactory = Callable[[Host], HostMonitor]


def check_host_fields(name: Any, address: Any, port: Any) -> None:
    """:raises InvalidValue: for an empty name or address, or a port outside 1-65535."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"a host needs a name, got {name!r}")
    if not isinstance(address, str) or not address.strip() or " " in address.strip():
        raise InvalidValue(f"a host needs an address (a name or an IP), got {address!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidValue(f"port must be 1-65535, got {port!r}")


def maintenance_outcome(report: MaintenanceReport, names: Callable[[str], str]) -> dict[str, str]:
    """Pure: each VM of a maintenance and what became of it, by name ("moved to h2", or why
    it could not leave)."""
    outcome = {names(vm): f"moved to {names(host)}" if host else "moved, now Down"
               for vm, host in report.moved}  # fmt: skip
    outcome.update({names(vm): why for vm, why in report.stuck})
    return outcome


class HostActions:
    """
    Host operations (see the module docstring).

    :param monitors: the engine's monitors by host id (this adds and removes entries).
    :param make_monitor: builds a started-to-be monitor for a host row.
    :param cluster: the cluster manager's service (host states, maintenance).
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
        cluster: ClusterService,
    ) -> None:
        self._store, self._jobs, self._auditor, self._live = store, jobs, auditor, live
        self._monitors, self._make_monitor = monitors, make_monitor
        self._cluster = cluster
        self._waiting: list[Deferred] = []

    def monitor(self, host_id: UUID) -> HostMonitor:
        """:returns: the host's monitor. :raises NotFound: for an unknown host."""
        found = self._monitors.get(host_id)
        if found is None:
            raise NotFound("host", host_id)
        return found

    def _watch(self, host: Host) -> HostMonitor:
        monitor = self._make_monitor(host)
        self._monitors[host.id] = monitor
        monitor.start()
        return monitor

    async def add_host(self, name: str, address: str, *, port: int, token: str) -> Host:
        """Write the host and start watching it (see ``IEngine.add_host``)."""
        check_host_fields(name, address, port)
        static = HostStatic(id=uuid.uuid4(), name=name.strip(), address=address.strip(),
                            port=port, token=token or "")  # fmt: skip
        detail = f"agent at {static.address}:{static.port}"
        host = await self._store.add_host(
            static, dynamic=HostDynamic(static.id, status_reason=f"host added ({detail})")
        )
        await self._auditor.record(AuditType.HOST_ADDED, host_id=host.id, host=host.name,
                                   address=f"{static.address}:{static.port}")  # fmt: skip
        self._cluster.add_host(host)
        self._watch(host)
        self._live.publish("host", host)
        return host

    def start_monitor(self, host: Host) -> None:
        """Watch a host read from the store (engine start; the manager has it already)."""
        self._watch(host)

    async def remove_host(self, host_id: UUID) -> None:
        """Forget a host in Maintenance (or never connected) with no VMs."""
        monitor = self.monitor(host_id)
        if monitor.running_vms():
            names = ", ".join(sorted(v.name for v in monitor.running_vms()))
            raise Conflict(f"host {monitor.name} still runs VMs: {names}")
        if self._jobs.busy(host_id):
            raise Conflict(f"host {monitor.name} is busy with job {self._jobs.holder(host_id)}")
        self._cluster.check_remove_host(host_id)
        await self._store.remove_host(host_id)
        self._cluster.forget_host(host_id)
        self._monitors.pop(host_id, None)
        await monitor.stop()
        await self._auditor.record(AuditType.HOST_REMOVED, host_id=host_id, host=monitor.name)

    # -- maintenance -------------------------------------------------------------------------

    async def maintenance(self, host_id: UUID, *, key: str | None,
                          move_back: bool | None = None) -> Job:  # fmt: skip
        """Evacuate the host and put it into Maintenance, as a job (see the module docstring).

        :param move_back: move its VMs back when it is activated (None: the configured default).
        """
        monitor = self.monitor(host_id)

        async def prepare() -> Prepared:
            await self._cluster.request_maintenance(host_id, move_back=move_back)
            return Prepared(monitor, lambda: self._undo_maintenance(host_id))

        return await self._jobs.submit(
            "maintenance", target_kind="host", target_id=host_id, label=f"host {monitor.name}",
            key=key, prepare=prepare, run=self._run_maintenance)  # fmt: skip

    def _undo_maintenance(self, host_id: UUID) -> None:
        """No job could be written for a maintenance already asked: take it back."""
        try:
            self._cluster.activate(host_id)
        except ActionRefused as e:
            self.log.warn("maintenance of host {host_id} not taken back: {why}",
                          host_id=host_id, why=e.reason)  # fmt: skip

    async def _run_maintenance(self, job: Job, monitor: HostMonitor, progress: Progress) -> Any:
        await progress(10)
        report = await self._settled(monitor.id)
        outcome = maintenance_outcome(report, self._name)
        if report.state == HostState.MAINTENANCE:
            return {"moved": outcome, "host": monitor.name}
        stuck = dict(report.stuck)
        if report.state == HostState.PREPARING_FOR_MAINTENANCE:
            reason = (f"{len(stuck)} of {len(outcome)} VMs could not leave host {monitor.name}: "
                      + "; ".join(f"{self._name(v)}: {w}" for v, w in sorted(stuck.items()))
                      + f". The host stays {report.state}; the engine keeps trying, and it "
                      "enters Maintenance once no VM is left on it")  # fmt: skip
        else:
            reason = (f"host {monitor.name} is {report.state}: its maintenance stopped "
                      f"({monitor.row.dynamic.status_reason})")  # fmt: skip
        await self._auditor.record(AuditType.HOST_MAINTENANCE_FAILED, host_id=monitor.id,
                                   job_id=job.id, host=monitor.name, reason=reason,
                                   vms=outcome)  # fmt: skip
        raise JobFailed(reason)

    def _name(self, ident: str) -> str:
        try:
            key = UUID(ident)
        except ValueError:
            return ident
        vm = self._cluster.manager.state.vms.get(ident)
        if vm is not None:
            return vm.name
        monitor = self._monitors.get(key)
        return monitor.name if monitor is not None else ident

    def _settled(self, host_id: UUID) -> Deferred:
        """A Deferred firing with the host's maintenance report once it is in Maintenance, no
        longer preparing, or every VM left has had an outcome (checked after every tick)."""
        waiter: Deferred = Deferred()

        def check() -> None:
            if waiter.called:
                return
            report = self._cluster.maintenance_report(host_id)
            preparing = report.state == HostState.PREPARING_FOR_MAINTENANCE
            if not preparing or (report.settled and not report.waiting):
                waiter.callback(report)

        def done(result: Any) -> Any:
            if check in self._cluster.after_tick:
                self._cluster.after_tick.remove(check)
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            return result

        waiter.addBoth(done)
        self._waiting.append(waiter)
        self._cluster.after_tick.append(check)
        check()
        return waiter

    def interrupt(self) -> None:
        """The engine is stopping: maintenance jobs stop waiting (and fail, interrupted)."""
        for waiter in list(self._waiting):
            if not waiter.called:
                waiter.errback(JobFailed("interrupted: the engine is stopping"))

    async def activate(self, host_id: UUID, *, key: str | None) -> Job:
        """Bring a host out of Maintenance, as a job."""
        monitor = self.monitor(host_id)

        async def prepare() -> Prepared:
            try:
                await self._cluster.activate(host_id)
            except ActionRefused as e:
                raise ActionRefused(f"cannot activate host {monitor.name}: {e.reason}") from None
            return Prepared(monitor)

        async def run(job: Job, monitor: HostMonitor, progress: Progress) -> Any:
            return {"host": monitor.name, "status": str(monitor.state)}

        return await self._jobs.submit(
            "activate", target_kind="host", target_id=host_id, label=f"host {monitor.name}",
            key=key, prepare=prepare, run=run)  # fmt: skip
