"""Pure: choose a host for a VM, explain the choice for every host, and keep pending promises.

:func:`schedule` is oVirt's scheduling pass without the I/O: every filter of the policy looks at
every host (so a refused start says, for each host, every reason it was refused, with numbers);
the hosts that pass are ranked per weight and scored Σ factor × rank (oVirt's ``RankSelector``:
a host's rank is the number of other passing hosts it is at least as good as); the highest score
wins, ties going to the host whose name (then id) sorts first. The cost is linear in the number
of hosts, plus one sort per weight. A unit with ``applies(vm)`` returning False is skipped for
that VM (the affinity units, for VMs outside groups).

Affinity: a request carries its groups and where the other members run
(:func:`engine.decide.affinity.with_affinity`); a member the ledger holds a reservation for counts
on the host it is reserved on, so the VMs of one group placed in a row (:func:`place_all`, an HA
restart of a whole host) keep their rules among themselves.

:class:`PendingResources` is the ledger of what has been promised to VMs on their way to a host
(oVirt's ``PendingResourceManager``). A decision only counts once it is reserved, so the shell
uses :func:`place` (decide and reserve in one step, in one reactor turn) and releases the
reservation when the VM is reported Up *in the snapshot it will schedule with* (its memory then
counts as committed) or when the start fails. Released too early, memory would be counted
nowhere; released late, it is counted twice, which is only cautious.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from . import affinity, plugins
from .model import NO_PENDING, HostPending, HostView, VmRequest, with_pending
from .plugins import PolicyUnits
from .policies import Policy

# -- the pending ledger ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservation:
    """
    Resources promised to one VM on one host until it is Up there or has failed.

    :ivar vm_id: the VM's id.
    :ivar host_id: the host it is starting (or migrating) to.
    :ivar amount: its memory, vCPUs and a VM count of one.
    """

    vm_id: str
    host_id: str
    amount: HostPending


class PendingResources:
    """
    The ledger of pending reservations, one per VM at most, with per-host totals kept as it
    changes so that a decision reads them in constant time per host.

    This is the one mutable object of the scheduler: the engine keeps a single instance per
    cluster and touches it only from the reactor thread.
    """

    def __init__(self) -> None:
        self._by_vm: dict[str, Reservation] = {}
        self._by_host: dict[str, HostPending] = {}

    def reserve(self, vm: VmRequest, host_id: str) -> Reservation:
        """
        Promise ``vm``'s memory and vCPUs on ``host_id``. A VM holds at most one reservation:
        reserving again (a rerun elsewhere) moves it.

        :returns: the new reservation.
        """
        self.release(vm.id)
        reservation = Reservation(vm.id, host_id, HostPending(vm.memory_mib, vm.vcpus, 1))
        self._by_vm[vm.id] = reservation
        self._by_host[host_id] = self._by_host.get(host_id, NO_PENDING) + reservation.amount
        return reservation

    def release(self, vm_id: str) -> Reservation | None:
        """
        Drop ``vm_id``'s reservation (it is Up and counted as committed, or its start failed).

        :returns: the released reservation, or None if it held none (releasing is idempotent).
        """
        reservation = self._by_vm.pop(vm_id, None)
        if reservation is None:
            return None
        left = self._by_host[reservation.host_id] - reservation.amount
        if left:
            self._by_host[reservation.host_id] = left
        else:
            del self._by_host[reservation.host_id]
        return reservation

    def release_host(self, host_id: str) -> list[Reservation]:
        """
        Drop every reservation on ``host_id`` (the host went away; its starts will fail).

        :returns: the released reservations, ordered by VM id.
        """
        gone = sorted(
            (r for r in self._by_vm.values() if r.host_id == host_id), key=lambda r: r.vm_id
        )
        for reservation in gone:
            self.release(reservation.vm_id)
        return gone

    def for_host(self, host_id: str) -> HostPending:
        """:returns: the totals pending on ``host_id`` (zero when none)."""
        return self._by_host.get(host_id, NO_PENDING)

    def reservation(self, vm_id: str) -> Reservation | None:
        """:returns: ``vm_id``'s reservation, or None."""
        return self._by_vm.get(vm_id)

    def __contains__(self, vm_id: object) -> bool:
        return vm_id in self._by_vm

    def __len__(self) -> int:
        return len(self._by_vm)

    def __iter__(self) -> Iterator[Reservation]:
        """:returns: the reservations, ordered by VM id."""
        return iter(sorted(self._by_vm.values(), key=lambda r: r.vm_id))


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """
    Where a VM should run, and why, host by host.

    :ivar vm: the request that was decided.
    :ivar policy: the policy's name.
    :ivar host: the chosen host's id, or None when no host passed the filters.
    :ivar explanations: for every host id of the snapshot, its story: each filter that refused
        it and why (``"refused by memory: ..."``), or the weights it got and its score.
    :ivar scores: the score of each host that passed the filters.
    :ivar ranking: the hosts that passed, best first (the chosen host, then the alternates a
        rerun may try).
    :ivar host_names: host id → name, for messages.
    """

    vm: VmRequest
    policy: str
    host: str | None
    explanations: dict[str, list[str]]
    scores: dict[str, int] = field(default_factory=dict)
    ranking: tuple[str, ...] = ()
    host_names: dict[str, str] = field(default_factory=dict)

    @property
    def host_name(self) -> str | None:
        """:returns: the chosen host's name, or None."""
        return None if self.host is None else self.host_names.get(self.host, self.host)

    @property
    def alternates(self) -> tuple[str, ...]:
        """:returns: the other passing hosts, best first."""
        return self.ranking[1:]

    def summary(self) -> str:
        """:returns: the decision in a few lines: the outcome, then one line per host."""
        vm = self.vm
        what = f"VM {vm.name!r} ({vm.memory_mib} MiB, {vm.vcpus} vCPUs)"
        total = len(self.explanations)
        if self.host is not None:
            head = (
                f"{what} → host {self.host_name!r} under policy {self.policy!r}: "
                f"{len(self.ranking)} of {total} hosts passed the filters"
            )
        elif total == 0:
            head = f"{what} cannot run under policy {self.policy!r}: there are no hosts"
        else:
            head = (
                f"{what} cannot run under policy {self.policy!r}: "
                f"none of {total} hosts passed the filters"
            )
        lines = [head]
        if vm.pinned_host is not None and vm.pinned_host not in self.host_names:
            lines.append(f"  the pinned host {vm.pinned_host!r} is not among them")
        refused = sorted(
            (i for i in self.explanations if i not in self.scores),
            key=lambda i: (self.host_names.get(i, i), i),
        )
        for host_id in (*self.ranking, *refused):
            name = self.host_names.get(host_id, host_id)
            lines.append(f"  {name}: " + "; ".join(self.explanations[host_id]))
        return "\n".join(lines)


