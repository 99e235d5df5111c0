"""``VmActions``: define VMs and run, stop, pause, resume and migrate them as jobs.

Definitions (add, update, remove) are plain store writes with an audit event; the cluster
manager (:class:`~engine.cluster.ClusterService`) is told of each. Every action is a job
(:mod:`engine.jobs`): its *prepare* step checks the VM's state and, for a start, a migration or
a stop, asks the cluster manager, which keeps the books of every VM and places it with the
scheduler (:func:`engine.decide.scheduler.place`, reserving the VM's resources on the chosen
host at once); a refusal raises ``ActionRefused`` with the per-host explanation and is an audit
event. Its *run* step calls the agent and waits until the VM reports the state the action aims
at (the monitoring applies the reports): a start succeeds once the VM is launched (PoweringUp
or Up), a stop or shutdown once it is Down, a pause once Paused. Each start, migration and stop
job's outcome goes back to the manager.

The manager's own starts and migrations (HA restarts, evacuations, balancing) run as the same
jobs, on the host it chose: :meth:`VmActions.launch` and :meth:`VmActions.move`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn
from uuid import UUID

from twisted.internet import defer
from twisted.logger import Logger

from vdsmlike.client import RemoteError

from . import clusterfacts, domain, snapshot
from .cluster import ClusterService
from .config import EngineConfig
from .decide import commands as c
from .decide import facts as f
from .decide.scheduler import Decision
from .errors import ActionRefused
from .events import Auditor, LiveEvents
from .hostlink import CallTimeout, LinkDown
from .interfaces import IStore
from .jobs import JobFailed, JobRunner, Prepared, Progress
from .monitoring import HostMonitor
from .store.auditlog import AuditType, audit_event
from .store.errors import Conflict, NotFound
from .store.rows import Job, Vm, VmDynamic, VmStatus
from .vmsync import VmSync
from .vmtable import Interrupted, VmGone, VmTable

#: JSON-RPC's "method not found": the agent has no such verb.
METHOD_NOT_FOUND = -32601
#: VDSM's "Virtual machine does not exist".
NO_SUCH_VM = 1

LAUNCHED = frozenset({VmStatus.POWERING_UP, VmStatus.UP, VmStatus.PAUSED,
                      VmStatus.REBOOT_IN_PROGRESS, VmStatus.DOWN})
RUNNING = frozenset({VmStatus.POWERING_UP, VmStatus.UP, VmStatus.POWERING_DOWN,
                     VmStatus.REBOOT_IN_PROGRESS, VmStatus.PAUSED})


def _agent_error(host: str, verb: str, error: Exception) -> str:
    if isinstance(error, RemoteError):
        return f"host {host} refused {verb}: {error.message} (code {error.code})"
    if isinstance(error, CallTimeout):
        return f"host {host} did not answer {verb} in time"
    return f"host {host} is not reachable ({error})"


class VmActions:
    """VM definitions and actions (see the module docstring)."""

    log = Logger()

    def __init__(
        self,
        *,
        store: IStore,
        vms: VmTable,
        vmsync: VmSync,
        jobs: JobRunner,
        auditor: Auditor,
        live: LiveEvents,
        monitors: Mapping[UUID, HostMonitor],
        cluster: ClusterService,
        config: EngineConfig,
    ) -> None:
        self._store, self._vms, self._sync = store, vms, vmsync
        self._jobs, self._auditor, self._live = jobs, auditor, live
        self._monitors, self._cluster = monitors, cluster
        self._config = config

    # -- definitions -------------------------------------------------------------------------

    async def add_vm(self, spec: Mapping[str, Any]) -> Vm:
        """Define a VM (see ``IEngine.add_vm``)."""
        static = domain.vm_from_spec(spec)
        vm = await self._store.add_vm(static)
        self._vms.put(vm)
        self._cluster.add_vm(vm)
        await self._auditor.record(AuditType.VM_ADDED, vm_id=vm.id, vm=vm.name)
        self._live.publish("vm", vm)
        return vm

    async def update_vm(self, vm_id: UUID, changes: Mapping[str, Any]) -> Vm:
        """Change a VM's definition (its next start uses it)."""
        fields = domain.changes_from_spec(changes, vm_id=vm_id)
        if not fields:
            return await self._store.get_vm(vm_id)
        vm = await self._store.update_vm(vm_id, **fields)
        vm = self._vms.put_static(vm.static) or vm
        self._cluster.update_vm(vm)
        await self._auditor.record(AuditType.VM_UPDATED, vm_id=vm.id, vm=vm.name,
                                   fields=sorted(changes))
        self._live.publish("vm", vm)
        return vm

    async def remove_vm(self, vm_id: UUID) -> None:
        """Forget a Down VM; ``Conflict`` while it runs or an action holds it."""
        vm = await self._store.get_vm(vm_id)
        current = self._vms.get(vm_id) or vm
        if current.dynamic.status is not VmStatus.DOWN:
            raise Conflict(f"VM {vm.name!r} is {current.dynamic.status}; stop it first")
        if self._jobs.busy(vm_id):
            raise Conflict(f"VM {vm.name!r} is busy with job {self._jobs.holder(vm_id)}")
        await self._store.remove_vm(vm_id)
        self._vms.forget(vm_id)
        self._cluster.remove_vm(vm_id)
        await self._auditor.record(AuditType.VM_REMOVED, vm_id=vm_id, vm=vm.name)

    # -- helpers -----------------------------------------------------------------------------

    async def _vm(self, vm_id: UUID) -> Vm:
        vm = self._vms.get(vm_id)
        if vm is None:
            vm = await self._store.get_vm(vm_id)  # NotFound for an unknown id
            self._vms.put(vm)
        return vm

    def _monitor(self, host_id: UUID) -> HostMonitor:
        monitor = self._monitors.get(host_id)
        if monitor is None:
            raise NotFound("host", host_id)
        return monitor

    def _host_of(self, vm: Vm) -> HostMonitor:
        """The VM's host, reachable. :raises ActionRefused: otherwise."""
        host_id = vm.dynamic.run_on_host
        if host_id is None or host_id not in self._monitors:
            raise ActionRefused(f"VM {vm.name!r} is {vm.dynamic.status} and runs on no host")
        monitor = self._monitors[host_id]
        if not monitor.link.connected:
            raise ActionRefused(
                f"host {monitor.name} of VM {vm.name!r} is not reachable ({monitor.state})"
            )
        return monitor

    def _decide(
        self, vm: Vm, *, only_host: UUID | None, current: UUID | None
    ) -> tuple[Decision, c.StartVm | c.MigrateVm | None]:
        """Ask the cluster manager to place a start (``current`` None) or a migration.

        :returns: the scheduler's decision and the command the caller's job carries out.
        :raises NotFound: an unknown ``only_host``. :raises ActionRefused: the manager refuses.
        """
        if only_host is not None:
            self._monitor(only_host)
            pinned = vm.static.pinned_host
            if pinned is not None and pinned != only_host:
                raise ActionRefused(f"VM {vm.name!r} is pinned to another host ({pinned})")
        if current is None:
            return self._cluster.start_vm(vm.id, host=only_host)
        return self._cluster.migrate_vm(vm.id, host=only_host)

    def _failed(self, kind: str, vm_id: UUID, host: str, why: str) -> None:
        """Tell the manager an action it placed will not run (no job was written)."""
        self._cluster.observe(f.JobDone(kind, str(vm_id), host, False, why))

    def _follow(self, kind: str, job: Job, vm_id: UUID, host: str) -> None:
        """Report a start, migration or stop job's outcome to the manager when it ends."""
        defer.Deferred.fromCoroutine(self._report(kind, job, vm_id, host)).addErrback(
            lambda failure: self.log.failure("following job {job_id} failed", failure,
                                             job_id=job.id))  # fmt: skip

    async def _report(self, kind: str, job: Job, vm_id: UUID, host: str) -> None:
        done = await self._jobs.finished(job.id)
        if not self._cluster.running:
            return  # the engine stops: the next one converges from the hosts' reports
        fact = clusterfacts.job_done(kind, str(vm_id), host, done)
        if kind == "start" and not fact.ok:
            await self.clear_start(vm_id, UUID(host))
        self._cluster.observe(fact)

    async def clear_start(self, vm_id: UUID, host_id: UUID) -> None:
        """
        Make sure a start that failed left nothing running on its host (``VM.destroy``; "no
        such VM" is the answer when nothing started): a VM must not come up late on a host
        the manager has given up on. Best effort: a host that does not answer holds its VMs
        in Unknown anyway.
        """
        monitor = self._monitors.get(host_id)
        if monitor is None or not monitor.link.connected:
            return
        try:
            await monitor.link.call("VM.destroy", {"vmID": str(vm_id)})
        except (RemoteError, LinkDown, CallTimeout) as e:
            self.log.debug("clearing failed start of {vm_id} on {host}: {error}", vm_id=vm_id,
                           host=monitor.name, error=e)  # fmt: skip

    async def _refuse(self, kind: AuditType, vm: Vm, decision: Decision) -> NoReturn:
        reason = snapshot.refusal_text(decision.summary())
        explanation = {decision.host_names.get(h, h): lines
                       for h, lines in decision.explanations.items()}
        await self._auditor.record(kind, vm_id=vm.id, vm=vm.name, reason=reason,
                                   explanation=explanation)
        raise ActionRefused(reason, explanation, decision)

    def _submit(self, action: str, vm: Vm, key: str | None,
                prepare: Callable[[], Awaitable[Prepared]],
                run: Callable[[Job, Any, Progress], Awaitable[Any]]) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._jobs.submit(
            action, target_kind="vm", target_id=vm.id, label=f"VM {vm.name!r}", key=key,
            prepare=prepare, run=run))

    async def _wait(self, vm: Vm, statuses: frozenset[VmStatus], timeout: float,
                    what: str) -> Vm:
        try:
            return await self._vms.wait_for(vm.id, lambda v: v.dynamic.status in statuses,
                                            timeout)
        except defer.TimeoutError:
            current = self._vms.get(vm.id)
            now = current.dynamic.status if current else "gone"
            raise JobFailed(f"VM {vm.name!r} did not {what} within {timeout:g} s (it is "
                            f"{now})") from None
        except VmGone:
            raise JobFailed(f"VM {vm.name!r} was removed") from None
        except Interrupted:
            raise JobFailed("interrupted: the engine is stopping") from None

    # -- start -------------------------------------------------------------------------------

    async def start_vm(self, vm_id: UUID, *, host_id: UUID | None, key: str | None) -> Job:
        """Schedule (or use ``host_id``) and start; see the module docstring."""
        vm = await self._vm(vm_id)
        placed: list[str] = []

        async def prepare() -> Prepared:
            current = await self._vm(vm_id)
            if current.dynamic.external:
                raise ActionRefused(f"VM {vm.name!r} is external: the engine does not run it")
            if current.dynamic.status is not VmStatus.DOWN:
                raise ActionRefused(f"VM {vm.name!r} is {current.dynamic.status}, not Down")
            decision, _ = self._decide(current, only_host=host_id, current=None)
            if decision.host is None:
                await self._refuse(AuditType.VM_START_REFUSED, current, decision)
            host = decision.host
            placed.append(host)
            return Prepared((current, decision),
                            lambda: self._failed("start", vm_id, host, "no job was written"))

        job = await self._submit("start", vm, key, prepare, self._run_start)
        if placed:
            self._follow("start", job, vm_id, placed[0])
        return job

    async def launch(self, vm_id: UUID, decision: Decision) -> Job:
        """
        Start a VM on the host the cluster manager chose (an HA restart): a ``start`` job like
        the admin's, its outcome reported to the manager.

        :raises ActionRefused: the VM is not Down here, or another action holds it.
        """
        vm = await self._vm(vm_id)

        async def prepare() -> Prepared:
            current = await self._vm(vm_id)
            if current.dynamic.status is not VmStatus.DOWN:
                raise ActionRefused(f"VM {vm.name!r} is {current.dynamic.status}, not Down")
            return Prepared((current, decision))

        job = await self._submit("start", vm, None, prepare, self._run_start)
        assert decision.host is not None
        self._follow("start", job, vm_id, decision.host)
        return job

    async def _run_start(self, job: Job, context: Any, progress: Progress) -> Any:
        vm, decision = context
        host = self._monitors[UUID(decision.host)]
        self._sync.starting[vm.id] = host.id
        try:
            return await self._launch(job, vm, host, decision, progress)
        finally:
            self._sync.starting.pop(vm.id, None)

    async def _launch(self, job: Job, vm: Vm, host: HostMonitor, decision: Decision,
                      progress: Progress) -> Any:
        placed = audit_event(
            AuditType.VM_PLACED, vm_id=vm.id, host_id=host.id, job_id=job.id, vm=vm.name,
            host=host.name, reason=" ".join(decision.explanations[decision.host or ""]),
            policy=decision.policy,
            explanation={decision.host_names[h]: e for h, e in decision.explanations.items()})
        starting = audit_event(AuditType.VM_STARTING, vm_id=vm.id, host_id=host.id,
                               job_id=job.id, vm=vm.name, host=host.name)
        await self._vms.apply(VmDynamic(vm.id, VmStatus.WAIT_FOR_LAUNCH, run_on_host=host.id),
                              force=True, event=starting, also=[placed])
        params = domain.create_params(vm.static)
        try:
            await host.link.call("VM.create", {"vmParams": params})
        except (RemoteError, LinkDown, CallTimeout) as e:
            reason = _agent_error(host.name, "VM.create", e)
            if not isinstance(e, CallTimeout):  # a late answer may still start it
                await self._start_failed(vm, host, reason)
            raise JobFailed(reason) from None
        await progress(50)
        now = await self._wait(vm, LAUNCHED, self._config.start_timeout, "launch")
        if now.dynamic.status is VmStatus.DOWN:
            raise JobFailed(f"VM {vm.name!r} went Down while starting on host {host.name}: "
                            f"{now.dynamic.exit_message or 'no reason given'}")
        return {"host_id": str(host.id), "host": host.name, "status": str(now.dynamic.status)}

    async def _start_failed(self, vm: Vm, host: HostMonitor, reason: str) -> None:
        event = audit_event(AuditType.VM_START_FAILED, vm_id=vm.id, host_id=host.id,
                            vm=vm.name, host=host.name, reason=reason)
        await self._vms.apply(VmDynamic(vm.id, VmStatus.DOWN, exit_status="error",
                                        exit_message=reason), force=True, event=event)

    # -- stop, shutdown, pause, resume -------------------------------------------------------

    async def _simple(self, action: str, vm_id: UUID, key: str | None, *,
                      allowed: frozenset[VmStatus], verb: str, params: dict[str, Any],
                      target: frozenset[VmStatus], timeout: float, what: str,
                      book: Callable[[Vm, HostMonitor], Callable[[], None]] | None = None
                      ) -> Job:
        vm = await self._vm(vm_id)

        async def prepare() -> Prepared:
            current = await self._vm(vm_id)
            if current.dynamic.status not in allowed:
                raise ActionRefused(f"cannot {action} VM {vm.name!r}: it is "
                                    f"{current.dynamic.status}")
            host = self._host_of(current)
            undo = None if book is None else book(current, host)  # the manager's books
            return Prepared((current, host), undo)

        async def run(job: Job, context: Any, progress: Progress) -> Any:
            current, host = context
            try:
                await host.link.call(verb, {"vmID": str(vm_id), **params})
            except RemoteError as e:
                if e.code != NO_SUCH_VM or VmStatus.DOWN not in target:
                    raise JobFailed(_agent_error(host.name, verb, e)) from None
                await self._sync.mark_down(vm_id, host, f"not found on host {host.name}")
            except (LinkDown, CallTimeout) as e:
                raise JobFailed(_agent_error(host.name, verb, e)) from None
            await progress(50)
            done = await self._wait(current, target, timeout, what)
            if done.dynamic.status is VmStatus.DOWN and action not in ("stop", "shutdown"):
                raise JobFailed(f"VM {vm.name!r} went Down: "
                                f"{done.dynamic.exit_message or 'no reason given'}")
            return {"status": str(done.dynamic.status), "host": host.name}

        return await self._submit(action, vm, key, prepare, run)

    async def stop_vm(self, vm_id: UUID, *, key: str | None) -> Job:
        """
        Power the VM off (``VM.destroy``); done once it is Down. The cluster manager records
        the stop first (an HA VM stopped by the admin is not restarted); a Down VM that HA was
        about to restart only leaves the restart queue.
        """
        vm = await self._vm(vm_id)
        if vm.dynamic.status is VmStatus.DOWN and self._cluster.restart_pending(vm_id):
            return await self._cancel_restart(vm, key)
        stopping: list[str] = []

        def book(current: Vm, host: HostMonitor) -> Callable[[], None]:
            self._cluster.stop_vm(vm_id)
            stopping.append(str(host.id))
            return lambda: self._failed("stop", vm_id, str(host.id), "no job was written")

        job = await self._simple("stop", vm_id, key, allowed=RUNNING | {
            VmStatus.WAIT_FOR_LAUNCH, VmStatus.UNKNOWN, VmStatus.NOT_RESPONDING},
            verb="VM.destroy", params={}, target=frozenset({VmStatus.DOWN}),
            timeout=self._config.stop_timeout, what="stop", book=book)  # fmt: skip
        if stopping:
            self._follow("stop", job, vm_id, stopping[0])
        return job

    async def _cancel_restart(self, vm: Vm, key: str | None) -> Job:
        async def prepare() -> Prepared:
            self._cluster.stop_vm(vm.id)
            return Prepared()

        async def run(job: Job, context: Any, progress: Progress) -> Any:
            return {"status": str(VmStatus.DOWN), "ha_restart": "cancelled"}

        return await self._submit("stop", vm, key, prepare, run)

    def shutdown_vm(self, vm_id: UUID, *, key: str | None) -> Awaitable[Job]:
        """Ask the guest to power off (``VM.shutdown``); done once it is Down."""
        timeout = self._config.shutdown_timeout
        params = {"delay": 0, "timeout": max(1, int(timeout / 2)), "message": "engine shutdown"}
        return self._simple("shutdown", vm_id, key, allowed=RUNNING, verb="VM.shutdown",
                            params=params, target=frozenset({VmStatus.DOWN}), timeout=timeout,
                            what="shut down")

    def pause_vm(self, vm_id: UUID, *, key: str | None) -> Awaitable[Job]:
        """Stop the VM's vCPUs (``VM.pause``); done once it is Paused."""
        return self._simple("pause", vm_id, key, allowed=frozenset({VmStatus.UP,
                            VmStatus.POWERING_UP}), verb="VM.pause", params={},
                            target=frozenset({VmStatus.PAUSED, VmStatus.DOWN}),
                            timeout=self._config.pause_timeout, what="pause")

    def resume_vm(self, vm_id: UUID, *, key: str | None) -> Awaitable[Job]:
        """Resume a Paused VM (``VM.cont``); done once it is Up."""
        return self._simple("resume", vm_id, key, allowed=frozenset({VmStatus.PAUSED}),
                            verb="VM.cont", params={},
                            target=frozenset({VmStatus.UP, VmStatus.DOWN}),
                            timeout=self._config.pause_timeout, what="resume")

    # -- migrate -----------------------------------------------------------------------------

    async def migrate_vm(self, vm_id: UUID, *, host_id: UUID | None, key: str | None) -> Job:
        """Live-migrate to ``host_id`` or the scheduler's pick."""
        vm = await self._vm(vm_id)

        async def prepare() -> Prepared:
            current = await self._vm(vm_id)
            if current.dynamic.status is not VmStatus.UP:
                raise ActionRefused(f"cannot migrate VM {vm.name!r}: it is "
                                    f"{current.dynamic.status}, not Up")
            source = self._host_of(current)
            if host_id == source.id:
                raise ActionRefused(f"VM {vm.name!r} already runs on host {source.name}")
            decision, _ = self._decide(current, only_host=host_id, current=source.id)
            if decision.host is None:
                await self._refuse(AuditType.VM_MIGRATION_REFUSED, current, decision)
            dst = decision.host
            placed.append(dst)
            return Prepared((current, source, decision),
                            lambda: self._failed("migrate", vm_id, dst, "no job was written"))

        placed: list[str] = []
        job = await self._submit("migrate", vm, key, prepare, self._run_migrate)
        if placed:
            self._follow("migrate", job, vm_id, placed[0])
        return job

    async def move(self, vm_id: UUID, decision: Decision) -> Job:
        """
        Live-migrate a VM to the host the cluster manager chose (maintenance, balancing): a
        ``migrate`` job like the admin's, its outcome reported to the manager.

        :raises ActionRefused: the VM is not Up on a reachable host, or is busy.
        """
        vm = await self._vm(vm_id)

        async def prepare() -> Prepared:
            current = await self._vm(vm_id)
            if current.dynamic.status is not VmStatus.UP:
                raise ActionRefused(f"cannot migrate VM {vm.name!r}: it is "
                                    f"{current.dynamic.status}, not Up")
            return Prepared((current, self._host_of(current), decision))

        job = await self._submit("migrate", vm, None, prepare, self._run_migrate)
        assert decision.host is not None
        self._follow("migrate", job, vm_id, decision.host)
        return job

    async def _run_migrate(self, job: Job, context: Any, progress: Progress) -> Any:
        vm, source, decision = context
        dest = self._monitors[UUID(decision.host)]
        ids = dict(vm_id=vm.id, host_id=source.id, job_id=job.id, vm=vm.name, host=source.name,
                   destination=dest.name)
        params = {"vmId": str(vm.id), "dst": f"{dest.row.static.address}:{dest.row.static.port}",
                  "dstHostId": str(dest.id), "method": "online"}
        if dest.row.static.token:
            params["dstToken"] = dest.row.static.token  # the source agent logs in to the other
        try:
            await source.link.call("VM.migrate", {"vmID": str(vm.id), "params": params})
        except (RemoteError, LinkDown, CallTimeout) as e:
            if isinstance(e, RemoteError) and e.code == METHOD_NOT_FOUND:
                reason = (f"the agent on host {source.name} cannot migrate yet "
                          f"(it has no VM.migrate: {e.message})")
            else:
                reason = _agent_error(source.name, "VM.migrate", e)
            await self._auditor.record(AuditType.VM_MIGRATION_FAILED, **ids, reason=reason)
            raise JobFailed(reason) from None
        await self._auditor.record(AuditType.VM_MIGRATION_STARTED, **ids)
        await self._vms.apply(VmDynamic(vm.id, VmStatus.MIGRATING_FROM, run_on_host=source.id,
                                        migrating_to_host=dest.id))
        await progress(30)
        return await self._await_arrival(vm, source, dest, ids)

    async def _await_arrival(self, vm: Vm, source: HostMonitor, dest: HostMonitor,
                             ids: dict[str, Any]) -> Any:
        def settled(v: Vm) -> bool:
            d = v.dynamic
            return d.status is VmStatus.DOWN or (d.status is VmStatus.UP and
                                                 d.migrating_to_host is None)

        try:
            now = await self._vms.wait_for(vm.id, settled, self._config.migrate_timeout)
        except Interrupted:
            raise JobFailed("interrupted: the engine is stopping") from None
        except defer.TimeoutError:
            raise JobFailed(f"VM {vm.name!r} did not arrive on host {dest.name} within "
                            f"{self._config.migrate_timeout:g} s") from None
        if now.dynamic.run_on_host == dest.id:
            await self._auditor.record(AuditType.VM_MIGRATION_DONE, **ids)
            return {"host_id": str(dest.id), "host": dest.name}
        reason = f"the VM is {now.dynamic.status} on host {source.name}"
        await self._auditor.record(AuditType.VM_MIGRATION_FAILED, **ids, reason=reason)
        raise JobFailed(f"migration of VM {vm.name!r} to {dest.name} failed: {reason}")

