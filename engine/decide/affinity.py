"""Pure: affinity groups, the rules that keep VMs together, apart, on or off some hosts.

An :class:`AffinityGroup` is oVirt's affinity group: a set of VMs with a VM↔VM rule (positive:
run *together* on one host; negative: run *apart*, no two on one host; or none) and a set of
hosts with a VM→host rule (positive: run *only on* these hosts; negative: *never on* them). A
rule is **hard** (enforcing: the scheduler refuses hosts that break it, the balancer never breaks
it) or **soft** (a preference: weights favour hosts that keep it, the balancer repairs it when
that does not unbalance the cluster). Groups have a priority; repairs go highest first.

This module holds the rules themselves, for every caller:

- :func:`check_groups`: contradictions between hard groups, found when groups are defined
  (e.g. two VMs that must be together and apart), so they never reach a decision;
- :func:`with_affinity`: a :class:`~engine.decide.model.VmRequest` carrying its groups and where
  the other members run, which the scheduler's ``vm_affinity`` and ``host_affinity`` filters and
  weights read (see :mod:`engine.decide.filters`, :mod:`engine.decide.weights`);
- :func:`vm_rule_refusal`, :func:`host_rule_refusal`, :func:`soft_vm_cost`,
  :func:`soft_host_cost`: one VM on one host, for the filters, weights and the balancer;
- :func:`violations`: what a placement breaks, for the balancer and the enforcement job.

Where the members of a *together* group are spread over several hosts (the rule is already
broken), a VM joining them may go to any host holding the most of them; the balancer gathers the
rest there.
"""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import VmRequest


class Polarity(enum.Enum):
    """Which way a rule pulls."""

    #: VM↔VM: together on one host. VM→host: only on the group's hosts.
    POSITIVE = "positive"
    #: VM↔VM: apart, no two on one host. VM→host: never on the group's hosts.
    NEGATIVE = "negative"
    #: No rule (a group with only a host rule, or only a VM rule).
    NONE = "none"


class AffinityError(ValueError):
    """A group that cannot be built (bad polarity, no name)."""


def _polarity(value: Polarity | str, what: str) -> Polarity:
    if isinstance(value, Polarity):
        return value
    try:
        return Polarity(str(value).lower())
    except ValueError:
        known = ", ".join(p.value for p in Polarity)
        raise AffinityError(f"{what} polarity {value!r} is not one of {known}") from None


@dataclass(frozen=True, slots=True)
class AffinityGroup:
    """
    One affinity group (oVirt's ``affinity_groups`` row with its members).

    :ivar name: the group's unique name (used in every explanation).
    :ivar vms: ids of the member VMs.
    :ivar vm_polarity: the VM↔VM rule: together, apart, or none.
    :ivar hosts: ids of the hosts of the VM→host rule (empty: no host rule).
    :ivar host_polarity: the VM→host rule: only on ``hosts`` (positive) or never on them.
    :ivar hard: the VM↔VM rule is enforcing (oVirt's ``vm_enforcing``).
    :ivar hosts_hard: the VM→host rule is enforcing (oVirt's ``vds_enforcing``); None means
        the same as ``hard``.
    :ivar priority: repair order and the weight of a soft rule; higher first (oVirt's
        ``priority``).

    Polarities may be given as strings (``"positive"``, ``"negative"``, ``"none"``) and member
    sets as any iterable; they are normalised.
    """

    name: str
    vms: frozenset[str] = frozenset()
    vm_polarity: Polarity = Polarity.NONE
    hosts: frozenset[str] = frozenset()
    host_polarity: Polarity = Polarity.POSITIVE
    hard: bool = False
    hosts_hard: bool | None = None
    priority: float = 1.0

    def __post_init__(self) -> None:
        if not self.name:
            raise AffinityError("an affinity group needs a name")
        object.__setattr__(self, "vm_polarity", _polarity(self.vm_polarity, "VM"))
        object.__setattr__(self, "host_polarity", _polarity(self.host_polarity, "host"))
        if self.host_polarity is Polarity.NONE:
            object.__setattr__(self, "hosts", frozenset())
            object.__setattr__(self, "host_polarity", Polarity.POSITIVE)
        object.__setattr__(self, "vms", frozenset(self.vms))
        object.__setattr__(self, "hosts", frozenset(self.hosts))

    @property
    def host_rule_hard(self) -> bool:
        """:returns: whether the VM→host rule is enforcing."""
        return self.hard if self.hosts_hard is None else self.hosts_hard

    @property
    def has_vm_rule(self) -> bool:
        """:returns: whether the group has a VM↔VM rule."""
        return self.vm_polarity is not Polarity.NONE

    @property
    def has_host_rule(self) -> bool:
        """:returns: whether the group has a VM→host rule."""
        return bool(self.hosts)

    def vm_rule_text(self) -> str:
        """:returns: e.g. ``group 'web' (hard, apart)``."""
        how = "together" if self.vm_polarity is Polarity.POSITIVE else "apart"
        return f"group {self.name!r} ({'hard' if self.hard else 'soft'}, {how})"

    def host_rule_text(self) -> str:
        """:returns: e.g. ``group 'db' (hard, only on its hosts)``."""
        how = "only on" if self.host_polarity is Polarity.POSITIVE else "never on"
        return f"group {self.name!r} ({'hard' if self.host_rule_hard else 'soft'}, {how} its hosts)"


