"""Pure: restarting highly available VMs (oVirt's ``HaAutoStartVmsRunner``, retried forever).

Which VMs: an HA VM joins the restart queue when it is **proven** Down for an error: it crashed,
its host was fenced, its host answered and does not run it, or a restart attempt failed. A VM
shut down by its user (from inside the guest or through the engine) is not restarted, and a VM
in Unknown is never in the queue: nothing may start it while its old copy may still run.

How, on every tick:

- by priority, highest first (then by name); a VM waits while VMs of higher priority in the
  queue are not Up yet, but for at most ``max_blocked_on_priority`` seconds since it was queued;
- on the host the scheduler chooses (:func:`engine.decide.placing.place_vm`: the same filters,
  weights and pending ledger as any start), never more than ``max_starts_per_host`` starts in
  flight per host (a VM that only waits for a slot does not count an attempt);
- a refusal by the scheduler is retried every ``restart_short_interval`` seconds, then after
  ``restart_short_tries`` attempts every ``restart_long_interval`` seconds, forever (oVirt's
  lesson, ``reference/engine-peers.md`` §8 item 4: HA starts retry through filter failures);
  a host coming Up retries at once;
- a start that fails on a host is rerun at once elsewhere (that host avoided), up to
  ``max_reruns`` hosts, then backs off like a refusal.

A VM leaves the queue when it is reported Up (an event gives the time since its trouble began:
the HA latency), or when the user stops it.
"""

from __future__ import annotations

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from .clusterstate import ClusterState, ExitReason, Operation, RestartProgress, VmRecord
from .commands import MarkVmDown, StartVm
from .placing import choice_text, place_vm, refusal_text


def queue(state: ClusterState, vm: VmRecord, now: float, reason: str) -> None:
    """Add ``vm`` to the restart queue (it is HA and proven Down for an error)."""
    if vm.restart is None:
        vm.restart = RestartProgress(queued_at=now, reason=reason, next_try=now)
        state.note(T.HA_VM_RESTART_QUEUED, vm=vm.id, reason=reason)


def order(state: ClusterState) -> list[VmRecord]:
    """:returns: the queued VMs in restart order: priority descending, then name."""
    queued = [vm for vm in state.vms.values() if vm.restart is not None]
    return sorted(queued, key=lambda vm: (-vm.priority, vm.name, vm.id))


def wake(state: ClusterState, now: float) -> None:
    """A host came Up: queued VMs waiting for a retry try again at once."""
    for vm in state.vms.values():
        if vm.restart is not None and vm.restart.next_try > now:
            vm.restart.next_try = now


def tick(state: ClusterState, now: float) -> None:
    """Start every queued VM that is due, within priorities and limits."""
    queued = order(state)
    for vm in queued:
        progress = vm.restart
        assert progress is not None
        if vm.status is not VmStatus.DOWN or vm.op is not None or now < progress.next_try:
            continue
        higher = [o.name for o in queued if o.priority > vm.priority and o.restart is not None]
        if higher and now - progress.queued_at < state.settings.max_blocked_on_priority:
            if not progress.blocked_noted:
                progress.blocked_noted = True
                bound = state.settings.max_blocked_on_priority
                waiting = f"{', '.join(higher)} (for at most {bound:g} s)"
                state.note(T.HA_VM_RESTART_BLOCKED, vm=vm.id, waiting=waiting)
            continue
        _try(state, vm, progress, now)


def _try(state: ClusterState, vm: VmRecord, progress: RestartProgress, now: float) -> None:
    placement = place_vm(state, state.request(vm, avoid=progress.avoid), now, kind="start")
    decision = placement.decision
    if decision.host is None:
        if placement.slot_wait:
            if not progress.waiting_noted:
                progress.waiting_noted = True
                state.note(T.HA_VM_RESTART_WAITING, vm=vm.id, reason=refusal_text(decision))
            return
        _failed(state, vm, progress, now, refusal_text(decision), rerun=False)
        return
    progress.waiting_noted = False
    host = decision.host
    vm.status, vm.host, vm.exit = VmStatus.WAIT_FOR_LAUNCH, host, None
    vm.op = Operation("start", host, now, now + state.settings.start_timeout)
    reason = f"{progress.reason}; {choice_text(decision)}"
    state.emit(StartVm(vm.id, host, reason, decision))
    state.note(
        T.HA_VM_RESTART,
        host=host,
        vm=vm.id,
        attempt=progress.attempts + 1,
        reason=reason,
        explanation=decision.summary(),
    )


def _failed(
    state: ClusterState,
    vm: VmRecord,
    progress: RestartProgress,
    now: float,
    why: str,
    *,
    rerun: bool,
) -> None:
    settings = state.settings
    progress.attempts += 1
    if rerun and len(progress.avoid) < settings.max_reruns:
        delay = 0.0
    else:
        short = progress.attempts < settings.restart_short_tries
        delay = settings.restart_short_interval if short else settings.restart_long_interval
        progress.avoid = frozenset()
    progress.next_try = now + delay
    when = f"in {delay:g} s" if delay else "at once, on another host"
    state.note(T.HA_VM_RESTART_RETRY, vm=vm.id, attempt=progress.attempts, reason=why, when=when)


def started(state: ClusterState, vm: VmRecord, now: float) -> None:
    """``vm`` is reported Up where it was started: its start (and restart) is done."""
    vm.op = None
    state.pending.release(vm.id)
    progress = vm.restart
    if progress is None:
        return
    began = vm.lost_at if vm.lost_at is not None else progress.queued_at
    vm.restart, vm.lost_at = None, None
    state.note(T.HA_VM_RESTARTED, host=vm.host, vm=vm.id, seconds=f"{round(now - began, 1):g}")


def start_failed(state: ClusterState, vm: VmRecord, now: float, why: str) -> None:
    """A start of ``vm`` failed (or timed out): it is Down; a queued VM is rerun or retried."""
    host = vm.op.host if vm.op is not None else vm.host
    vm.op = None
    state.pending.release(vm.id)
    if vm.status is VmStatus.UNKNOWN:
        return  # its host went silent meanwhile: the failure proves nothing
    vm.status, vm.host, vm.exit = VmStatus.DOWN, None, ExitReason.START_FAILED
    state.emit(MarkVmDown(vm.id, host, ExitReason.START_FAILED, why))
    progress = vm.restart
    if progress is None:
        state.note(T.VM_START_FAILED, host=host, vm=vm.id, reason=why)
        if vm.ha:  # the user wants it up and it failed: HA keeps trying, elsewhere first
            queue(state, vm, now, f"its start on host {state.host_name(host)} failed: {why}")
            if vm.restart is not None and host is not None:
                vm.restart.avoid = frozenset({host})
        return
    if host is not None:
        progress.avoid = progress.avoid | {host}
    why = f"start on host {state.host_name(host)} failed: {why}"
    _failed(state, vm, progress, now, why, rerun=True)