def _with_ledger(
    host: HostView, pending: PendingResources | None, own: Reservation | None
) -> HostView:
    if pending is None:
        return host
    extra = pending.for_host(host.id)
    if own is not None and own.host_id == host.id:
        extra = extra - own.amount  # a VM's own reservation never counts against it
    return with_pending(host, extra)


def _applies(unit: object, vm: VmRequest) -> bool:
    # Units without ``applies`` apply to every VM; the affinity units only to VMs in groups.
    applies = getattr(unit, "applies", None)
    return applies is None or bool(applies(vm))


def _with_reserved_peers(
    vm: VmRequest, hosts: Sequence[HostView], pending: PendingResources | None
) -> VmRequest:
    # A group member the ledger holds a reservation for counts where it is going, so VMs of one
    # group placed in a row (place_all) honour their rules among themselves too.
    if pending is None or not vm.affinity_groups:
        return vm
    names = {h.id: h.name for h in hosts}
    members = {m for g in vm.affinity_groups for m in g.vms if m != vm.id}
    reserved = {
        m: (r.host_id, names.get(r.host_id, r.host_id))
        for m in members
        if (r := pending.reservation(m)) is not None
    }
    if not reserved:
        return vm
    return replace(vm, affinity_peers=affinity.peers_with_reservations(vm, reserved))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _weigh(
    vm: VmRequest,
    passed: Sequence[HostView],
    policy: Policy,
    units: PolicyUnits,
    explanations: dict[str, list[str]],
) -> dict[str, int]:
    scores = {h.id: 0 for h in passed}
    others = len(passed) - 1
    for weight, factor in units.weights:
        if not _applies(weight, vm):
            continue
        weighings = [weight.weigh(vm, h, policy) for h in passed]
        ordered = sorted(w.value for w in weighings)
        for host, weighing in zip(passed, weighings, strict=True):
            rank = others - bisect_left(ordered, weighing.value)
            scores[host.id] += factor * rank
            explanations[host.id].append(
                f"{weight.name} ×{factor}: {weighing.detail} → rank {rank}/{others}, "
                f"+{factor * rank}"
            )
    return scores