@dataclass(frozen=True, slots=True)
class Peer:
    """
    Where another member of a VM's groups runs (or is reserved to run).

    :ivar vm_id: the member's id.
    :ivar vm_name: its name, for explanations.
    :ivar host_id: the host it is on.
    :ivar host_name: that host's name, for explanations.
    """

    vm_id: str
    vm_name: str
    host_id: str
    host_name: str = ""

    @property
    def where(self) -> str:
        """:returns: the host's name, or its id when the name is unknown."""
        return self.host_name or self.host_id


def groups_of(vm_id: str, groups: Iterable[AffinityGroup]) -> tuple[AffinityGroup, ...]:
    """:returns: the groups ``vm_id`` belongs to, by name."""
    return tuple(sorted((g for g in groups if vm_id in g.vms), key=lambda g: g.name))


def with_affinity(
    vm: VmRequest,
    groups: Iterable[AffinityGroup],
    placement: Mapping[str, str],
    names: Mapping[str, str] | None = None,
    *,
    host_names: Mapping[str, str] | None = None,
    leaving: Collection[str] = (),
) -> VmRequest:
    """
    Give a scheduling request its affinity: its groups and where the other members run.

    :param vm: the request.
    :param groups: every group of the cluster (those without ``vm`` are ignored).
    :param placement: VM id → host id of the running VMs (members missing from it do not run
        and do not count).
    :param names: VM ids → names (and host ids → names unless ``host_names`` is given).
    :param host_names: host ids → names, for explanations.
    :param leaving: hosts whose VMs are all leaving (a host being evacuated): members there do
        not count, so a *together* group can gather again on the host its first member picks
        (the scheduler's ledger then pulls the others after it).
    :returns: a copy of ``vm`` with ``affinity_groups`` and ``affinity_peers`` set.
    """
    names = names or {}
    hnames = names if host_names is None else host_names
    mine = groups_of(vm.id, groups)
    members = sorted({m for g in mine for m in g.vms if m != vm.id})
    peers = tuple(
        Peer(m, names.get(m, m), placement[m], hnames.get(placement[m], placement[m]))
        for m in members
        if m in placement and placement[m] not in leaving
    )
    return replace(vm, affinity_groups=mine, affinity_peers=peers)


def peers_with_reservations(
    vm: VmRequest, reserved: Mapping[str, tuple[str, str]]
) -> tuple[Peer, ...]:
    """
    :param reserved: member VM id → (host id, host name) where the scheduler's ledger holds a
        reservation for it (a member being started or migrated there).
    :returns: ``vm``'s peers with each reservation replacing the member's current host, and
        reserved members that were not running added.
    """
    members = {m for g in vm.affinity_groups for m in g.vms if m != vm.id}
    peers = {p.vm_id: p for p in vm.affinity_peers}
    for vm_id, (host_id, host_name) in reserved.items():
        if vm_id in members:
            old = peers.get(vm_id)
            peers[vm_id] = Peer(vm_id, old.vm_name if old else vm_id, host_id, host_name)
    return tuple(peers[k] for k in sorted(peers))


# -- one VM on one host -------------------------------------------------------------------------


def _names(peers: Sequence[Peer]) -> str:
    return ", ".join(p.vm_name for p in peers)


def together_hosts(group: AffinityGroup, peers: Iterable[Peer]) -> tuple[list[str], dict]:
    """
    :returns: the hosts holding the most members of ``group`` among ``peers`` (empty when no
        member runs), and host id → the members there.
    """
    here: dict[str, list[Peer]] = defaultdict(list)
    for p in peers:
        if p.vm_id in group.vms:
            here[p.host_id].append(p)
    if not here:
        return [], here
    most = max(len(v) for v in here.values())
    return sorted(h for h, v in here.items() if len(v) == most), here


