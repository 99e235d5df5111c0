"""Pure: the fencing ladder and the fencing storm guard.

A host that is NonResponsive (or was put in Maintenance while NonResponsive) and still holds VMs
in Unknown must be *proven* dead before any of them runs elsewhere: a VM never runs twice. The
proof is one of

- its power management answers a status query with "off" (power already lost: §9 of
  ``reference/engine-peers.md``, "treat confirmed power-off as fenced");
- a power fence confirmed the host off;
- its agent answers again (after a soft fence or by itself) and lists what really runs there:
  a VM it does not list is Down (that is :mod:`engine.decide.cluster`'s business, not this
  module's).

One *round* of the ladder, oVirt's ``VdsNotRespondingTreatment`` in our order:

1. a power status query (hosts with power management) and a **soft fence** (restart the agent
   over the host's management link) at the same time;
2. the agent was restarted: the host has ``soft_fence_return_wait`` seconds to answer;
3. soft fencing failed or the host stayed silent: **power fence** (off, confirmed off, then on
   again), if the host has power management;
4. no power management, power fencing failed, or its result is unknown: an alert, the VMs stay
   Unknown, and a new round after ``fence_quiet_time``.

Nothing is fenced while the **storm guard** holds: when at least ``storm_threshold_percent`` of
the hosts (and at least two) are Connecting or NonResponsive, many hosts did not die at once,
the network failed; fencing them would only power-cycle healthy hosts. One alert when the storm
begins, one event when it ends. Hosts counted: all but Installing, Maintenance and Removed ones.
Nothing is fenced either during ``startup_fence_delay`` after an engine restart, while links
reconnect, nor when fencing is disabled.

The functions here update a :class:`~engine.decide.clusterstate.ClusterState` and queue commands
and events in its outbox; the functions that take a fence outcome return the proof (a sentence)
when there is one, and the caller applies it (the host goes Down, its VMs are marked Down).
"""

from __future__ import annotations

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from . import facts
from .clusterstate import ClusterState, FenceProgress, FenceStage, HostRecord
from .commands import POWER, SOFT, ConfirmPowerStatus, FenceHost
from .hoststate import HostState

#: Host states that count towards the storm guard's total.
_COUNTED = frozenset(
    {
        HostState.UP,
        HostState.CONNECTING,
        HostState.NON_RESPONSIVE,
        HostState.PREPARING_FOR_MAINTENANCE,
        HostState.DOWN,
    }
)
_UNREACHABLE = frozenset({HostState.CONNECTING, HostState.NON_RESPONSIVE})


def needs_fencing(state: ClusterState, host: HostRecord) -> bool:
    """:returns: whether ``host`` must be proven dead: silent, and holding Unknown VMs."""
    if host.state not in (HostState.NON_RESPONSIVE, HostState.MAINTENANCE):
        return False
    return any(vm.status is VmStatus.UNKNOWN for vm in state.vms_on(host.id))


def unreachable_hosts(state: ClusterState) -> tuple[list[str], int]:
    """:returns: the names of the Connecting and NonResponsive hosts, and the hosts counted."""
    counted = [h for h in state.sorted_hosts() if h.state in _COUNTED]
    return [h.name for h in counted if h.state in _UNREACHABLE], len(counted)


def guard(state: ClusterState) -> None:
    """Start or end the storm guard, with its one alert or event."""
    settings = state.settings
    names, total = unreachable_hosts(state)
    stormy = (
        settings.storm_guard
        and len(names) >= 2
        and len(names) * 100 >= settings.storm_threshold_percent * total
    )
    if stormy and not state.storm:
        state.note(
            T.FENCING_SKIPPED_STORM,
            unreachable=len(names),
            total=total,
            hosts=", ".join(names),
            threshold=settings.storm_threshold_percent,
        )
    elif state.storm and not stormy:
        state.note(T.FENCING_RESUMED, unreachable=len(names), total=total)
    state.storm = stormy


def advance(state: ClusterState, host: HostRecord, now: float) -> None:
    """Take ``host``'s fencing ladder one step further if it is due."""
    fence = host.fence
    if fence.power_deadline is not None and now >= fence.power_deadline:
        fence.power_deadline = None
        fence.power = facts.POWER_UNKNOWN
    if not needs_fencing(state, host):
        overdue = fence.deadline is not None and now >= fence.deadline
        if fence.stage in (FenceStage.SOFT, FenceStage.FAILED) or (
            fence.stage is FenceStage.POWER and overdue
        ):
            host.fence = FenceProgress()  # nothing left to prove (its VMs were found)
        return
    if fence.stage is FenceStage.NONE or (
        fence.stage is FenceStage.FAILED and now >= (fence.quiet_until or 0.0)
    ):
        _start_round(state, host, now)
    elif fence.stage is FenceStage.SOFT:
        _check_soft(state, host, now)
    elif fence.stage is FenceStage.POWER and fence.deadline is not None and now >= fence.deadline:
        wait = f"{state.settings.power_timeout:g}"
        _round_failed(state, host, now, T.HOST_FENCE_STATUS_UNKNOWN, f"no answer within {wait} s")


def _held(state: ClusterState, host: HostRecord, now: float) -> bool:
    """:returns: whether fencing must wait (disabled, storm, startup delay), noting it once."""
    if not (state.settings.fencing_enabled and host.fencing_enabled):
        if not host.fence.alerted:
            host.fence.alerted = True
            state.note(T.HOST_FENCE_DISABLED, host=host.id)
        return True
    if state.storm:
        return True
    if now < state.fence_from:
        if not state.delay_noted:
            state.delay_noted = True
            state.note(T.FENCING_DELAYED_STARTUP, until=f"{state.fence_from:g}")
        return True
    return False


