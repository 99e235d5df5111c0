"""Pure: the load balancer, a cluster snapshot in, a multi-move plan with reasons out.

:func:`plan_moves` plans every migration the cluster needs now, not one per cycle as oVirt does
(one VM per cluster per minute) nor one at a time as Proxmox does. Each move is chosen against
the cluster *as predicted after the moves before it* (:class:`~engine.decide.moves.ClusterModel`),
so a plan never sends two VMs onto a host that can take one.

The passes, in order:

1. **Affinity repair** (:func:`repair_affinity`): hard rules first, then soft ones by priority;
   a soft rule is repaired only by a move that leaves no host over-utilized.
2. **The policy's balancer** (a *relief* pass per trigger, :func:`relieve`):

   - ``evenly_distributed``: CPU (hosts at or above HighUtilization for
     CpuOverCommitDurationMinutes, or more than LoadSpreadThreshold points above the mean), the
     vCPU:CPU ratio (VCpuToPhysicalCpuRatio), then memory (MaxFreeMemoryForOverUtilized);
   - ``vm_evenly_distributed``: VM counts (HighVmCount, MigrationThreshold);
   - ``power_saving``: relief onto the fullest host that fits, then consolidation of
     under-utilized hosts (:mod:`engine.decide.powersave`).

A relief pass takes the neediest source, and moves the VM to the destination that lowers the
busier of the two hosts the most (the *gain*); it keeps going while the source still needs relief
and a move gains at least the hysteresis margin. Anti-thrash, all on by default
(:class:`~engine.decide.moves.BalanceLimits`):

- **predicted post-move load**: a destination ends at most at the ceiling (the threshold minus the
  margin), so it never becomes a source itself;
- **hysteresis**: a source is relieved to the ceiling, not just under the threshold, and a move
  must gain at least the margin;
- **no ping-pong**: a VM moved within the cooldown does not move, and no VM goes back to a host it
  left within the reverse window. Every move also lowers the busier host of its pair, so the
  hosts' loads sorted highest first fall lexicographically with each move: a plan, and a series
  of plans on steady loads, ends.

Sources and triggers come from :func:`engine.decide.utilization.classify`; its per-host reasons
start each host's notes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import affinity
from .affinity import AffinityGroup, Polarity, Violation
from .model import HostView
from .moves import (
    BalanceLimits,
    BalancePlan,
    ClusterModel,
    Move,
    MoveHistory,
    MoveRecord,
    VmPlacement,
    apply_moves,
)
from .policies import Policy, PolicyError
from .utilization import Utilization, classify

__all__ = [
    "BalanceLimits",
    "BalancePlan",
    "ClusterModel",
    "Metric",
    "Move",
    "MoveHistory",
    "MoveRecord",
    "VmPlacement",
    "apply_moves",
    "plan_moves",
    "relieve",
    "repair_affinity",
]


def plan_moves(
    hosts: Sequence[HostView],
    vms: Sequence[VmPlacement],
    policy: Policy,
    groups: Sequence[AffinityGroup] = (),
    history: MoveHistory = MoveHistory(),  # noqa: B008 - immutable
    now: float = 0.0,
    *,
    max_moves: int = 10,
    limits: BalanceLimits = BalanceLimits(),  # noqa: B008 - immutable
    in_flight: Sequence[MoveRecord] = (),
) -> BalancePlan:
    """
    Plan the migrations the cluster needs now under ``policy``.

    :param hosts: every host of the cluster (only Up hosts give or take VMs).
    :param vms: the running VMs and where they run.
    :param policy: the cluster policy; its balancer decides what balanced means.
    :param groups: the cluster's affinity groups.
    :param history: past moves (for the cooldown and the reverse window).
    :param now: the time of the snapshot, in the same clock as ``history``.
    :param max_moves: moves in this plan at most (how many migrations the shell will start).
    :param limits: per-host limits and the anti-thrash settings.
    :param in_flight: migrations still under way: they count against the per-host limits and
        their VMs do not move.
    :returns: the plan: moves with reasons and predicted loads, notes per host, whether it
        converged.
    :raises ValueError: when two hosts share an id.
    :raises engine.decide.policies.PolicyError: for a balancer this module does not know.
    """
    model = ClusterModel(
        hosts, vms, policy, groups, history, now, limits, max_moves=max_moves, in_flight=in_flight
    )
    util = classify(hosts, policy)
    for host, notes in util.explanations.items():
        for text in notes:
            model.note(host, text)
    if policy.balancer is None:
        return model.plan()
    strategy = _strategy(policy.balancer)
    if len(model.up) < 2:
        for host in model.up:
            model.note(host, "fewer than two Up hosts: nothing to balance")
        return model.plan()
    strategy(model, util)
    return model.plan()


def _strategy(balancer: str) -> Callable[[ClusterModel, Utilization], None]:
    if balancer == "power_saving":
        from .powersave import consolidate  # powersave builds on this module

        return consolidate
    try:
        return _STRATEGIES[balancer]
    except KeyError:
        known = ", ".join([*_STRATEGIES, "power_saving"])
        raise PolicyError(f"unknown balancer {balancer!r} (known: {known})") from None


# -- metrics and the relief pass ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    """
    What a relief pass evens out: a value per host (higher is busier) and how much one VM adds.

    :ivar kind: the move kind it produces (``cpu``, ``memory``, ...).
    :ivar value: host → its value in the model now.
    :ivar delta: (VM, host) → what the VM adds to that host's value.
    :ivar margin: the least gain worth a move (hysteresis).
    :ivar show: value → text, for reasons.
    """

    kind: str
    value: Callable[[ClusterModel, str], float]
    delta: Callable[[ClusterModel, VmPlacement, str], float]
    margin: float
    show: Callable[[float], str]


def cpu_metric(model: ClusterModel) -> Metric:
    """:returns: CPU load in percent; margin: :attr:`BalanceLimits.cpu_margin`."""
    return Metric(
        "cpu",
        lambda m, h: m.load[h],
        lambda m, vm, h: m.share(vm, h),
        model.limits.cpu_margin,
        lambda x: f"{x:.1f}% CPU",
    )


def memory_metric(model: ClusterModel) -> Metric:
    """:returns: schedulable memory (negated: less is busier); margin in MiB."""
    return Metric(
        "memory",
        lambda m, h: -m.free[h],
        lambda m, vm, h: vm.memory_mib,
        model.limits.memory_margin_mib,
        lambda x: f"{-x:.0f} MiB schedulable",
    )


def count_metric(model: ClusterModel) -> Metric:
    """:returns: VMs per host; any move from a host with two more VMs gains one."""
    return Metric(
        "vm_count", lambda m, h: m.count[h], lambda m, vm, h: 1, 1, lambda x: f"{x:g} VMs"
    )


def ratio_metric(model: ClusterModel) -> Metric:
    """:returns: vCPUs per CPU; any reduction counts."""
    return Metric(
        "vcpu_ratio",
        lambda m, h: m.vcpus[h] / m.cpus(h),
        lambda m, vm, h: vm.vcpus / m.cpus(h),
        1e-9,
        lambda x: f"{x:.2f} vCPUs/CPU",
    )


def relieve(
    model: ClusterModel,
    metric: Metric,
    needs: Callable[[str], str | None],
    *,
    pack: bool = False,
    last_resort: Callable[[str], bool] = lambda host: False,
    accepts: Callable[[str], bool] = lambda host: True,
) -> None:
    """
    Move VMs off the hosts that need relief, neediest first, until none does or no move helps.

    :param needs: host → why it still needs relief in the model now, or None.
    :param pack: choose the fullest destination that fits (power saving) instead of the one that
        evens the pair best.
    :param last_resort: host → whether a soft affinity rule may be broken to relieve it (only for
        real overload) when nothing else moves.
    :param accepts: host → whether it may be a destination of this pass at all (before the
        checks every move passes).
    """
    done: set[str] = set()
    while True:
        todo = [h for h in model.up if h not in done and needs(h)]
        if not todo:
            return
        if model.full():
            model.limited = True
            return
        src = max(todo, key=lambda h: (metric.value(model, h), model.name(h)))
        why = needs(src) or ""
        outcome = _best_move(model, metric, src, why, pack, accepts, break_soft=False)
        if outcome == "none" and last_resort(src):
            outcome = _best_move(model, metric, src, why, pack, accepts, break_soft=True)
        if outcome == "moved":
            continue
        done.add(src)
        if outcome == "none" and src not in model.stuck:
            model.stuck.append(src)
            model.note(
                src, f"stays a {metric.kind} source: {_why_stuck(model, metric, src, accepts)}"
            )


def _candidates(
    model: ClusterModel, metric: Metric, src: str, pack: bool, accepts: Callable[[str], bool]
) -> list[tuple[tuple, VmPlacement, str, float]]:
    s = metric.value(model, src)
    dsts = [d for d in model.up if d != src and accepts(d)]
    found = []
    for vm in model.vms_on(src):
        if model.may_move(vm) is not None:
            continue
        s_after = s - metric.delta(model, vm, src)
        for dst in dsts:
            d_after = metric.value(model, dst) + metric.delta(model, vm, dst)
            gain = s - max(s_after, d_after)
            if gain < metric.margin or gain <= 0:
                continue
            if pack:
                key: tuple = (model.count[dst] == 0, -d_after, vm.memory_mib, vm.name, dst)
            else:
                key = (-gain, d_after, vm.memory_mib, vm.name, model.name(dst), dst)
            found.append((key, vm, dst, d_after))
    found.sort(key=lambda c: c[0])
    return found


def _best_move(
    model: ClusterModel,
    metric: Metric,
    src: str,
    why: str,
    pack: bool,
    accepts: Callable[[str], bool],
    *,
    break_soft: bool,
) -> str:
    """:returns: ``moved``, ``limited`` (a wanted move was held back by a limit) or ``none``."""
    if model.full():
        model.limited = True
        model.note(src, f"held back: the plan has its {model.max_moves} moves")
        return "limited"
    if model.outgoing[src] >= model.limits.max_out_per_host:
        model.limited = True
        model.note(src, f"held back: {model.limits.max_out_per_host} migrations out already")
        return "limited"
    s = metric.value(model, src)
    limited = False
    for _key, vm, dst, d_after in _candidates(model, metric, src, pack, accepts):
        if model.refusal(vm, dst, break_soft=break_soft) is not None:
            continue
        if model.limit_refusal(src, dst) is not None:
            limited = True
            continue
        s_after = s - metric.delta(model, vm, src)
        d_before = metric.value(model, dst)
        text = why
        if metric.kind != "cpu":
            text += (
                f"; {metric.kind}: {model.name(src)} {metric.show(s)} → {metric.show(s_after)}, "
                f"{model.name(dst)} {metric.show(d_before)} → {metric.show(d_after)}"
            )
        if break_soft:
            text += " (breaks a soft affinity rule: nothing else relieves this host)"
        model.apply(vm, dst, metric.kind, text)
        return "moved"
    if limited:
        model.limited = True
        model.note(src, "held back: the destinations have their migrations in")
        return "limited"
    return "none"


def _why_stuck(
    model: ClusterModel, metric: Metric, src: str, accepts: Callable[[str], bool]
) -> str:
    movable = [vm for vm in model.vms_on(src) if model.may_move(vm) is None]
    if not movable:
        held = [f"{vm.name}: {model.may_move(vm)}" for vm in model.vms_on(src)][:3]
        return "no VM may move (" + "; ".join(held or ["no known VMs"]) + ")"
    cands = _candidates(model, metric, src, False, accepts)
    if not cands:
        return f"no move lowers it by the margin {metric.show(metric.margin).split()[0]}"
    _key, vm, dst, _after = cands[0]
    return f"the best move, {vm.name} to {model.name(dst)}, is refused: {model.refusal(vm, dst)}"


# -- affinity repair ------------------------------------------------------------------------


def repair_affinity(model: ClusterModel, *, pack: bool = False) -> None:
    """
    Move VMs to repair broken affinity rules, hard ones first, then soft ones by priority. A
    repair move passes every check of :meth:`ClusterModel.refusal` (so it never over-utilizes a
    destination: a soft repair never unbalances); a hard repair may, as a last resort, make a
    soft rule worse. A VM that cannot be repaired is noted and left for the next plan.

    :param pack: prefer the fullest destination (power saving) over the least loaded.
    """
    failed: set[tuple[str, str, str]] = set()
    while True:
        progress = False
        found = affinity.violations(
            model.groups, model.where, model.vm_names, host_names=model.names, load=model.load
        )
        for v in found:
            for vm_id in v.vms:
                key = (v.group.name, v.rule, vm_id)
                if key in failed:
                    continue
                if model.full():
                    model.limited = True
                    return
                if _repair(model, v, vm_id, pack):
                    progress = True
                    break
                failed.add(key)
            if progress:
                break
        if not progress:
            return


def _fixes(model: ClusterModel, v: Violation, vm_id: str, dst: str) -> bool:
    group = v.group
    if v.rule == "host":
        return (dst in group.hosts) == (group.host_polarity is Polarity.POSITIVE)
    if group.vm_polarity is Polarity.POSITIVE:
        return dst == v.hosts[0]
    return not (model.on[dst] & group.vms)


def _repair(model: ClusterModel, v: Violation, vm_id: str, pack: bool) -> bool:
    vm = model.vms.get(vm_id)
    src = model.where.get(vm_id)
    if vm is None or src not in model.up:
        return False
    dsts = [d for d in model.up if d != src and _fixes(model, v, vm_id, d)]
    if pack:
        dsts.sort(key=lambda d: (model.count[d] == 0, -model.load[d], model.name(d)))
    else:
        dsts.sort(key=lambda d: (model.load[d] + model.share(vm, d), model.name(d)))
    why = f"affinity: repairs {v.reason}"
    held = None
    for break_soft in (False, True) if v.hard else (False,):
        for dst in dsts:
            if model.refusal(vm, dst, break_soft=break_soft) is not None:
                continue
            held = held or model.limit_refusal(src, dst)
            if model.limit_refusal(src, dst) is None:
                model.apply(vm, dst, "affinity", why)
                return True
    if held is not None:
        model.limited = True
        model.note(src, f"held back: {held}")
        return False
    blocked = model.refusal(vm, dsts[0]) if dsts else "no Up host would repair it"
    model.note(src, f"cannot repair {v.reason} by moving {vm.name}: {blocked}")
    return False


# -- the balancers --------------------------------------------------------------------------


def _cpu_trigger(model: ClusterModel, host: HostView, mean: float) -> str | None:
    p = model.p
    if host.vm_count < 1:
        return None
    load = host.cpu_load_percent
    if load >= p.high_utilization and host.cpu_over_commit_seconds >= p.duration_seconds:
        return (
            f"CPU {load:.1f}% ≥ HighUtilization {p.high_utilization}% for "
            f"{host.cpu_over_commit_seconds:.0f} s"
        )
    spread = p.load_spread_threshold
    if spread > 0 and load > mean + spread:
        return f"CPU {load:.1f}% > mean {mean:.1f}% + LoadSpreadThreshold {spread}"
    return None


def _evenly(model: ClusterModel, util: Utilization) -> None:
    """oVirt's evenly_distributed, predictive: CPU, then vCPU ratio, then memory."""
    p, lim = model.p, model.limits
    mean = model.mean_load()
    threshold = float(p.high_utilization)
    if p.load_spread_threshold > 0:
        threshold = min(threshold, mean + p.load_spread_threshold)
    model.ceiling = threshold - lim.cpu_margin
    repair_affinity(model)
    triggers = {h: r for h in model.up if (r := _cpu_trigger(model, model.hosts[h], mean))}
    # Only real overload (HighUtilization for the duration) may break a soft rule to get relief.
    overloaded = {h for h, r in triggers.items() if "HighUtilization" in r}

    def cpu_needs(h: str) -> str | None:
        if h in triggers and model.load[h] > model.ceiling:
            return f"cpu: {model.name(h)}: {triggers[h]} (relief to ≤ {model.ceiling:.1f}%)"
        return None

    relieve(model, cpu_metric(model), cpu_needs, last_resort=lambda h: h in overloaded)
    if p.vcpu_to_physical_cpu_ratio > 0:
        relieve(model, ratio_metric(model), lambda h: ratio_needs(model, h))
    if p.max_free_memory_for_over_utilized is not None:
        tight = set(util.memory_over_utilized)
        roomy = p.min_free_memory_for_under_utilized
        relieve(
            model,
            memory_metric(model),
            lambda h: memory_needs(model, h, tight),
            accepts=lambda h: roomy is None or model.free[h] > roomy,
        )