def schedule(
    vm: VmRequest,
    hosts: Iterable[HostView],
    policy: Policy,
    pending: PendingResources | None = None,
    *,
    units: PolicyUnits | None = None,
) -> Decision:
    """
    Choose the host for ``vm``. Pure: the ledger is read, never changed (see :func:`place`).

    :param vm: the VM to place.
    :param hosts: the cluster snapshot; ids must be unique.
    :param policy: the cluster policy (filters, weights with factors, parameters, overcommit).
    :param pending: reservations to count on top of each host's own pending figures; the VM's
        own reservation, if it holds one, is not counted against it.
    :param units: the loaded plugins to use instead of the policy's entry points (tests, the
        simulator); by default :func:`engine.decide.plugins.units_for` ``(policy)``.
    :returns: the decision, with an explanation for every host.
    :raises ValueError: when two hosts share an id.
    :raises engine.decide.plugins.PluginError: when the policy names an unknown plugin.
    """
    units = plugins.units_for(policy) if units is None else units
    own = pending.reservation(vm.id) if pending is not None else None
    hosts = list(hosts)
    vm = _with_reserved_peers(vm, hosts, pending)
    explanations: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    passed: list[HostView] = []
    active = [f for f in units.filters if _applies(f, vm)]
    filter_names = ", ".join(f.name for f in active)
    for host in hosts:
        if host.id in names:
            raise ValueError(f"host id {host.id!r} appears twice in the snapshot")
        names[host.id] = host.name
        view = _with_ledger(host, pending, own)
        refusals = [
            f"refused by {f.name}: {reason}"
            for f in active
            if (reason := f.refusal(vm, view, policy)) is not None
        ]
        explanations[host.id] = refusals or [f"passed filters: {filter_names}"]
        if not refusals:
            passed.append(view)
    scores = _weigh(vm, passed, policy, units, explanations)
    ranking = tuple(h.id for h in sorted(passed, key=lambda h: (-scores[h.id], h.name, h.id)))
    for place_, host_id in enumerate(ranking, start=1):
        verdict = "chosen" if place_ == 1 else f"{_ordinal(place_)} choice"
        explanations[host_id].append(f"score {scores[host_id]}: {verdict}")
    return Decision(
        vm=vm,
        policy=policy.name,
        host=ranking[0] if ranking else None,
        explanations=explanations,
        scores=scores,
        ranking=ranking,
        host_names=names,
    )


def place(
    vm: VmRequest,
    hosts: Iterable[HostView],
    policy: Policy,
    pending: PendingResources,
    *,
    units: PolicyUnits | None = None,
) -> Decision:
    """
    Schedule ``vm`` and, if a host was chosen, reserve its resources there at once, so the next
    decision already counts them: what the engine calls to start or migrate a VM.

    :returns: the decision (as :func:`schedule`).
    """
    decision = schedule(vm, hosts, policy, pending, units=units)
    if decision.host is not None:
        pending.reserve(vm, decision.host)
    return decision


def start_order(vms: Iterable[VmRequest]) -> list[VmRequest]:
    """:returns: ``vms`` in the order to start them: highest HA priority first, then by name."""
    return sorted(vms, key=lambda vm: (-vm.ha_priority, vm.name, vm.id))


def place_all(
    vms: Iterable[VmRequest],
    hosts: Sequence[HostView],
    policy: Policy,
    pending: PendingResources,
    *,
    units: PolicyUnits | None = None,
) -> list[Decision]:
    """
    Place several VMs against one snapshot (e.g. the HA VMs of a failed host), in
    :func:`start_order`, each decision counting the reservations of the ones before it.

    :returns: one decision per VM, in start order.
    """
    return [place(vm, hosts, policy, pending, units=units) for vm in start_order(vms)]
