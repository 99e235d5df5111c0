"""Pure: the balancer, power saving and affinity plugged into the cluster manager.

:class:`~engine.decide.cluster.ClusterManager` has two hooks (see :mod:`engine.decide.cluster`):

- ``planner(BalanceInput) -> [PlannedMove | PlannedPower | Event]``, asked on every tick while
  the cluster is calm. :class:`Planner` (built by :func:`make_planner`) answers it with
  :func:`engine.decide.balance.plan_moves` or, under the ``power_saving`` policy,
  :func:`engine.decide.powersave.plan_power_saving`: each planned
  :class:`~engine.decide.moves.Move` becomes a ``PlannedMove`` (the manager checks it with the
  scheduler and records it in its move history, so cooldown and no-move-back survive ticks and
  engine restarts), each power action a ``PlannedPower``, a shortage of capacity a
  ``PlannedPower`` of kind ``shortage`` (the hysteresis against switching hosts on and off), and
  a host that needs relief but has no allowed move one ``BALANCE_HOST_STUCK`` event (then one
  ``BALANCE_HOST_RELIEVED`` when it no longer needs it), never one per tick.
- ``decorate(request, placement, leaving)``: :func:`make_decorator` gives every scheduling
  request of the manager (HA restarts, maintenance, balancing checks, starts) its affinity
  groups and where the other members run (:func:`engine.decide.affinity.with_affinity`).

Both read the groups through a *source*: a sequence, or a function returning the current ones
(the engine's groups change while it runs; the simulator's when a scenario defines one).

When to plan: at most every :attr:`BalancingSettings.interval` seconds (oVirt balances every
minute), and not before the cluster has been calm for :attr:`BalancingSettings.settle` seconds:
host loads arrive as periodic samples, so right after a migration the load figures still show
the cluster as it was, and planning on them would move a second VM for the same need. While VMs
wait for room (HA restarts no host takes) the manager asks anyway, for a power-on only; that is
planned at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.store.auditlog import AuditType as T

from . import affinity
from .affinity import AffinityGroup
from .balance import BalanceLimits, BalancePlan, plan_moves
from .cluster import BalanceInput, PlannedMove, PlannedPower
from .clusterstate import RequestDecorator
from .commands import Event, event
from .model import VmRequest
from .policies import Policy
from .powersave import SHORTAGE, PowerLimits, plan_power_saving

#: The groups, or a function returning the current ones.
GroupSource = Sequence[AffinityGroup] | Callable[[], Sequence[AffinityGroup]]
#: Ids → names, or a function returning them.
NameSource = Mapping[str, str] | Callable[[], Mapping[str, str]] | None


def _read(source: GroupSource | NameSource) -> Sequence | Mapping:
    if source is None:
        return {}
    return source() if callable(source) else source


@dataclass(frozen=True, slots=True)
class BalancingSettings:
    """
    How often and how much the planner plans.

    :ivar interval: seconds between plans at least (oVirt: 60).
    :ivar settle: seconds the cluster must have been calm before a plan (fresh load samples).
    :ivar max_moves: moves per plan at most.
    :ivar limits: per-host migrations per plan and the anti-thrash settings.
    :ivar power_limits: minimum on and off times and the boot time of power saving.
    """

    interval: float = 60.0
    settle: float = 15.0
    max_moves: int = 10
    limits: BalanceLimits = field(default_factory=BalanceLimits)
    power_limits: PowerLimits = field(default_factory=PowerLimits)

    def __post_init__(self) -> None:
        if self.interval < 0 or self.settle < 0 or self.max_moves < 1:
            raise ValueError("interval and settle must be ≥ 0 and max_moves ≥ 1")


PlannedItem = PlannedMove | PlannedPower | Event


class Planner:
    """
    The cluster manager's ``planner`` hook (see the module docstring).

    It keeps only what spares the log repetition (when it last planned, which hosts it already
    reported stuck); everything that decides moves (the move and power histories) is the
    manager's, so a new planner after an engine restart decides the same.

    :param policy: the policy to balance by; None: the manager's (``BalanceInput.policy``).
    :param groups: the affinity groups (a source).
    :param settings: when and how much to plan.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        groups: GroupSource = (),
        settings: BalancingSettings | None = None,
    ) -> None:
        self.policy = policy
        self.groups = groups
        self.settings = settings or BalancingSettings()
        self._next = float("-inf")
        self._stuck: dict[str, str] = {}

    def __call__(self, seen: BalanceInput) -> list[PlannedItem]:
        """:returns: events about hosts, then moves, then power actions (see the module)."""
        policy = self.policy or seen.policy
        if policy.balancer is None or not self._due(seen):
            return []
        self._next = seen.now + self.settings.interval
        groups = tuple(_read(self.groups))
        out: list[PlannedItem] = []
        if policy.balancer == "power_saving":
            plan = self._power_saving(seen, policy, groups)
            balance = plan.balance
            power: list[PlannedItem] = [
                PlannedPower(a.host, a.action, a.reason) for a in plan.actions
            ]
            if plan.shortage is not None:
                power.append(PlannedPower("", SHORTAGE, plan.shortage))
        else:
            balance = self._plan(seen, policy, groups)
            power = []
        if seen.calm:
            out += self._stuck_events(seen, balance)
            out += [PlannedMove(m.vm, m.dst, m.reason) for m in balance.moves]
        return out + power

    def _due(self, seen: BalanceInput) -> bool:
        if not seen.calm:
            return seen.waiting_vms > 0  # only a power-on for VMs that wait: at once
        if seen.now - seen.calm_since < self.settings.settle:
            return False
        return seen.now >= self._next

    def _plan(
        self, seen: BalanceInput, policy: Policy, groups: Sequence[AffinityGroup]
    ) -> BalancePlan:
        s = self.settings
        return plan_moves(
            seen.hosts, seen.vms, policy, groups, seen.history, seen.now,
            max_moves=s.max_moves, limits=s.limits,
        )  # fmt: skip

    def _power_saving(self, seen: BalanceInput, policy: Policy, groups: Sequence[AffinityGroup]):
        s = self.settings
        return plan_power_saving(
            seen.hosts, seen.vms, policy, groups, seen.history, seen.now,
            power_history=seen.power_history, pm_hosts=seen.pm_hosts,
            waiting_vms=seen.waiting_vms, max_moves=s.max_moves, limits=s.limits,
            power_limits=s.power_limits,
        )  # fmt: skip

    def _stuck_events(self, seen: BalanceInput, plan: BalancePlan) -> list[Event]:
        """One event when a host becomes stuck, one when it no longer is."""
        names = {h.id: h.name for h in seen.hosts}
        out = []
        for host in plan.stuck:
            if host in self._stuck:
                continue
            notes = plan.notes.get(host, [])
            why = next((n for n in notes if n.startswith("stays a")), "; ".join(notes[-1:]))
            self._stuck[host] = why
            out.append(
                event(T.BALANCE_HOST_STUCK, host=host, names=(names.get(host), None), reason=why)
            )
        for host in sorted(set(self._stuck) - set(plan.stuck)):
            del self._stuck[host]
            out.append(event(T.BALANCE_HOST_RELIEVED, host=host, names=(names.get(host), None)))
        return out


def make_planner(
    policy: Policy | None = None,
    groups: GroupSource = (),
    settings: BalancingSettings | None = None,
) -> Planner:
    """:returns: the planner hook for ``ClusterManager(planner=...)`` (see :class:`Planner`)."""
    return Planner(policy, groups, settings)


def make_decorator(
    groups: GroupSource,
    *,
    names: NameSource = None,
    host_names: NameSource = None,
) -> RequestDecorator:
    """
    :param groups: the affinity groups (a source).
    :param names: VM ids → names, for explanations (ids when missing).
    :param host_names: host ids → names, for explanations.
    :returns: the ``decorate`` hook for ``ClusterManager(decorate=...)``: every scheduling
        request with its groups and where the other members run; members on hosts being
        evacuated do not count.
    """

    def decorate(
        request: VmRequest, placement: Mapping[str, str], leaving: frozenset[str]
    ) -> VmRequest:
        return affinity.with_affinity(
            request,
            _read(groups),  # type: ignore[arg-type]
            placement,
            _read(names),  # type: ignore[arg-type]
            host_names=_read(host_names) or None,  # type: ignore[arg-type]
            leaving=leaving,
        )

    return decorate