def ratio_needs(model: ClusterModel, h: str) -> str | None:
    """:returns: why ``h`` is over VCpuToPhysicalCpuRatio in the model now, or None."""
    ratio = model.p.vcpu_to_physical_cpu_ratio
    now = model.vcpus[h] / model.cpus(h)
    if model.count[h] >= 1 and now >= ratio:
        return (
            f"vcpu_ratio: {model.name(h)}: {now:.2f} vCPUs/CPU ≥ VCpuToPhysicalCpuRatio {ratio:g}"
        )
    return None


def memory_needs(model: ClusterModel, h: str, tight: set[str]) -> str | None:
    """
    :param tight: the hosts that were memory-over-utilized in the snapshot (the trigger).
    :returns: why ``h`` still needs memory relief in the model now, or None.
    """
    limit = model.p.max_free_memory_for_over_utilized
    if limit is None or h not in tight or model.count[h] < 2:
        return None
    want = limit + model.limits.memory_margin_mib
    if model.free[h] >= want:
        return None
    return (
        f"memory: {model.name(h)}: {model.free[h]} MiB schedulable < MaxFreeMemoryForOverUtilized "
        f"{limit} MiB (relief to ≥ {want} MiB)"
    )


def _vm_evenly(model: ClusterModel, util: Utilization) -> None:
    """oVirt's vm_evenly_distributed, predictive: VM counts."""
    p = model.p
    repair_affinity(model)

    def needs(h: str) -> str | None:
        fewest = min(model.count[x] for x in model.up)
        count = model.count[h]
        if count >= p.high_vm_count and count - fewest >= p.migration_threshold:
            return (
                f"vm_count: {model.name(h)}: {count} VMs ≥ HighVmCount {p.high_vm_count}, "
                f"{count - fewest} more than the emptiest host (≥ MigrationThreshold "
                f"{p.migration_threshold})"
            )
        return None

    relieve(model, count_metric(model), needs)


_STRATEGIES: dict[str, Callable[[ClusterModel, Utilization], None]] = {
    "evenly_distributed": _evenly,
    "vm_evenly_distributed": _vm_evenly,
}