def _start_round(state: ClusterState, host: HostRecord, now: float) -> None:
    if _held(state, host, now):
        return
    fence = host.fence
    unknown = [vm.name for vm in state.vms_on(host.id) if vm.status is VmStatus.UNKNOWN]
    reason = f"NonResponsive with {len(unknown)} VM(s) in Unknown: {', '.join(unknown)}"
    if fence.rounds:
        reason += f"; round {fence.rounds + 1}"
    steps = "soft fencing (restarting its agent)"
    if host.power_management:
        state.emit(ConfirmPowerStatus(host.id, reason))
        fence.power_deadline = now + state.settings.power_timeout
        steps = f"asking its power management for the power status, and {steps}"
    state.emit(FenceHost(host.id, SOFT, reason))
    state.note(T.HOST_FENCE_STARTED, host=host.id, reason=reason, steps=steps)
    fence.stage = FenceStage.SOFT
    fence.deadline = now + state.settings.soft_fence_timeout
    fence.agent_restarted_at = None
    fence.alerted = False


def _check_soft(state: ClusterState, host: HostRecord, now: float) -> None:
    fence, settings = host.fence, state.settings
    restarted = fence.agent_restarted_at
    if restarted is not None and now >= restarted + settings.soft_fence_return_wait:
        wait = f"{settings.soft_fence_return_wait:g}"
        escalate(state, host, now, f"its agent was restarted but it did not answer within {wait} s")
    elif restarted is None and fence.deadline is not None and now >= fence.deadline:
        escalate(state, host, now, f"no outcome within {settings.soft_fence_timeout:g} s")


def escalate(state: ClusterState, host: HostRecord, now: float, why: str) -> None:
    """Soft fencing failed: power-fence the host, or end the round without proof."""
    state.note(T.HOST_FENCE_SOFT_FAILED, host=host.id, reason=why)
    fence = host.fence
    if not host.power_management:
        _round_failed(state, host, now, T.HOST_FENCE_NO_POWER_MANAGEMENT, why)
        return
    if state.storm or not (state.settings.fencing_enabled and host.fencing_enabled):
        host.fence = FenceProgress(rounds=fence.rounds)  # a new round once allowed again
        return
    power = f"; power management last said: {fence.power}" if fence.power else ""
    reason = f"soft fencing failed ({why}){power}"
    # a host the admin put in maintenance stays off: nobody wants it back yet
    power_on = state.settings.power_on_after_fence and host.maintenance is None
    state.emit(FenceHost(host.id, POWER, reason, power_on))
    state.note(T.HOST_FENCE_POWER_STARTED, host=host.id, reason=reason)
    fence.stage = FenceStage.POWER
    fence.deadline = now + state.settings.power_timeout


def _round_failed(state: ClusterState, host: HostRecord, now: float, kind: T, why: str) -> None:
    fence = host.fence
    quiet = state.settings.fence_quiet_time
    fence.stage = FenceStage.FAILED
    fence.deadline = None
    fence.quiet_until = now + quiet
    fence.rounds += 1
    fence.alerted = True
    state.note(kind, host=host.id, reason=why, quiet=f"{quiet:g}")


def power_seen(state: ClusterState, host: HostRecord, seen: facts.PowerSeen) -> str | None:
    """
    Take a power status answer.

    :returns: the proof when the host is off and must be proven dead, else None.
    """
    host.fence.power_deadline = None
    host.fence.power = seen.status
    detail = f" ({seen.detail})" if seen.detail else ""
    if seen.status == facts.POWER_OFF and needs_fencing(state, host):
        return f"its power management reports it is off{detail}"
    state.note(T.HOST_POWER_STATUS, host=host.id, status=f"{seen.status}{detail}")
    return None


def fence_done(
    state: ClusterState, host: HostRecord, done: facts.FenceDone, now: float
) -> str | None:
    """
    Take a fence outcome.

    :returns: the proof when a power fence confirmed the host off, else None.
    """
    fence = host.fence
    detail = done.detail or done.result
    if done.method == POWER:
        if done.result == facts.FENCED:
            return f"power confirmed off ({detail})"
        if fence.stage is FenceStage.POWER:
            kind = (
                T.HOST_FENCE_POWER_FAILED
                if done.result == facts.FAILED
                else (T.HOST_FENCE_STATUS_UNKNOWN)
            )
            _round_failed(state, host, now, kind, detail)
        return None
    if fence.stage is not FenceStage.SOFT or fence.agent_restarted_at is not None:
        return None  # a late answer of a round that has moved on
    if done.result == facts.RESTARTED:
        fence.agent_restarted_at = now
        wait = f"{state.settings.soft_fence_return_wait:g}"
        state.note(T.HOST_FENCE_SOFT_RESTARTED, host=host.id, wait=wait)
    else:
        escalate(state, host, now, detail)
    return None


def host_answered(state: ClusterState, host: HostRecord) -> None:
    """The host is Up again: its fencing ends (a power fence in flight still reports)."""
    fence = host.fence
    if fence.stage is FenceStage.SOFT and fence.agent_restarted_at is not None:
        state.note(T.HOST_FENCE_SOFT_SUCCEEDED, host=host.id)
    elif fence.stage in (FenceStage.SOFT, FenceStage.FAILED):
        state.note(T.HOST_FENCE_CANCELLED, host=host.id, reason="it answers again")
    if fence.stage is not FenceStage.POWER:
        host.fence = FenceProgress()


def fenced(host: HostRecord) -> None:
    """Record that ``host`` was proven dead."""
    host.fence = FenceProgress(stage=FenceStage.FENCED, rounds=host.fence.rounds)
