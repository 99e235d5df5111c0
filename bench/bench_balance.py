"""Balancing benchmark: 100 simulated hosts, our predictive planner against one-move-per-round.

A pure simulation (no agents, no reactor): hosts are :class:`~engine.decide.model.HostView` rows
rebuilt every round from where the VMs run, one round is one balancing interval (60 s), each
plan's moves are applied at once and the CPU band clock (``cpu_over_commit_seconds``) is kept as
the engine's monitor keeps it. The cluster is skewed: ``--hot`` hosts run busy VMs (about 90 %
CPU), the others idle ones (about 20 %).

Rows, all in the same run and on the same cluster:

- ``ours``: :func:`engine.decide.balance.plan_moves` under ``evenly_distributed`` (its default
  LoadSpreadThreshold 20), at most ``--max-moves`` moves per round and 2 in / 2 out per host;
- ``ours, oVirt trigger``: the same with LoadSpreadThreshold 0 (act only on hosts over
  HighUtilization 80 % for 2 minutes);
- ``oVirt-like``: one move per round from the busiest host over 80 % for 2 minutes, its busiest
  VM whose destination (under 64 %) stays ≤ 80 % after it (oVirt's anti-bounce check);
- ``naive greedy``: one move per round from the most to the least loaded host, the VM that
  evens the pair best, no prediction, no hysteresis, no history, until the same goal as ours
  (no host over min(80 %, mean + 20)).

Steady loads: rounds until nothing more moves, moves, reversed moves (a VM back on a host it
left), the most moves of one VM, the final busiest host and spread against the initial ones, and
the time per plan. Noisy loads (``--noise``, each VM's usage redrawn around its mean every
round): moves in the last half of ``--noisy-rounds`` (steady-state churn) and reversed moves.

``python -m bench.bench_balance [--hosts 100] [--vms-per-host 20] [--hot 30] [--max-moves 50]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from engine.decide.balance import BalanceLimits, MoveHistory, VmPlacement, plan_moves
from engine.decide.model import HOST_UP, HostView
from engine.decide.policies import Policy, make_policy
from engine.decide.utilization import cpu_band_since, cpu_over_commit_seconds

ROUND = 60.0
CPUS = 32
MEMORY = 262144


@dataclass
class Cluster:
    """The simulated cluster: VMs with their mean usage, where they run, and the CPU band clock."""

    vms: list[VmPlacement]
    mean_cpu: dict[str, float]
    hosts: list[str]
    band: dict[str, tuple] | None = None

    def views(self, policy: Policy, now: float) -> list[HostView]:
        """:returns: the hosts as the engine would see them now (band clock updated)."""
        load = Counter()
        mem, count, vcpus = Counter(), Counter(), Counter()
        for v in self.vms:
            load[v.host] += v.cpu_percent * v.vcpus / CPUS
            mem[v.host] += v.memory_mib
            count[v.host] += 1
            vcpus[v.host] += v.vcpus
        p = policy.parameters
        if self.band is None:  # the hot hosts have been hot for five minutes already
            self.band = {h: cpu_band_since(None, load[h], p, now - 300) for h in self.hosts}
        self.band = {h: cpu_band_since(self.band[h], load[h], p, now) for h in self.hosts}
        return [
            HostView(
                h, h, HOST_UP, CPUS, MEMORY, MEMORY - mem[h],
                memory_committed_mib=mem[h], cpu_load_percent=load[h], vm_count=count[h],
                vcpus_committed=vcpus[h],
                cpu_over_commit_seconds=cpu_over_commit_seconds(self.band[h], now),
            )
            for h in self.hosts
        ]  # fmt: skip

    def move(self, vm_id: str, dst: str) -> None:
        """Run ``vm_id`` on ``dst`` from now on."""
        self.vms = [replace(v, host=dst) if v.id == vm_id else v for v in self.vms]

    def jitter(self, rng: random.Random, noise: float) -> None:
        """Redraw each VM's usage within ±``noise`` of its mean."""
        self.vms = [
            replace(v, cpu_percent=self.mean_cpu[v.id] * rng.uniform(1 - noise, 1 + noise))
            for v in self.vms
        ]


