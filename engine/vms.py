"""``VmActions``: define VMs and run, stop, pause, resume and migrate them as jobs.

Definitions (add, update, remove) are plain store writes with an audit event. Every action is a
job (:mod:`engine.jobs`): its *prepare* step checks the VM's state and, for a start or a
migration, asks the scheduler (:func:`engine.decide.scheduler.place`, which reserves the VM's
resources on the chosen host at once); a refusal raises ``ActionRefused`` with the per-host
explanation and is an audit event. Its *run* step calls the agent and waits until the VM reports
the state the action aims at (the monitoring applies the reports): a start succeeds once the
VM is launched (PoweringUp or Up), a stop or shutdown once it is Down, a pause once Paused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

from twisted.internet import defer
from twisted.logger import Logger

from vdsmlike.client import RemoteError

from . import domain, snapshot
from .config import EngineConfig
from .decide.policies import Policy
from .decide.scheduler import Decision, PendingResources, place
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
        pending: PendingResources,
        policy: Policy,
        config: EngineConfig,
    ) -> None:
        self._store, self._vms, self._sync = store, vms, vmsync
        self._jobs, self._auditor, self._live = jobs, auditor, live
        self._monitors, self._pending, self._policy = monitors, pending, policy
        self._config = config

    # -- definitions -------------------------------------------------------------------------

    async def add_vm(self, spec: Mapping[str, Any]) -> Vm:
        """Define a VM (see ``IEngine.add_vm``)."""
        static = domain.vm_from_spec(spec)
        vm = await self._store.add_vm(static)
        self._vms.put(vm)
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
        self._pending.release(str(vm_id))
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

    def views(self) -> list[Any]:
        """The scheduler's snapshot of every host, now."""
        return [
            snapshot.host_view(m.row, m.state.value,
                               snapshot.load_of(self._vms.keyed_on_host(m.id), self._pending),
                               cpu_over_commit_seconds=m.cpu_seconds())
            for m in self._monitors.values()
        ]

    def _decide(self, vm: Vm, *, only_host: UUID | None, current: UUID | None) -> Decision:
        if only_host is not None:
            self._monitor(only_host)
            pinned = vm.static.pinned_host
            if pinned is not None and pinned != only_host:
                raise ActionRefused(f"VM {vm.name!r} is pinned to another host ({pinned})")
        request = snapshot.vm_request(vm.static, only_host=only_host, current_host=current)
        return place(request, self.views(), self._policy, self._pending)

    async def _refuse(self, kind: AuditType, vm: Vm, decision: Decision) -> None:
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

        async def prepare() -> Prepared:
            current = await self._vm(vm_id)
            if current.dynamic.external:
                raise ActionRefused(f"VM {vm.name!r} is external: the engine does not run it")
            if current.dynamic.status is not VmStatus.DOWN:
                raise ActionRefused(f"VM {vm.name!r} is {current.dynamic.status}, not Down")
            decision = self._decide(current, only_host=host_id, current=None)
            if decision.host is None:
                await self._refuse(AuditType.VM_START_REFUSED, current, decision)
            return Prepared((current, decision), lambda: self._pending.release(str(vm_id)))

        return await self._submit("start", vm, key, prepare, self._run_start)

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
        self._pending.release(str(vm.id))
        event = audit_event(AuditType.VM_START_FAILED, vm_id=vm.id, host_id=host.id,
                            vm=vm.name, host=host.name, reason=reason)
        await self._vms.apply(VmDynamic(vm.id, VmStatus.DOWN, exit_status="error",
                                        exit_message=reason), force=True, event=event)

    # -- stop, shutdown, pause, resume -------------------------------------------------------

    async def _simple(self, action: str, vm_id: UUID, key: str | None, *,
                      allowed: frozenset[VmStatus], verb: str, params: dict[str, Any],
                      target: frozenset[VmStatus], timeout: float, what: str) -> Job:
        vm = await self._vm(vm_id)

        async def prepare() -> Prepared:
            current = await self._vm(vm_id)
            if current.dynamic.status not in allowed:
                raise ActionRefused(f"cannot {action} VM {vm.name!r}: it is "
                                    f"{current.dynamic.status}")
            return Prepared((current, self._host_of(current)))

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

    def stop_vm(self, vm_id: UUID, *, key: str | None) -> Awaitable[Job]:
        """Power the VM off (``VM.destroy``); done once it is Down."""
        return self._simple("stop", vm_id, key, allowed=RUNNING | {VmStatus.WAIT_FOR_LAUNCH,
                            VmStatus.UNKNOWN, VmStatus.NOT_RESPONDING}, verb="VM.destroy",
                            params={}, target=frozenset({VmStatus.DOWN}),
                            timeout=self._config.stop_timeout, what="stop")

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
            decision = self._decide(current, only_host=host_id, current=source.id)
            if decision.host is None:
                await self._refuse(AuditType.VM_MIGRATION_REFUSED, current, decision)
            return Prepared((current, source, decision),
                            lambda: self._pending.release(str(vm_id)))

        return await self._submit("migrate", vm, key, prepare, self._run_migrate)

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
            self._pending.release(str(vm.id))
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
        finally:
            self._pending.release(str(vm.id))
        if now.dynamic.run_on_host == dest.id:
            await self._auditor.record(AuditType.VM_MIGRATION_DONE, **ids)
            return {"host_id": str(dest.id), "host": dest.name}
        reason = f"the VM is {now.dynamic.status} on host {source.name}"
        await self._auditor.record(AuditType.VM_MIGRATION_FAILED, **ids, reason=reason)
        raise JobFailed(f"migration of VM {vm.name!r} to {dest.name} failed: {reason}")

