"""Helpers for the balancer's tests: clusters made from VM specs, and plan → apply rounds.

Imported as a top-level module by ``test_balance.py`` and ``test_powersave.py``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from engine.decide.affinity import AffinityGroup, violations
from engine.decide.balance import (
    BalanceLimits,
    BalancePlan,
    MoveHistory,
    VmPlacement,
    apply_moves,
    plan_moves,
)
from engine.decide.model import HOST_UP, HostView
from engine.decide.policies import Policy
from engine.decide.utilization import cpu_band_since, cpu_over_commit_seconds

#: A VM spec: (id, CPU % of its vCPUs, MiB, vCPUs, migratable).
Spec = tuple


def cluster(
    layout: dict[str, list[Spec]], *, cpus: int = 4, hot_for: float = 300.0, **host_kw: Any
) -> tuple[list[HostView], list[VmPlacement]]:
    """
    :param layout: host id → its VMs, made with :func:`spec`.
    :returns: Up hosts named ``host-<id>`` (``cpus`` CPUs, 16 GiB) whose load, memory, counts
        are their VMs' sums, hot for ``hot_for`` seconds when at or above 80 %; and the VMs.
    """
    hosts, vms = [], []
    for host_id, specs in layout.items():
        mine = []
        for spec in specs:
            vm_id, cpu, mib, vcpus, migratable = spec
            mine.append(VmPlacement(vm_id, f"vm-{vm_id}", host_id, mib, vcpus, cpu, migratable))
        load = sum(v.cpu_percent * v.vcpus / cpus for v in mine)
        hosts.append(
            HostView(
                host_id, f"host-{host_id}", HOST_UP, cpus, 16384, 16384,
                memory_committed_mib=sum(v.memory_mib for v in mine),
                cpu_load_percent=load, vm_count=len(mine),
                vcpus_committed=sum(v.vcpus for v in mine),
                cpu_over_commit_seconds=hot_for if load >= 80 else 0.0,
                **host_kw,
            )
        )  # fmt: skip
        vms += mine
    return hosts, vms


def spec(vm_id: str, cpu: float, mib: int = 1024, vcpus: int = 1, migratable: bool = True) -> Spec:
    """:returns: a VM spec for :func:`cluster`."""
    return (vm_id, cpu, mib, vcpus, migratable)


def hard_broken(groups: list[AffinityGroup], vms: list[VmPlacement]) -> set[tuple[str, str]]:
    """:returns: (group, rule) of every broken hard rule."""
    return {
        (v.group.name, v.rule) for v in violations(groups, {x.id: x.host for x in vms}) if v.hard
    }


def check_plan(
    plan: BalancePlan, hosts, vms, groups, policy: Policy, limits, history: MoveHistory, now: float
) -> None:
    """Every move of ``plan`` keeps the destination under the ceiling, moves a migratable VM at
    most once, never reverses a recent move, and no hard rule breaks that held before."""
    ceiling = policy.parameters.high_utilization - limits.cpu_margin
    by_id = {v.id: v for v in vms}
    moved = [m.vm for m in plan.moves]
    assert len(moved) == len(set(moved))
    recent = {
        (r.vm, r.src) for r in history.records if now - r.time < limits.reverse_window_seconds
    }
    for m in plan.moves:
        assert m.dst_load_after <= ceiling + 1e-6
        assert m.dst_free_mib_after >= 0
        assert by_id[m.vm].migratable and by_id[m.vm].host == m.src
        assert (m.vm, m.dst) not in recent
    assert all(n <= limits.max_out_per_host for n in Counter(m.src for m in plan.moves).values())
    assert all(n <= limits.max_in_per_host for n in Counter(m.dst for m in plan.moves).values())
    _, after = apply_moves(hosts, vms, plan.moves)
    assert hard_broken(groups, after) <= hard_broken(groups, vms)


def rerun(hosts, vms, groups, policy, rounds: int, limits: BalanceLimits | None = None):
    """Plan, apply, advance 60 s, repeat; CPU bands tracked as the monitor would.

    :returns: the history, the final hosts and VMs, and the number of moves per round.
    """
    limits = limits or BalanceLimits()
    params = policy.parameters
    band = {h.id: cpu_band_since(None, h.cpu_load_percent, params, -h.cpu_over_commit_seconds)
            for h in hosts}  # fmt: skip
    history, now, per_round = MoveHistory(), 0.0, []
    for _ in range(rounds):
        hosts = [
            dataclasses.replace(h, cpu_over_commit_seconds=cpu_over_commit_seconds(band[h.id], now))
            for h in hosts
        ]
        plan = plan_moves(hosts, vms, policy, groups, history, now, max_moves=10, limits=limits)
        check_plan(plan, hosts, vms, groups, policy, limits, history, now)
        per_round.append(len(plan.moves))
        history = history.record_moves(plan.moves, now)
        hosts, vms = apply_moves(hosts, vms, plan.moves)
        now += 60.0
        band = {h.id: cpu_band_since(band[h.id], h.cpu_load_percent, params, now) for h in hosts}
    return history, hosts, vms, per_round