def make_cluster(hosts: int, per_host: int, hot: int, seed: int) -> Cluster:
    """
    :returns: ``hosts`` hosts of 32 CPUs with about ``per_host`` VMs each; the first ``hot`` at
        82–97 % CPU, the others at 5–30 % (VM usage scaled to hit each host's load).
    """
    rng = random.Random(seed)
    names = [f"host{i:03d}" for i in range(hosts)]
    vms = []
    for i, h in enumerate(names):
        target = rng.uniform(82, 97) if i < hot else rng.uniform(5, 30)
        mine = []
        for j in range(per_host + rng.randint(-3, 3)):
            vcpus = rng.choice([1, 2, 2, 4])
            mib = rng.choice([2048, 4096, 8192])
            mine.append(
                VmPlacement(f"{h}-vm{j:02d}", f"{h}-vm{j:02d}", h, mib, vcpus, rng.random())
            )
        scale = target / sum(v.cpu_percent * v.vcpus / CPUS for v in mine)
        vms += [replace(v, cpu_percent=v.cpu_percent * scale) for v in mine]
    return Cluster(vms, {v.id: v.cpu_percent for v in vms}, names)


def stats(views: list[HostView]) -> tuple[float, float, float]:
    """:returns: the busiest host's load, the standard deviation and max − min."""
    loads = [h.cpu_load_percent for h in views]
    return max(loads), statistics.pstdev(loads), max(loads) - min(loads)


def goal_met(views: list[HostView]) -> bool:
    """:returns: whether no host is over min(80 %, mean + 20): what ours aims at by default."""
    loads = [h.cpu_load_percent for h in views]
    return max(loads) <= min(80.0, statistics.fmean(loads) + 20)


Chooser = Callable[[list[HostView], Cluster, float, MoveHistory], list[tuple[str, str, str]]]


def ours(policy: Policy, max_moves: int) -> Chooser:
    """:returns: our planner as a chooser of (vm, src, dst) moves."""

    def choose(views, cluster, now, history):
        plan = plan_moves(
            views, cluster.vms, policy, (), history, now, max_moves=max_moves,
            limits=BalanceLimits(),
        )  # fmt: skip
        return [(m.vm, m.src, m.dst) for m in plan.moves]

    return choose


def ovirt_like(views, cluster, now, history):
    """One move: oVirt's trigger (80 % for 2 min), busiest VM, destination < 64 % and ≤ 80 %."""
    over = [h for h in views if h.cpu_load_percent >= 80 and h.cpu_over_commit_seconds >= 120]
    if not over:
        return []
    src = max(over, key=lambda h: h.cpu_load_percent)
    targets = sorted(
        (h for h in views if h.cpu_load_percent < 64), key=lambda h: h.cpu_load_percent
    )
    for vm in sorted((v for v in cluster.vms if v.host == src.id), key=lambda v: -v.cpu_percent):
        for dst in targets:
            if dst.cpu_load_percent + vm.cpu_percent * vm.vcpus / CPUS <= 80:
                return [(vm.id, src.id, dst.id)]
    return []


def naive(views, cluster, now, history):
    """One move from the most to the least loaded host, the VM closest to half their gap."""
    if goal_met(views):
        return []
    src = max(views, key=lambda h: h.cpu_load_percent)
    dst = min(views, key=lambda h: h.cpu_load_percent)
    half = (src.cpu_load_percent - dst.cpu_load_percent) / 2
    on_src = [v for v in cluster.vms if v.host == src.id]
    vm = min(on_src, key=lambda v: abs(v.cpu_percent * v.vcpus / CPUS - half))
    return [(vm.id, src.id, dst.id)]


@dataclass
class Result:
    """One row's numbers."""

    rounds: int
    moves: int
    reversed: int
    max_per_vm: int
    final: tuple[float, float, float]
    plan_ms: list[float]
    late_moves: int = 0