def vm_rule_refusal(vm: VmRequest, host_id: str, *, hard: bool = True) -> str | None:
    """
    :param hard: check the hard VM↔VM rules (True) or the soft ones (False).
    :returns: why ``host_id`` breaks one of ``vm``'s VM↔VM rules, or None.
    """
    for group in vm.affinity_groups:
        if group.hard != hard or not group.has_vm_rule:
            continue
        if group.vm_polarity is Polarity.NEGATIVE:
            there = [p for p in vm.affinity_peers if p.vm_id in group.vms and p.host_id == host_id]
            if there:
                return f"{group.vm_rule_text()} has {_names(there)} on this host"
        else:
            best, here = together_hosts(group, vm.affinity_peers)
            if best and host_id not in best:
                where = "; ".join(f"{_names(here[h])} on {here[h][0].where}" for h in best)
                return f"{group.vm_rule_text()} has {where}, not here"
    return None


def host_rule_refusal(vm: VmRequest, host_id: str, *, hard: bool = True) -> str | None:
    """
    :param hard: check the hard VM→host rules (True) or the soft ones (False).
    :returns: why ``host_id`` breaks one of ``vm``'s VM→host rules, or None.
    """
    for group in vm.affinity_groups:
        if group.host_rule_hard != hard or not group.has_host_rule:
            continue
        inside = host_id in group.hosts
        if group.host_polarity is Polarity.POSITIVE and not inside:
            return f"{group.host_rule_text()}: this host is not one of them"
        if group.host_polarity is Polarity.NEGATIVE and inside:
            return f"{group.host_rule_text()}: this host is one of them"
    return None


def soft_vm_cost(vm: VmRequest, host_id: str) -> tuple[float, list[str]]:
    """
    The soft VM↔VM rules' verdict on one host: for each soft group, priority × the members on
    the host, subtracted for *together* and added for *apart*. Lower is better.

    :returns: the cost and one phrase per group that has members there.
    """
    cost = 0.0
    details = []
    for group in vm.affinity_groups:
        if group.hard or not group.has_vm_rule:
            continue
        there = [p for p in vm.affinity_peers if p.vm_id in group.vms and p.host_id == host_id]
        sign = -1 if group.vm_polarity is Polarity.POSITIVE else 1
        cost += sign * group.priority * len(there)
        if there:
            details.append(f"{group.vm_rule_text()}: {_names(there)} here")
    return cost, details


def soft_host_cost(vm: VmRequest, host_id: str) -> tuple[float, list[str]]:
    """
    The soft VM→host rules' verdict on one host: the priorities of the soft groups whose host
    rule the host breaks. Lower is better.

    :returns: the cost and one phrase per broken rule.
    """
    cost = 0.0
    details = []
    for group in vm.affinity_groups:
        if group.host_rule_hard or not group.has_host_rule:
            continue
        inside = host_id in group.hosts
        if inside != (group.host_polarity is Polarity.POSITIVE):
            cost += group.priority
            details.append(f"breaks {group.host_rule_text()}")
    return cost, details


def has_soft_vm_rules(vm: VmRequest) -> bool:
    """:returns: whether ``vm`` is in a soft group with a VM↔VM rule and a running peer."""
    return bool(vm.affinity_peers) and any(not g.hard and g.has_vm_rule for g in vm.affinity_groups)


def has_soft_host_rules(vm: VmRequest) -> bool:
    """:returns: whether ``vm`` is in a soft group with a VM→host rule."""
    return any(not g.host_rule_hard and g.has_host_rule for g in vm.affinity_groups)


