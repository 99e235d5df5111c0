"""Pure: power saving, consolidation onto fewer hosts and switching idle hosts off and on again.

Two decisions, both from a snapshot and the time:

- :func:`consolidate` is the ``power_saving`` balancer (what :func:`engine.decide.balance.
  plan_moves` runs for that policy): repair affinity, relieve over-utilized hosts onto the
  *fullest* host that stays under HighUtilization minus the margin, then empty the
  under-utilized hosts (CPU below LowUtilization for the duration, or more schedulable memory
  than MinFreeMemoryForUnderUtilized) onto fuller ones. A host is emptied only if *all* its VMs
  fit elsewhere (checked on a copy of the model first), so no plan moves half a host's VMs for
  nothing; VMs always flow from an emptier host to a fuller one, so consolidation never sends a
  VM back.
- :func:`plan_power_saving` adds oVirt's host power management
  (``EnableAutomaticHostPowerManagement``, ``HostsInReserve``): at most one
  :class:`PowerAction` per plan.

  - **power on** a host power saving switched off when capacity is short (VMs wait that no Up
    host can take, or an over-utilized host has nowhere to send a VM) — at once — or when the
    reserve of empty Up hosts (and hosts booting) is below HostsInReserve — after the host has
    been off for :attr:`PowerLimits.min_off_seconds`;
  - **maintenance and power off** one empty, idle, power-managed Up host when the reserve stays
    at least HostsInReserve without it, nothing is short, no host is booting, and within
    :attr:`PowerLimits.min_on_seconds` no host was powered on and capacity was never short nor
    down to the reserve (so hosts woken for bursts of load stay up while the bursts keep coming,
    instead of flapping: a host is switched off only after that long a calm).

The shell keeps a :class:`PowerHistory` and extends it with :meth:`PowerSavingPlan.recorded`
after each plan, which also records shortages.

Hosts an administrator put into maintenance are never powered on: only hosts whose last recorded
power action is ours.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from .affinity import AffinityGroup
from .balance import (
    BalanceLimits,
    BalancePlan,
    ClusterModel,
    MoveHistory,
    MoveRecord,
    VmPlacement,
    cpu_metric,
    memory_metric,
    memory_needs,
    plan_moves,
    ratio_metric,
    ratio_needs,
    relieve,
    repair_affinity,
)
from .model import HOST_UP, HostView
from .policies import Policy
from .utilization import Utilization, cpu_under_utilized, memory_under_utilized

#: Power actions.
POWER_OFF = "maintenance_and_power_off"
POWER_ON = "power_on"
#: Not an action: a record that capacity was short or at its minimum (waiting VMs, a stuck
#: host, the reserve at or under HostsInReserve) at that time, which holds power-offs back like a
#: power-on does. A history keeps only the latest one.
SHORTAGE = "shortage"

#: Host statuses of a host that is switched off (or on its way there).
OFF_STATUSES = frozenset({"Down", "Maintenance"})


# -- consolidation --------------------------------------------------------------------------


def consolidate(model: ClusterModel, util: Utilization) -> None:
    """
    The ``power_saving`` balancer: repair affinity, relieve over-utilized hosts by packing,
    then empty under-utilized hosts onto fuller ones.
    """
    p = model.p
    model.ceiling = p.high_utilization - model.limits.cpu_margin
    repair_affinity(model, pack=True)
    over = set(util.over_utilized)

    def cpu_needs(h: str) -> str | None:
        if h in over and model.load[h] > model.ceiling:
            return (
                f"cpu: {model.name(h)} over-utilized at {model.load[h]:.1f}% "
                f"(relief to ≤ {model.ceiling:.1f}%)"
            )
        return None

    relieve(model, cpu_metric(model), cpu_needs, pack=True, last_resort=lambda h: h in over)
    if p.vcpu_to_physical_cpu_ratio > 0:
        relieve(model, ratio_metric(model), lambda h: ratio_needs(model, h), pack=True)
    if p.max_free_memory_for_over_utilized is not None:
        tight = set(util.memory_over_utilized)
        relieve(model, memory_metric(model), lambda h: memory_needs(model, h, tight), pack=True)
    _empty_idle_hosts(model, util)


def _idle_reason(model: ClusterModel, h: str) -> str | None:
    host = model.hosts[h]
    return cpu_under_utilized(host, model.p) or memory_under_utilized(host, model.policy)


def _empty_idle_hosts(model: ClusterModel, util: Utilization) -> None:
    idle = [h for h in model.up if model.count[h] >= 1 and _idle_reason(model, h)]
    idle.sort(key=lambda h: (model.count[h], model.load[h], model.name(h)))
    emptying: set[str] = set()
    for h in idle:
        if model.incoming[h] or h in model.stuck:
            continue
        if model.full():
            model.limited = True
            return
        trial = _trial_empty(model, h, emptying)
        if isinstance(trial, str):
            model.note(h, f"not emptied: {trial}")
            continue
        emptying.add(h)
        why = (
            f"consolidate: {model.name(h)} is under-utilized ({_idle_reason(model, h)}); "
            f"emptying it ({len(trial)} VMs) onto fuller hosts"
        )
        for vm, dst in trial:
            if model.try_move(vm, dst, "consolidate", why) is None:
                break


def _fullness(model: ClusterModel, h: str) -> tuple[float, int, str]:
    return (model.load[h], model.count[h], model.name(h))


def _trial_empty(
    model: ClusterModel, h: str, emptying: set[str]
) -> list[tuple[VmPlacement, str]] | str:
    """:returns: where each VM of ``h`` would go (all of them), or why they cannot all go."""
    vms = model.vms_on(h)
    if model.count[h] > len(vms):
        return f"it runs {model.count[h] - len(vms)} VMs the balancer does not know or starting"
    for vm in vms:
        blocked = model.may_move(vm)
        if blocked is not None:
            return f"{vm.name} may not move: {blocked}"
    twin = model.copy()
    big = len(model.vms) + len(model.hosts) + 1
    twin.limits = replace(model.limits, max_in_per_host=big, max_out_per_host=big)
    twin.max_moves = big
    fuller = [
        d
        for d in model.up
        if d != h and d not in emptying and _fullness(model, d) > _fullness(model, h)
    ]
    placed: list[tuple[VmPlacement, str]] = []
    for vm in sorted(vms, key=lambda v: (-twin.share(v, h), -v.memory_mib, v.name)):
        fuller.sort(key=lambda d: (twin.count[d] == 0, -twin.load[d], twin.name(d)))
        dst = next((d for d in fuller if twin.refusal(vm, d) is None), None)
        if dst is None:
            first = twin.refusal(vm, fuller[0]) if fuller else "there is no fuller Up host"
            return f"{vm.name} fits on no fuller host ({first})"
        twin.apply(vm, dst, "consolidate", "")
        placed.append((vm, dst))
    return placed


# -- host power -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerAction:
    """
    Switch one host off or on.

    :ivar host: the host's id.
    :ivar action: :data:`POWER_OFF` (``maintenance_and_power_off``: move it to Maintenance, then
        power it off through its power management) or :data:`POWER_ON` (``power_on``: power it
        on, then activate it).
    :ivar reason: one sentence with the numbers (the audit event's text).
    """

    host: str
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class PowerRecord:
    """
    A power action that was carried out.

    :ivar host: the host's id.
    :ivar action: :data:`POWER_OFF`, :data:`POWER_ON` or :data:`SHORTAGE` (``host`` empty).
    :ivar time: when, in the engine's (virtual) seconds.
    """

    host: str
    action: str
    time: float


@dataclass(frozen=True, slots=True)
class PowerHistory:
    """
    Power actions power saving took, oldest first; immutable.

    :ivar records: the actions.
    """

    records: tuple[PowerRecord, ...] = ()

    def record(self, host: str, action: str, time: float) -> PowerHistory:
        """:returns: a new history with the action appended."""
        return PowerHistory((*self.records, PowerRecord(host, action, time)))

    def last(self, host: str) -> PowerRecord | None:
        """:returns: the latest action on ``host``, or None."""
        return next(
            (r for r in reversed(self.records) if r.host == host and r.action != SHORTAGE), None
        )

    def last_need(self) -> float | None:
        """:returns: when a host was last powered on or capacity was last short, or None."""
        return next(
            (r.time for r in reversed(self.records) if r.action in (POWER_ON, SHORTAGE)), None
        )


@dataclass(frozen=True, slots=True)
class PowerLimits:
    """
    Hysteresis for host power.

    :ivar min_on_seconds: a host powered on stays on at least this long, and no host is switched
        off this soon after any host was powered on.
    :ivar min_off_seconds: a host switched off stays off at least this long, unless capacity is
        short.
    :ivar boot_seconds: how long a host powered on may take to come Up; until then it counts
        toward the reserve (no second host is woken for the same need).
    """

    min_on_seconds: float = 1800.0
    min_off_seconds: float = 900.0
    boot_seconds: float = 900.0


@dataclass(frozen=True)
class PowerSavingPlan:
    """
    Moves and at most one power action.

    :ivar balance: the consolidation plan (moves, notes, converged).
    :ivar actions: the power actions (zero or one).
    :ivar notes: why power management did or did not act.
    :ivar shortage: why capacity was short or at its minimum (waiting VMs, a stuck host, the
        reserve at or under HostsInReserve), or None.
    """

    balance: BalancePlan
    actions: tuple[PowerAction, ...] = ()
    notes: tuple[str, ...] = ()
    shortage: str | None = None

    def recorded(self, history: PowerHistory, now: float) -> PowerHistory:
        """:returns: ``history`` with this plan's actions, and its shortage if any, at ``now``."""
        for action in self.actions:
            history = history.record(action.host, action.action, now)
        if self.shortage is not None:
            kept = tuple(r for r in history.records if r.action != SHORTAGE)
            history = PowerHistory((*kept, PowerRecord("", SHORTAGE, now)))
        return history


def plan_power_saving(
    hosts: Sequence[HostView],
    vms: Sequence[VmPlacement],
    policy: Policy,
    groups: Sequence[AffinityGroup] = (),
    history: MoveHistory = MoveHistory(),  # noqa: B008 - immutable
    now: float = 0.0,
    *,
    power_history: PowerHistory = PowerHistory(),  # noqa: B008 - immutable
    pm_hosts: Collection[str] = frozenset(),
    waiting_vms: int = 0,
    max_moves: int = 10,
    limits: BalanceLimits = BalanceLimits(),  # noqa: B008 - immutable
    power_limits: PowerLimits = PowerLimits(),  # noqa: B008 - immutable
    in_flight: Sequence[MoveRecord] = (),
) -> PowerSavingPlan:
    """
    Plan power saving: the consolidation moves and, with EnableAutomaticHostPowerManagement, at
    most one host to switch off or on.

    :param hosts: every host, in any status (Down and Maintenance ones may be powered on).
    :param pm_hosts: ids of the hosts power saving may switch (power management configured and
        the host left to the policy); others are never switched, but count in the reserve.
    :param power_history: the power actions taken so far.
    :param waiting_vms: VMs that wait to start or to move and that no Up host can take.
    :param power_limits: minimum on and off times, boot time.
    :returns: the moves (as :func:`~engine.decide.balance.plan_moves`) and the power action.
    """
    plan = plan_moves(
        hosts,
        vms,
        policy,
        groups,
        history,
        now,
        max_moves=max_moves,
        limits=limits,
        in_flight=in_flight,
    )
    if not policy.parameters.enable_automatic_host_power_management:
        return PowerSavingPlan(plan, notes=("EnableAutomaticHostPowerManagement is off",))
    action, notes, short = _power_decision(
        hosts, plan, policy, power_history, now, set(pm_hosts), waiting_vms, power_limits
    )
    return PowerSavingPlan(plan, () if action is None else (action,), tuple(notes), short)


def _power_decision(
    hosts: Sequence[HostView],
    plan: BalancePlan,
    policy: Policy,
    power: PowerHistory,
    now: float,
    pm: set[str],
    waiting: int,
    lim: PowerLimits,
) -> tuple[PowerAction | None, list[str], str | None]:
    reserve_target = policy.parameters.hosts_in_reserve
    receiving = {m.dst for m in plan.moves}
    empty = [
        h
        for h in hosts
        if h.status == HOST_UP and h.vm_count + h.pending_vms == 0 and h.id not in receiving
    ]
    booting = [h for h in hosts if h.status != HOST_UP and _booting(power, h.id, now, lim)]
    ours_off = [
        h for h in hosts if h.id in pm and h.status in OFF_STATUSES and _switched_off(power, h.id)
    ]
    reserve = len(empty) + len(booting)
    notes = [
        f"reserve: {len(empty)} empty Up hosts + {len(booting)} booting, "
        f"HostsInReserve {reserve_target}"
    ]
    short = _shortage(plan, waiting, hosts)
    if short is not None:
        if booting:
            notes.append(f"{short}; waiting for {', '.join(h.name for h in booting)} to come Up")
            return None, notes, short
        return (*_power_on(ours_off, power, now, None, short, notes), short)
    if reserve < reserve_target:
        why = f"the reserve is {reserve} empty hosts < HostsInReserve {reserve_target}"
        return (*_power_on(ours_off, power, now, lim.min_off_seconds, why, notes), why)
    if reserve > reserve_target and not booting:
        return (*_power_off(empty, pm, power, now, lim, reserve, reserve_target, notes), None)
    tight = None
    if reserve == reserve_target:
        tight = f"the reserve is down to HostsInReserve {reserve_target}"
    return None, notes, tight


def _booting(power: PowerHistory, host: str, now: float, lim: PowerLimits) -> bool:
    last = power.last(host)
    return last is not None and last.action == POWER_ON and now - last.time < lim.boot_seconds


def _switched_off(power: PowerHistory, host: str) -> bool:
    last = power.last(host)
    return last is not None and last.action == POWER_OFF


def _shortage(plan: BalancePlan, waiting: int, hosts: Sequence[HostView]) -> str | None:
    if waiting > 0:
        return f"{waiting} VMs wait that no Up host can take"
    if plan.stuck:
        names = {h.id: h.name for h in hosts}
        stuck = ", ".join(names.get(h, h) for h in plan.stuck)
        return f"over-utilized hosts have nowhere to send a VM ({stuck})"
    return None


def _power_on(
    candidates: list[HostView],
    power: PowerHistory,
    now: float,
    min_off: float | None,
    why: str,
    notes: list[str],
) -> tuple[PowerAction | None, list[str]]:
    def off_since(h: HostView) -> float:
        last = power.last(h.id)
        return last.time if last is not None else now

    ready = [h for h in candidates if min_off is None or now - off_since(h) >= min_off]
    if not ready:
        notes.append(
            f"{why}, but no host switched off by power saving can be powered on"
            + (" yet (minimum off time)" if candidates else "")
        )
        return None, notes
    # The biggest host first: it relieves the most; then the one off longest.
    host = min(ready, key=lambda h: (-h.cpus, -h.memory_total_mib, off_since(h), h.name))
    reason = f"power saving: {why}; powering on {host.name}"
    return PowerAction(host.id, POWER_ON, reason), notes


def _power_off(
    empty: list[HostView],
    pm: set[str],
    power: PowerHistory,
    now: float,
    lim: PowerLimits,
    reserve: int,
    target: int,
    notes: list[str],
) -> tuple[PowerAction | None, list[str]]:
    last_need = power.last_need()
    if last_need is not None and now - last_need < lim.min_on_seconds:
        notes.append(
            f"capacity was needed {now - last_need:.0f} s ago (a host powered on or short; "
            f"minimum on time {lim.min_on_seconds:.0f} s): none is switched off yet"
        )
        return None, notes
    candidates = [h for h in empty if h.id in pm]
    if not candidates:
        notes.append("the empty hosts above the reserve are not power-managed")
        return None, notes
    # The smallest host first: the bigger ones stay up to take load.
    host = min(candidates, key=lambda h: (h.cpus, h.memory_total_mib, h.name))
    reason = (
        f"power saving: {host.name} is empty and idle ({host.cpu_load_percent:.1f}% CPU) and "
        f"{reserve - 1} empty hosts stay in reserve (HostsInReserve {target}); "
        "maintenance, then power off"
    )
    return PowerAction(host.id, POWER_OFF, reason), notes