def run(
    cluster: Cluster,
    choose: Chooser,
    policy: Policy,
    rounds: int,
    *,
    until_quiet: bool,
    rng: random.Random | None = None,
    noise: float = 0.0,
) -> Result:
    """Plan → apply each round; stop after a quiet round (steady) or after ``rounds``."""
    history, now, last_active, times, late = MoveHistory(), 0.0, 0, [], 0
    views = cluster.views(policy, now)
    for n in range(1, rounds + 1):
        start = time.perf_counter()
        moves = choose(views, cluster, now, history)
        times.append((time.perf_counter() - start) * 1000)
        for vm, src, dst in moves:
            history = history.record(vm, src, dst, now)
            cluster.move(vm, dst)
        if moves:
            last_active = n
            late += len(moves) if n > rounds // 2 else 0
        elif until_quiet:
            break
        if rng is not None:
            cluster.jitter(rng, noise)
        now += ROUND
        views = cluster.views(policy, now)
    per_vm = Counter(r.vm for r in history.records)
    return Result(
        last_active, len(history.records), len(history.reversals()),
        max(per_vm.values(), default=0), stats(views), times, late,
    )  # fmt: skip


def row(label: str, r: Result | None, initial: tuple[float, float, float]) -> str:
    """:returns: one table line."""
    if r is None:
        top, sd, spread = initial
        return f"{label:<44} {'':>6} {'':>6} {'':>5} {'':>6} {top:>7.1f} {sd:>6.1f} {spread:>7.1f}"
    top, sd, spread = r.final
    p50 = statistics.median(r.plan_ms)
    return (
        f"{label:<44} {r.rounds:>6} {r.moves:>6} {r.reversed:>5} {r.max_per_vm:>6} {top:>7.1f} "
        f"{sd:>6.1f} {spread:>7.1f} {p50:>8.2f} {max(r.plan_ms):>8.2f}"
    )


def main() -> None:
    """Run every row on the same cluster and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--vms-per-host", type=int, default=20)
    ap.add_argument("--hot", type=int, default=30)
    ap.add_argument("--max-moves", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1000, help="cap for the steady runs")
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--noisy-rounds", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    even = make_policy("evenly_distributed")
    ovirt_trigger = make_policy("evenly_distributed", {"LoadSpreadThreshold": 0})

    def fresh() -> Cluster:
        return make_cluster(args.hosts, args.vms_per_host, args.hot, args.seed)

    initial = stats(fresh().views(even, 0.0))
    n_vms = len(fresh().vms)
    print(f"{args.hosts} hosts × {CPUS} CPUs, {n_vms} VMs, {args.hot} hot hosts; 1 round = 60 s")
    head = (
        f"{'steady loads':<44} {'rounds':>6} {'moves':>6} {'rev':>5} {'max/VM':>6} "
        f"{'top %':>7} {'stdev':>6} {'max-min':>7} {'p50 ms':>8} {'max ms':>8}"
    )
    print(head + "\n" + "-" * len(head))
    print(row("initial", None, initial))
    rows: list[tuple[str, Chooser, Policy]] = [
        (f"ours: multi-move, ≤{args.max_moves}/round, spread 20", ours(even, args.max_moves), even),
        ("ours: oVirt trigger only (80 % for 2 min)", ours(ovirt_trigger, args.max_moves), even),
        ("oVirt-like: 1 move/round, 80 % for 2 min", ovirt_like, even),
        ("naive greedy: 1 move/round, most → least", naive, even),
    ]
    for label, choose, policy in rows:
        print(row(label, run(fresh(), choose, policy, args.rounds, until_quiet=True), initial))
    head = (
        f"{f'noisy loads (±{args.noise:.0%}, {args.noisy_rounds} rounds)':<44} "
        f"{'active':>6} {'moves':>6} {'rev':>5} {'max/VM':>6} {'top %':>7} {'stdev':>6} "
        f"{'max-min':>7} {'late':>8}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for label, choose, policy in (rows[0], rows[3]):
        r = run(fresh(), choose, policy, args.noisy_rounds, until_quiet=False,
                rng=random.Random(args.seed), noise=args.noise)  # fmt: skip
        line = row(label, r, initial).rsplit(maxsplit=2)[0]
        print(f"{line} {r.late_moves:>8}")
    print("rev: moves that took a VM back to a host it had left; late: moves in the last half")


if __name__ == "__main__":
    main()
