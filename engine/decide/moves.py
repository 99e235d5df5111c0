"""Pure: the balancer's working copy of a cluster, and the one check every planned move passes.

:class:`ClusterModel` starts from a snapshot (hosts, where each VM runs, affinity groups, the
history of past moves) and applies moves as a planner chooses them, so each choice sees the
*predicted* CPU load, schedulable memory, VM count and vCPUs of every host after the moves
before it. :meth:`ClusterModel.refusal` says whether one VM may move to one host, and why not:

- the VM is migratable, not moved already in this plan or still migrating, and was not moved
  within the cooldown (:attr:`BalanceLimits.cooldown_seconds`);
- the destination is another Up host the VM did not leave within the reverse window (a move
  never undoes a recent one);
- the VM fits: vCPUs, memory the host can promise;
- the destination does not become over-utilized: CPU load after the move at most the ceiling
  (HighUtilization, or the spread threshold, minus the hysteresis margin), schedulable memory at
  least MaxFreeMemoryForOverUtilized plus a margin, vCPU ratio below VCpuToPhysicalCpuRatio;
- hard affinity holds on the destination, and no soft rule gets worse (unless the caller allows
  it);
- per-plan limits: moves in all, migrations out of and into each host (in-flight ones count).

A VM's CPU load on a host is ``cpu_percent × vcpus / host CPUs`` (oVirt's predicted load), so a
move lowers the source by its share there and raises the destination by its share there.

The data types the planners return (:class:`Move`, :class:`BalancePlan`) and the history they
read (:class:`MoveHistory`) live here too; :mod:`engine.decide.balance` re-exports them.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from . import affinity
from .affinity import AffinityGroup
from .model import HOST_UP, HostView, VmRequest, schedulable_memory_mib
from .policies import Policy

# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VmPlacement:
    """
    One running VM as the balancer sees it.

    :ivar id: the VM's id.
    :ivar name: its name, for reasons.
    :ivar host: the id of the host it runs on.
    :ivar memory_mib: memory it is promised (what moves with it).
    :ivar vcpus: its virtual CPUs.
    :ivar cpu_percent: its CPU usage in percent of its own vCPUs (VDSM's ``cpuUser`` +
        ``cpuSys``), best averaged over CpuOverCommitDurationMinutes by the shell.
    :ivar migratable: False for VMs pinned to their host or otherwise not to be migrated.
    """

    id: str
    name: str
    host: str
    memory_mib: int
    vcpus: int
    cpu_percent: float = 0.0
    migratable: bool = True


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """
    A move that happened (or is under way).

    :ivar vm: the VM's id.
    :ivar src: the host it left.
    :ivar dst: the host it went to.
    :ivar time: when it started, in the engine's (virtual) seconds.
    """

    vm: str
    src: str
    dst: str
    time: float


@dataclass(frozen=True, slots=True)
class MoveHistory:
    """
    Past moves, oldest first: immutable, so a planner can hold one without copying.

    :ivar records: the moves.
    """

    records: tuple[MoveRecord, ...] = ()

    def record(self, vm: str, src: str, dst: str, time: float) -> MoveHistory:
        """:returns: a new history with the move appended."""
        return MoveHistory((*self.records, MoveRecord(vm, src, dst, time)))

    def record_moves(self, moves: Iterable[Move], time: float) -> MoveHistory:
        """:returns: a new history with every planned move recorded at ``time``."""
        added = tuple(MoveRecord(m.vm, m.src, m.dst, time) for m in moves)
        return MoveHistory(self.records + added)

    def since(self, time: float) -> MoveHistory:
        """:returns: only the moves at or after ``time`` (to bound the history's size)."""
        return MoveHistory(tuple(r for r in self.records if r.time >= time))

    def moves_of(self, vm: str) -> list[MoveRecord]:
        """:returns: ``vm``'s moves, oldest first."""
        return [r for r in self.records if r.vm == vm]

    def reversals(self) -> list[tuple[MoveRecord, MoveRecord]]:
        """
        :returns: every (earlier, later) pair of one VM's moves where the later one took it back
            to a host the earlier one took it from: the ping-pong the balancer must never plan.
        """
        found = []
        left: dict[str, list[MoveRecord]] = defaultdict(list)
        for r in self.records:
            found += [(earlier, r) for earlier in left[r.vm] if earlier.src == r.dst]
            left[r.vm].append(r)
        return found


@dataclass(frozen=True, slots=True)
class BalanceLimits:
    """
    How much a plan may do, and the anti-thrash settings. The defaults are the engine's.

    :ivar max_in_per_host: migrations into one host per plan, in-flight ones included
        (oVirt's default migration policy allows 2).
    :ivar max_out_per_host: migrations out of one host per plan, in-flight ones included.
    :ivar cooldown_seconds: a VM moved is not moved again for this long.
    :ivar reverse_window_seconds: a VM never goes back to a host it left this recently.
    :ivar cpu_margin: hysteresis in CPU percentage points: a move must lower the busier of its
        two hosts by at least this, a relieved host ends this far below its threshold, and a
        destination stays this far below it.
    :ivar memory_margin_mib: the same hysteresis for memory.
    """

    max_in_per_host: int = 2
    max_out_per_host: int = 2
    cooldown_seconds: float = 600.0
    reverse_window_seconds: float = 3600.0
    cpu_margin: float = 5.0
    memory_margin_mib: int = 256


# -- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """
    One planned migration, with its reason and the predicted state of both hosts after it
    (and after every move planned before it).

    :ivar vm: the VM's id.
    :ivar vm_name: its name.
    :ivar src: the host it leaves.
    :ivar dst: the host it goes to.
    :ivar kind: why, in one word: ``affinity``, ``cpu``, ``vcpu_ratio``, ``memory``,
        ``vm_count`` or ``consolidate`` (the audit event's type).
    :ivar reason: one sentence with names and numbers (the audit event's text).
    :ivar src_load_after: predicted CPU load of ``src``, percent.
    :ivar dst_load_after: predicted CPU load of ``dst``, percent.
    :ivar src_free_mib_after: predicted schedulable memory of ``src``.
    :ivar dst_free_mib_after: predicted schedulable memory of ``dst``.
    """

    vm: str
    vm_name: str
    src: str
    dst: str
    kind: str
    reason: str
    src_load_after: float
    dst_load_after: float
    src_free_mib_after: int
    dst_free_mib_after: int


@dataclass(frozen=True)
class BalancePlan:
    """
    What the balancer wants done now.

    :ivar policy: the policy's name.
    :ivar moves: the migrations, in the order they were chosen (each assumes the ones before).
    :ivar notes: host id → what the planner saw and did there (roles, stuck sources, limits).
    :ivar converged: True when the planner stopped because no allowed move would help; False
        when a limit (moves per plan, per-host migrations) held back a move it wanted.
    :ivar stuck: hosts that still need relief (over-utilized) but no VM of theirs may move.
    """

    policy: str
    moves: tuple[Move, ...] = ()
    notes: dict[str, list[str]] = field(default_factory=dict)
    converged: bool = True
    stuck: tuple[str, ...] = ()

    def summary(self) -> str:
        """:returns: one line for the plan, then one per move."""
        state = "converged" if self.converged else "more to do"
        lines = [f"balance under {self.policy!r}: {len(self.moves)} moves, {state}"]
        lines += [f"  {m.vm_name}: {m.reason}" for m in self.moves]
        return "\n".join(lines)


# -- the model ------------------------------------------------------------------------------


class ClusterModel:
    """
    The cluster as a plan predicts it, moves applied as they are chosen. Planners create one per
    plan and throw it away; nothing outside the plan sees it change.
    """

    def __init__(
        self,
        hosts: Sequence[HostView],
        vms: Sequence[VmPlacement],
        policy: Policy,
        groups: Sequence[AffinityGroup],
        history: MoveHistory,
        now: float,
        limits: BalanceLimits,
        *,
        max_moves: int,
        in_flight: Sequence[MoveRecord] = (),
    ) -> None:
        self.policy = policy
        self.p = policy.parameters
        self.limits = limits
        self.now = now
        self.max_moves = max_moves
        self.hosts = {h.id: h for h in hosts}
        if len(self.hosts) != len(hosts):
            raise ValueError("a host id appears twice in the snapshot")
        self.names = {h.id: h.name for h in hosts}
        self.vm_names = {v.id: v.name for v in vms}
        self.up = sorted((h.id for h in hosts if h.status == HOST_UP), key=self.name)
        self._init_state(hosts, vms)
        self.groups = tuple(groups)
        self.groups_of = {v.id: affinity.groups_of(v.id, self.groups) for v in vms}
        self.moves: list[Move] = []
        self.notes: dict[str, list[str]] = {h.id: [] for h in hosts}
        self.limited = False
        self.stuck: list[str] = []
        self._init_history(history, in_flight)
        self.ceiling = self.p.high_utilization - limits.cpu_margin

    def _init_state(self, hosts: Sequence[HostView], vms: Sequence[VmPlacement]) -> None:
        ratio = self.policy.memory_over_commit_percent
        self.load = {h.id: h.cpu_load_percent for h in hosts}
        self.free = {h.id: schedulable_memory_mib(h, ratio) for h in hosts}
        self.count = {h.id: h.vm_count + h.pending_vms for h in hosts}
        self.vcpus = {h.id: h.vcpus_committed + h.pending_vcpus for h in hosts}
        self.vms = {v.id: v for v in vms}
        self.where = {v.id: v.host for v in vms}
        self.on: dict[str, set[str]] = defaultdict(set)
        for v in vms:
            self.on[v.host].add(v.id)

    def _init_history(self, history: MoveHistory, in_flight: Sequence[MoveRecord]) -> None:
        window = self.now - self.limits.reverse_window_seconds
        self.last_moved: dict[str, float] = {}
        self.left: dict[str, dict[str, float]] = defaultdict(dict)
        for r in (*history.records, *in_flight):
            self.last_moved[r.vm] = max(r.time, self.last_moved.get(r.vm, r.time))
            if r.time >= window:
                self.left[r.vm][r.src] = max(r.time, self.left[r.vm].get(r.src, r.time))
        self.moved: set[str] = {r.vm for r in in_flight}
        self.outgoing = Counter(r.src for r in in_flight)
        self.incoming = Counter(r.dst for r in in_flight)
        self.in_flight = len(in_flight)

    # -- reading ----------------------------------------------------------------------------

    def name(self, key: str) -> str:
        """:returns: the name of a host id (the id when unknown)."""
        return self.names.get(key, key)

    def cpus(self, host: str) -> int:
        """:returns: the host's CPUs, at least 1."""
        return max(self.hosts[host].cpus, 1)

    def share(self, vm: VmPlacement, host: str) -> float:
        """:returns: the CPU load, in percent of ``host``, that ``vm`` puts on it."""
        return vm.cpu_percent * vm.vcpus / self.cpus(host)

    def mean_load(self) -> float:
        """
        :returns: the Up hosts' mean CPU load weighted by their CPUs. Moves do not change it
            (load moves, it is not made), so a plan can use it as a fixed reference.
        """
        cpus = sum(self.cpus(h) for h in self.up)
        return sum(self.load[h] * self.cpus(h) for h in self.up) / cpus if cpus else 0.0

    def vms_on(self, host: str) -> list[VmPlacement]:
        """:returns: the known VMs on ``host`` in the model, by name."""
        return sorted((self.vms[v] for v in self.on[host]), key=lambda v: (v.name, v.id))

    def full(self) -> bool:
        """:returns: whether the plan has as many moves as it may."""
        return len(self.moves) >= self.max_moves

    def note(self, host: str, text: str) -> None:
        """Add a note to ``host`` (once)."""
        notes = self.notes.setdefault(host, [])
        if text not in notes:
            notes.append(text)

    def request(self, vm: VmPlacement) -> VmRequest:
        """:returns: ``vm`` as a scheduling request with its groups and the members' hosts now."""
        req = VmRequest(vm.id, vm.name, vm.memory_mib, vm.vcpus)
        groups = self.groups_of.get(vm.id, ())
        return affinity.with_affinity(req, groups, self.where, self.vm_names, host_names=self.names)

    # -- deciding ---------------------------------------------------------------------------

    def may_move(self, vm: VmPlacement) -> str | None:
        """:returns: why ``vm`` may not move at all in this plan, or None."""
        if not vm.migratable:
            return "it is not migratable"
        if vm.id in self.moved:
            return "it moves already (planned or in flight)"
        last = self.last_moved.get(vm.id)
        if last is not None and self.now - last < self.limits.cooldown_seconds:
            return (
                f"it moved {self.now - last:.0f} s ago "
                f"(cooldown {self.limits.cooldown_seconds:.0f} s)"
            )
        return None

    def refusal(self, vm: VmPlacement, dst: str, *, break_soft: bool = False) -> str | None:
        """
        :param break_soft: allow a soft affinity rule to get worse (a last resort).
        :returns: why ``vm`` may not move to ``dst`` now (limits aside), or None.
        """
        reason = self.may_move(vm) or self._host_refusal(vm, dst) or self._fit_refusal(vm, dst)
        if reason is not None:
            return reason
        return self._affinity_refusal(vm, dst, break_soft)

    def _host_refusal(self, vm: VmPlacement, dst: str) -> str | None:
        src = self.where[vm.id]
        if dst == src:
            return "it runs there"
        if self.hosts[dst].status != HOST_UP:
            return f"{self.name(dst)} is {self.hosts[dst].status}"
        left = self.left.get(vm.id, {}).get(dst)
        if left is not None:
            return f"it left {self.name(dst)} {self.now - left:.0f} s ago; it would move back"
        return None

    def _fit_refusal(self, vm: VmPlacement, dst: str) -> str | None:
        h = self.hosts[dst]
        if vm.vcpus > h.cpus:
            return f"{vm.vcpus} vCPUs > {h.cpus} CPUs of {h.name}"
        free_after = self.free[dst] - vm.memory_mib
        if free_after < 0:
            return f"{h.name} can promise {self.free[dst]} MiB, it needs {vm.memory_mib} MiB"
        limit = self.p.max_free_memory_for_over_utilized
        if limit is not None and free_after < limit + self.limits.memory_margin_mib:
            return (
                f"{h.name} would keep {free_after} MiB schedulable, under "
                f"MaxFreeMemoryForOverUtilized {limit} MiB + {self.limits.memory_margin_mib} MiB"
            )
        load_after = self.load[dst] + self.share(vm, dst)
        if load_after > self.ceiling:
            return f"{h.name} would reach {load_after:.1f}% CPU > {self.ceiling:.1f}%"
        ratio = self.p.vcpu_to_physical_cpu_ratio
        if ratio > 0 and (self.vcpus[dst] + vm.vcpus) / self.cpus(dst) >= ratio:
            return f"{h.name} would reach VCpuToPhysicalCpuRatio {ratio:g}"
        return None

    def _affinity_refusal(self, vm: VmPlacement, dst: str, break_soft: bool) -> str | None:
        if not self.groups_of.get(vm.id):
            return None
        req = self.request(vm)
        hard = affinity.host_rule_refusal(req, dst) or affinity.vm_rule_refusal(req, dst)
        if hard is not None:
            return hard
        if break_soft:
            return None
        src = self.where[vm.id]
        for cost in (affinity.soft_vm_cost, affinity.soft_host_cost):
            before, _ = cost(req, src)
            after, details = cost(req, dst)
            if after > before:
                return "a soft affinity rule would get worse" + (
                    f" ({'; '.join(details)})" if details else ""
                )
        return None

    def limit_refusal(self, src: str, dst: str) -> str | None:
        """:returns: which per-plan limit a move from ``src`` to ``dst`` would pass, or None."""
        lim = self.limits
        if self.full():
            return f"the plan has its {self.max_moves} moves"
        if self.outgoing[src] >= lim.max_out_per_host:
            return f"{self.name(src)} has {lim.max_out_per_host} migrations out"
        if self.incoming[dst] >= lim.max_in_per_host:
            return f"{self.name(dst)} has {lim.max_in_per_host} migrations in"
        return None

    def try_move(
        self, vm: VmPlacement, dst: str, kind: str, why: str, *, break_soft: bool = False
    ) -> Move | None:
        """
        Apply the move if it is allowed; a move held back only by a limit marks the plan as not
        converged.

        :param why: the start of the reason (the end says what the move does to both hosts).
        :returns: the move, or None when it is not allowed.
        """
        if self.refusal(vm, dst, break_soft=break_soft) is not None:
            return None
        blocked = self.limit_refusal(self.where[vm.id], dst)
        if blocked is not None:
            self.limited = True
            self.note(self.where[vm.id], f"held back: {blocked}")
            return None
        return self.apply(vm, dst, kind, why)

    def apply(self, vm: VmPlacement, dst: str, kind: str, why: str) -> Move:
        """Apply a move to the model (no checks) and record it. :returns: the move."""
        src = self.where[vm.id]
        before = (self.load[src], self.load[dst])
        self.load[src] = max(0.0, self.load[src] - self.share(vm, src))
        self.load[dst] += self.share(vm, dst)
        self.free[src] += vm.memory_mib
        self.free[dst] -= vm.memory_mib
        self.count[src] -= 1
        self.count[dst] += 1
        self.vcpus[src] -= vm.vcpus
        self.vcpus[dst] += vm.vcpus
        self.where[vm.id] = dst
        self.on[src].discard(vm.id)
        self.on[dst].add(vm.id)
        self.moved.add(vm.id)
        self.outgoing[src] += 1
        self.incoming[dst] += 1
        reason = (
            f"{why}; {vm.name} {self.name(src)} → {self.name(dst)}: CPU {self.name(src)} "
            f"{before[0]:.1f}% → {self.load[src]:.1f}%, {self.name(dst)} {before[1]:.1f}% → "
            f"{self.load[dst]:.1f}%"
        )
        move = Move(
            vm.id, vm.name, src, dst, kind, reason,
            self.load[src], self.load[dst], self.free[src], self.free[dst],
        )  # fmt: skip
        self.moves.append(move)
        return move

    def copy(self) -> ClusterModel:
        """:returns: an independent copy, to try a sequence of moves and keep it or not."""
        twin = copy.copy(self)
        for attr in ("load", "free", "count", "vcpus", "where", "notes"):
            setattr(twin, attr, copy.copy(getattr(self, attr)))
        twin.on = defaultdict(set, {h: set(v) for h, v in self.on.items()})
        twin.moves = list(self.moves)
        twin.moved = set(self.moved)
        twin.outgoing = Counter(self.outgoing)
        twin.incoming = Counter(self.incoming)
        twin.stuck = list(self.stuck)
        return twin

    def plan(self) -> BalancePlan:
        """:returns: the plan so far."""
        notes = {h: list(n) for h, n in self.notes.items()}
        return BalancePlan(
            self.policy.name, tuple(self.moves), notes, not self.limited, tuple(self.stuck)
        )


def apply_moves(
    hosts: Sequence[HostView], vms: Sequence[VmPlacement], moves: Iterable[Move]
) -> tuple[list[HostView], list[VmPlacement]]:
    """
    What a cluster looks like once ``moves`` are done, as the balancer predicts it: each VM's
    memory, vCPUs, count and CPU share leave its source and arrive at its destination (the
    simulator, tests and benchmarks re-plan from this).

    :returns: the hosts and VMs after the moves, in their original order.
    """
    by_id = {v.id: v for v in vms}
    cpus = {h.id: max(h.cpus, 1) for h in hosts}
    delta: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
    for m in moves:
        v = by_id[m.vm]
        for host, sign in ((v.host, -1), (m.dst, 1)):
            d = delta[host]
            d[0] += sign * v.cpu_percent * v.vcpus / cpus[host]
            d[1] += sign * v.memory_mib
            d[2] += sign
            d[3] += sign * v.vcpus
        by_id[m.vm] = VmPlacement(
            v.id, v.name, m.dst, v.memory_mib, v.vcpus, v.cpu_percent, v.migratable
        )
    new_hosts = [_shifted(h, delta[h.id]) if h.id in delta else h for h in hosts]
    return new_hosts, [by_id[v.id] for v in vms]


def _shifted(h: HostView, d: list[float]) -> HostView:
    return replace(
        h,
        cpu_load_percent=max(0.0, h.cpu_load_percent + d[0]),
        memory_committed_mib=h.memory_committed_mib + int(d[1]),
        memory_free_mib=max(0, h.memory_free_mib - int(d[1])),
        vm_count=h.vm_count + int(d[2]),
        vcpus_committed=h.vcpus_committed + int(d[3]),
    )


def placement_of(vms: Iterable[VmPlacement]) -> Mapping[str, str]:
    """:returns: VM id → host id."""
    return {v.id: v.host for v in vms}