# -- whole placements ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """
    A rule a placement breaks, and the VMs whose moves would repair it.

    :ivar group: the group whose rule is broken.
    :ivar vms: the VMs to move, in the order to move them.
    :ivar hosts: the hosts involved: for *together*, the host to gather on first, then the
        others; for *apart*, the crowded host; for a host rule, the hosts the VMs wrongly run on.
    :ivar reason: one sentence, with names.
    :ivar rule: ``"vm"`` (VM↔VM) or ``"host"`` (VM→host).
    """

    group: AffinityGroup
    vms: tuple[str, ...]
    hosts: tuple[str, ...]
    reason: str
    rule: str = "vm"

    @property
    def hard(self) -> bool:
        """:returns: whether the broken rule is enforcing."""
        return self.group.hard if self.rule == "vm" else self.group.host_rule_hard


def _name(names: Mapping[str, str], key: str) -> str:
    return names.get(key, key)


def _together_violation(
    group: AffinityGroup, on: dict[str, list[str]], names: Mapping[str, str], hnames, load_key
) -> list[Violation]:
    if len(on) < 2:
        return []
    order = sorted(on, key=lambda h: (-len(on[h]), load_key(h), _name(hnames, h), h))
    movers = tuple(v for h in order[1:] for v in on[h])
    spread = ", ".join(
        f"{_name(hnames, h)} ({', '.join(_name(names, v) for v in on[h])})" for h in order
    )
    return [
        Violation(
            group,
            movers,
            tuple(order),
            f"{group.vm_rule_text()} is split over {spread}",
        )
    ]


def _apart_violations(
    group: AffinityGroup, on: dict[str, list[str]], names: Mapping[str, str], hnames
) -> list[Violation]:
    found = []
    for host in sorted(on, key=lambda h: (_name(hnames, h), h)):
        members = on[host]
        if len(members) < 2:
            continue
        together = ", ".join(_name(names, v) for v in members)
        found.append(
            Violation(
                group,
                tuple(members[1:]),
                (host,),
                f"{group.vm_rule_text()} has {together} on {_name(hnames, host)}",
            )
        )
    return found


def _host_violation(
    group: AffinityGroup, members: list[str], placement: Mapping[str, str], names, hnames
) -> list[Violation]:
    wrong = [
        v
        for v in members
        if (placement[v] in group.hosts) != (group.host_polarity is Polarity.POSITIVE)
    ]
    if not wrong:
        return []
    where = ", ".join(f"{_name(names, v)} on {_name(hnames, placement[v])}" for v in wrong)
    hosts = tuple(sorted({placement[v] for v in wrong}))
    return [Violation(group, tuple(wrong), hosts, f"{group.host_rule_text()}: {where}", "host")]


def violations(
    groups: Iterable[AffinityGroup],
    placement: Mapping[str, str],
    names: Mapping[str, str] | None = None,
    *,
    host_names: Mapping[str, str] | None = None,
    load: Mapping[str, float] | None = None,
) -> list[Violation]:
    """
    Every rule the placement breaks.

    :param groups: the cluster's groups.
    :param placement: VM id → host id of the running VMs; members not in it are ignored.
    :param names: VM ids → names (and host ids → names unless ``host_names`` is given).
    :param host_names: host ids → names, for the reasons.
    :param load: host id → load, to choose between equally good hosts to gather a *together*
        group on (the least loaded wins); by default names decide.
    :returns: the violations, hard ones first, then by priority (highest first), then group name.
    """
    names = names or {}
    hnames = names if host_names is None else host_names
    load = load or {}
    found: list[Violation] = []
    for group in groups:
        members = sorted(
            (v for v in group.vms if v in placement), key=lambda v: (_name(names, v), v)
        )
        on: dict[str, list[str]] = defaultdict(list)
        for v in members:
            on[placement[v]].append(v)
        if group.vm_polarity is Polarity.POSITIVE:
            found += _together_violation(group, on, names, hnames, lambda h: load.get(h, 0.0))
        elif group.vm_polarity is Polarity.NEGATIVE:
            found += _apart_violations(group, on, names, hnames)
        if group.has_host_rule:
            found += _host_violation(group, members, placement, names, hnames)
    found.sort(key=lambda v: (not v.hard, -v.group.priority, v.group.name, v.rule, v.hosts))
    return found


# -- checking definitions -----------------------------------------------------------------------


@dataclass
class _Components:
    parent: dict[str, str] = field(default_factory=dict)

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def check_groups(
    groups: Sequence[AffinityGroup],
    names: Mapping[str, str] | None = None,
    *,
    hosts: Collection[str] | None = None,
) -> list[str]:
    """
    Find contradictions between hard rules, to refuse a definition before it reaches a decision.

    Hard *together* rules chain (a with b, b with c puts a with c); the checks run on the chains:

    - two VMs of one chain in one hard *apart* group;
    - a chain whose hard host rules leave no host (disjoint *only on* sets, or *never on* every
      host of the *only on* set, or of ``hosts`` when given);
    - a hard *apart* group with more members than allowed hosts (only when ``hosts`` is given);
    - two groups with one name.

    Soft rules never conflict: their costs add up and the best compromise wins.

    :param groups: the groups as they would be after the change.
    :param names: ids → names, for the messages.
    :param hosts: every host id of the cluster, for the checks that need it.
    :returns: one sentence per problem; empty when the groups are consistent.
    """
    names = names or {}
    problems: list[str] = []
    counts = Counter(g.name for g in groups)
    problems += [f"two groups are named {n!r}" for n, c in sorted(counts.items()) if c > 1]
    chains = _Components()
    for g in groups:
        if g.hard and g.vm_polarity is Polarity.POSITIVE:
            members = sorted(g.vms)
            for other in members[1:]:
                chains.union(members[0], other)
    problems += _apart_conflicts(groups, chains, names)
    problems += _host_conflicts(groups, chains, names, hosts)
    return problems


def _apart_conflicts(groups, chains: _Components, names) -> list[str]:
    problems = []
    for g in sorted(groups, key=lambda g: g.name):
        if not (g.hard and g.vm_polarity is Polarity.NEGATIVE):
            continue
        by_chain: dict[str, list[str]] = defaultdict(list)
        for v in sorted(g.vms):
            by_chain[chains.find(v)].append(v)
        for clash in by_chain.values():
            if len(clash) > 1:
                who = " and ".join(_name(names, v) for v in clash[:2])
                together = sorted(
                    x.name
                    for x in groups
                    if x.hard and x.vm_polarity is Polarity.POSITIVE and x.vms & set(clash)
                )
                problems.append(
                    f"{who} must run together (hard: {', '.join(repr(n) for n in together)}) "
                    f"and apart (hard: {g.name!r})"
                )
    return problems


def _host_conflicts(groups, chains: _Components, names, hosts) -> list[str]:
    allowed: dict[str, set[str] | None] = {}
    banned: dict[str, set[str]] = defaultdict(set)
    why: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        if not (g.has_host_rule and g.host_rule_hard):
            continue
        for chain in {chains.find(v) for v in g.vms}:
            why[chain].append(g.name)
            if g.host_polarity is Polarity.POSITIVE:
                current = allowed.get(chain)
                allowed[chain] = set(g.hosts) if current is None else current & g.hosts
            else:
                banned[chain] |= g.hosts
    problems = []
    for chain in sorted(why):
        room = allowed.get(chain)
        if room is None and hosts is None:
            continue
        left = (set(hosts) if room is None else room) - banned[chain]
        if hosts is not None:
            left &= set(hosts)
        if not left:
            members = sorted(v for v in chains.parent if chains.find(v) == chain) or [chain]
            who = ", ".join(_name(names, v) for v in members)
            groups_ = ", ".join(repr(n) for n in sorted(set(why[chain])))
            problems.append(f"hard host rules of {groups_} leave no host for {who}")
    if hosts is not None:
        problems += _apart_room(groups, hosts, names)
    return problems


def _apart_room(groups, hosts: Collection[str], names) -> list[str]:
    problems = []
    for g in sorted(groups, key=lambda g: g.name):
        if not (g.hard and g.vm_polarity is Polarity.NEGATIVE):
            continue
        room = set(hosts)
        if g.has_host_rule and g.host_rule_hard:
            room = room & g.hosts if g.host_polarity is Polarity.POSITIVE else room - g.hosts
        if len(g.vms) > len(room):
            problems.append(
                f"group {g.name!r} keeps {len(g.vms)} VMs apart but only {len(room)} hosts "
                "may run them"
            )
    return problems


# -- words --------------------------------------------------------------------------------------


def describe_group(
    group: AffinityGroup,
    names: Mapping[str, str] | None = None,
    *,
    host_names: Mapping[str, str] | None = None,
) -> str:
    """
    :returns: the group's rules in one line, for events, e.g. ``web-1, web-2 apart (hard);
        only on h1, h2 (soft); priority 1``.
    """
    names = names or {}
    hnames = names if host_names is None else host_names
    parts = []
    vms = ", ".join(sorted(_name(names, v) for v in group.vms)) or "no VMs"
    if group.has_vm_rule:
        how = "together" if group.vm_polarity is Polarity.POSITIVE else "apart"
        parts.append(f"{vms} {how} ({'hard' if group.hard else 'soft'})")
    else:
        parts.append(f"{vms} (no VM rule)")
    if group.has_host_rule:
        how = "only on" if group.host_polarity is Polarity.POSITIVE else "never on"
        hosts = ", ".join(sorted(_name(hnames, h) for h in group.hosts))
        parts.append(f"{how} {hosts} ({'hard' if group.host_rule_hard else 'soft'})")
    parts.append(f"priority {group.priority:g}")
    return "; ".join(parts)
