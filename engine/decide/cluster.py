"""Pure: the cluster manager, HA with fencing and maintenance as one deterministic state machine.

Like Proxmox's CRM (``Manager.pm``), :class:`ClusterManager` holds the cluster's HA state and is
driven from outside: ``observe(now, facts)`` takes what the shell saw (host liveness, VM reports,
outcomes of the commands it carried out), the admin's requests are methods that may refuse, and
``tick(now)`` returns the decisions as :mod:`~engine.decide.commands`, each with an event that
says why. It reads no clock and does no I/O: the engine runs it on the reactor (a tick every
second) and the simulator (:mod:`engine.sim`) on virtual time, the same code.

The parts: host liveness is :mod:`engine.decide.hoststate` (fed every liveness fact and a tick);
fencing is :mod:`engine.decide.fencing`; HA restarts :mod:`engine.decide.harestart`; maintenance
:mod:`engine.decide.evacuation`; every placement :mod:`engine.decide.placing` over the real
scheduler. This module routes facts, applies host transitions and their consequences, and keeps
the VMs' view in line with what hosts report (a host's agent is the truth about its host).

**The safety rule**: a VM whose host stopped answering is Unknown, and nothing starts it
elsewhere until its old copy is proven dead: its host was power-fenced or found powered off,
or the host answered again and does not run it. A VM never runs twice.

**The time budget** with the default :data:`~engine.decide.clusterstate.HA_TIMING` (ping every
2 s, 1 s to answer, Connecting after 2 misses, NonResponsive 5 s after the first miss), for a
host that dies at t = 0:

================================ ==========================================================
by t (worst case)                what
================================ ==========================================================
3 s                              the first ping it does not answer has timed out
5 s                              the second miss: Connecting
8 s                              grace over: NonResponsive, its VMs Unknown; a fencing round
                                 asks its power management and soft-fences at once
9 s                              power "off" (a host that lost power) is the proof: its VMs
                                 are Down and the HA ones are placed by the scheduler
11 s                             they are Up elsewhere (a start takes about 2 s)
14 s                             for a host that is on but cut off: soft fence fails (2 s),
                                 power fence confirms it off (2 s), restart (2 s)
================================ ==========================================================

oVirt needs 90-120 s to declare a host NonResponsive and about 2 minutes to restart its HA VMs;
Proxmox about 2 minutes. The simulator's scenarios show these figures (``HA_VM_RESTARTED``
events give each VM's latency).

**Restart**: :meth:`ClusterManager.from_snapshot` rebuilds the manager from what the store keeps
(:class:`~engine.decide.clustersnapshot.ClusterSnapshot`): host statuses, VM statuses including
Unknown, Down VMs with an error exit (the restart queue), jobs in flight. Fencing rounds start
again after ``startup_fence_delay``; retry counters start from zero.

**Extension points**: the scheduler's filter and weight plugins (``units``) decide every
placement, so affinity rules plug in there; a balancing planner (``planner``, e.g. the
balancer's ``plan_moves``) is asked for moves on every tick while the cluster is calm (no
fencing, no restarts, no maintenance, no migration in flight); its moves are checked against
the limits and the scheduler before they become migrations; a request decorator
(``decorate``, e.g. the affinity module's ``with_affinity``) gives every scheduling request what
extra units need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from . import clustersnapshot, evacuation, facts, fencing, harestart, hoststate, vmtrack
from .clustersnapshot import ClusterSnapshot, StoredHost, StoredVm
from .clusterstate import (
    ClusterState,
    ExitReason,
    HaSettings,
    HostRecord,
    MaintenanceRequest,
    Operation,
    RequestDecorator,
    VmRecord,
)
from .commands import Command, MarkVmUnknown, SetHostStatus, StartVm, StopVm
from .hoststate import HostEvent, HostState, InvalidTransition
from .model import HostView, VmRequest
from .placing import choice_text, place_vm, refusal_text
from .plugins import PolicyUnits
from .policies import Policy, make_policy


class RequestRefused(ValueError):
    """An admin request that makes no sense now; ``reason`` says why, for the API error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BalanceInput:
    """
    What a balancing planner sees.

    :ivar hosts: every host as the scheduler sees it.
    :ivar placements: ``(VM, host id)`` for every VM Up with nothing in flight.
    """

    now: float
    policy: Policy
    hosts: tuple[HostView, ...]
    placements: tuple[tuple[VmRequest, str], ...]


@dataclass(frozen=True, slots=True)
class PlannedMove:
    """A migration a planner proposes: ``vm`` to host ``dst``, and why."""

    vm: str
    dst: str
    reason: str


#: A balancing planner: the cluster in, proposed moves out (none by default).
MovePlanner = Callable[[BalanceInput], Sequence[PlannedMove]]


class ClusterManager:
    """
    The cluster's HA, fencing and maintenance decisions; see the module docstring.

    :param settings: the knobs.
    :param policy: the cluster's scheduling policy (the default policy when None).
    :param units: loaded scheduler plugins to use instead of the policy's entry points.
    :param planner: a balancing planner, or None for no balancing.
    :param decorate: adds affinity (or what other extra scheduler units need) to every
        scheduling request, or None.
    """

    def __init__(
        self,
        settings: HaSettings | None = None,
        *,
        policy: Policy | None = None,
        units: PolicyUnits | None = None,
        planner: MovePlanner | None = None,
        decorate: RequestDecorator | None = None,
    ) -> None:
        self.state = ClusterState(settings or HaSettings(), policy or make_policy(), units)
        self.state.decorate = decorate
        self._planner = planner

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def from_snapshot(
        cls,
        now: float,
        snapshot: ClusterSnapshot,
        settings: HaSettings | None = None,
        *,
        policy: Policy | None = None,
        units: PolicyUnits | None = None,
        planner: MovePlanner | None = None,
        decorate: RequestDecorator | None = None,
        restarted: bool = True,
    ) -> ClusterManager:
        """
        Build a manager from what the store keeps.

        :param restarted: the engine restarted (links not connected yet: watched hosts start
            their grace period, fencing waits ``startup_fence_delay``, an event says what was
            resumed); False for a cluster known to be healthy at ``now`` (the simulator's start).
        :raises ValueError: for a status, exit reason or job the manager does not know.
        """
        manager = cls(settings, policy=policy, units=units, planner=planner, decorate=decorate)
        clustersnapshot.load(manager.state, now, snapshot, restarted=restarted)
        return manager

    def add_host(self, now: float, host: StoredHost, *, link_up: bool = False) -> None:
        """
        Track a new host (one an admin added) in its stored status.

        :param link_up: its link is known to be connected (else it starts its grace period).
        """
        clustersnapshot.add_host(self.state, now, host, link_up=link_up)

    def add_vm(self, vm: StoredVm) -> None:
        """Track a new VM (one an admin defined) in its stored status."""
        clustersnapshot.add_vm(self.state, vm)

    def snapshot(self) -> ClusterSnapshot:
        """:returns: what the store holds once the shell has carried out every command."""
        return clustersnapshot.dump(self.state)

    # -- facts ----------------------------------------------------------------------------------

    def observe(self, now: float, seen: Iterable[facts.Fact]) -> None:
        """
        Take what the shell saw, in order. Facts about unknown hosts or VMs are ignored; no
        fact is ever refused.
        """
        for fact in seen:
            self._observe(now, fact)

    def _observe(self, now: float, fact: facts.Fact) -> None:
        state = self.state
        host = state.hosts.get(fact.host)
        if host is None:
            return
        if isinstance(fact, facts.HostSeen):
            self._apply(host, fact.event, now, fact.detail)
        elif isinstance(fact, facts.VmSeen):
            vmtrack.vm_seen(state, host, fact.vm, fact.status, fact.exit, fact.detail, now)
        elif isinstance(fact, facts.HostVms):
            vmtrack.host_vms(state, host, fact.vms, now)
        elif isinstance(fact, facts.JobDone):
            vmtrack.job_done(state, fact, now)
        elif isinstance(fact, facts.FenceDone):
            self._prove(host, fencing.fence_done(state, host, fact, now), now)
        elif isinstance(fact, facts.PowerSeen):
            self._prove(host, fencing.power_seen(state, host, fact), now)
        elif isinstance(fact, facts.HostLoad):
            state.record_load(host, fact.cpu_percent, now)

    def _apply(self, host: HostRecord, event: HostEvent, now: float, detail: str = "") -> None:
        """Feed ``event`` to the host state machine and act on a change of state."""
        transition = hoststate.step(
            host.status, event, now, timing=self.state.settings.timing, detail=detail
        )
        host.status = transition.after
        if transition.changed:
            self._host_changed(host, transition, now)

    def _host_changed(self, host: HostRecord, t: hoststate.Transition, now: float) -> None:
        state = self.state
        new = t.after.state
        state.emit(SetHostStatus(host.id, str(new), t.reason))
        if t.event is HostEvent.ACTIVATE_REQUESTED:
            state.note(T.HOST_ACTIVATED, host=host.id)
        if new is HostState.CONNECTING:
            state.note(T.HOST_CONNECTING, host=host.id, reason=t.reason)
        elif new is HostState.UP and t.event is not HostEvent.ACTIVATE_REQUESTED:
            old = t.before.state if t.before is not None else None
            kind = T.HOST_RECOVERED if old is HostState.CONNECTING else T.HOST_UP
            state.note(kind, host=host.id, reason=t.reason)
        elif new is HostState.NON_RESPONSIVE:
            state.note(T.HOST_NON_RESPONSIVE, host=host.id, reason=t.reason)
            self._host_lost(host, now)
        elif new is HostState.PREPARING_FOR_MAINTENANCE:
            state.note(T.HOST_MAINTENANCE_STARTED, host=host.id)
        elif new is HostState.MAINTENANCE:
            state.note(T.HOST_MAINTENANCE, host=host.id, reason=t.reason)
        elif new is HostState.DOWN:
            state.note(T.HOST_DOWN, host=host.id, reason=t.reason)
        if new is HostState.UP:
            fencing.host_answered(state, host)
            harestart.wake(state, now)
            if host.maintenance is not None and t.event is not HostEvent.ACTIVATE_REQUESTED:
                self._apply(host, HostEvent.MAINTENANCE_REQUESTED, now, "maintenance goes on")

    def _host_lost(self, host: HostRecord, now: float) -> None:
        """``host`` is NonResponsive: its VMs are Unknown until it answers or is fenced."""
        state = self.state
        began = host.status.trouble_since if host.status.trouble_since is not None else now
        state.pending.release_host(host.id)
        for vm in state.vms_on(host.id):
            if vm.status is VmStatus.UNKNOWN:
                continue
            vm.status, vm.lost_at = VmStatus.UNKNOWN, began
            reason = f"host {host.name} is not responding"
            state.emit(MarkVmUnknown(vm.id, host.id, reason))
            state.note(T.VM_UNKNOWN, host=host.id, vm=vm.id)

    def _prove(self, host: HostRecord, proof: str | None, now: float) -> None:
        """``host`` is proven dead (when ``proof``): it is Down and so are its VMs."""
        if proof is None or host.state is HostState.DOWN:
            return
        state = self.state
        fencing.fenced(host)
        state.note(T.HOST_FENCED, host=host.id, proof=proof)
        self._apply(host, HostEvent.FENCED, now, proof)
        why = f"its host {host.name} was fenced ({proof})"
        for vm in state.vms_on(host.id):
            vmtrack.vm_down(state, vm, host.id, ExitReason.HOST_FENCED, why, now)
        if host.maintenance is not None:
            self._apply(host, HostEvent.MAINTENANCE_REQUESTED, now, "maintenance was asked")

    # -- admin requests -----------------------------------------------------------------------

    def _host(self, host_id: str) -> HostRecord:
        host = self.state.hosts.get(host_id)
        if host is None:
            raise RequestRefused(f"no host {host_id!r}")
        return host

    def _vm(self, vm_id: str) -> VmRecord:
        vm = self.state.vms.get(vm_id)
        if vm is None:
            raise RequestRefused(f"no VM {vm_id!r}")
        return vm

    def _request(self, host: HostRecord, event: HostEvent, now: float) -> None:
        try:
            self._apply(host, event, now)
        except InvalidTransition as e:
            raise RequestRefused(f"host {host.name}: {e.reason}") from None

    def request_maintenance(self, now: float, host_id: str, *, move_back: bool = False) -> None:
        """
        Put a host into maintenance: evacuate it (see :mod:`engine.decide.evacuation`).

        :param move_back: migrate its VMs back when it is activated.
        :raises RequestRefused: for an unknown host or one that cannot enter maintenance.
        """
        host = self._host(host_id)
        if host.maintenance is not None:
            return  # asked twice: the first request and its deadline stand
        if host.state is HostState.CONNECTING and self.state.vms_on(host.id):
            raise RequestRefused(
                f"host {host.name} is Connecting (in its grace period) and holds VMs; ask again "
                "once it answers or is declared NonResponsive"
            )
        deadline = now + self.state.settings.maintenance_deadline
        host.maintenance = MaintenanceRequest(now, deadline, move_back)
        try:
            self._request(host, HostEvent.MAINTENANCE_REQUESTED, now)
        except RequestRefused:
            host.maintenance = None
            raise

    def activate(self, now: float, host_id: str) -> None:
        """
        Take a host out of maintenance; VMs evacuated with ``move_back`` move back once it is Up.

        :raises RequestRefused: for an unknown host or one that cannot be activated.
        """
        host = self._host(host_id)
        request = host.maintenance
        host.maintenance = None
        try:
            self._request(host, HostEvent.ACTIVATE_REQUESTED, now)
        except RequestRefused:
            host.maintenance = request
            raise
        if request is not None and request.move_back:
            self.state.move_back.extend((vm, host.id) for vm in request.moved)

    def start_vm(self, now: float, vm_id: str) -> None:
        """
        Start a Down VM on the host the scheduler chooses (refusals are events, not retried).

        :raises RequestRefused: for an unknown VM or one that is not Down.
        """
        state = self.state
        vm = self._vm(vm_id)
        if vm.status is not VmStatus.DOWN or vm.restart is not None:
            raise RequestRefused(f"VM {vm.name} is {vm.status}; only a Down VM can be started")
        decision = place_vm(state, state.request(vm), now, kind="start").decision
        if decision.host is None:
            state.note(T.VM_START_REFUSED, vm=vm.id, reason=refusal_text(decision))
            return
        vm.status, vm.host, vm.exit = VmStatus.WAIT_FOR_LAUNCH, decision.host, None
        vm.op = Operation("start", decision.host, now, now + state.settings.start_timeout)
        reason = choice_text(decision)
        state.emit(StartVm(vm.id, decision.host, f"started by the user; {reason}", decision))
        state.note(T.VM_PLACED, host=decision.host, vm=vm.id, reason=reason)

    def stop_vm(self, now: float, vm_id: str) -> None:
        """
        Stop a VM (an admin's stop: it is not restarted); a VM waiting for an HA restart
        leaves the queue.

        :raises RequestRefused: for an unknown VM, or one in Unknown (its host must be fenced
            or answer first) or in the middle of a start or migration.
        """
        state = self.state
        vm = self._vm(vm_id)
        if vm.op is not None and vm.op.kind == "stop":
            return  # asked twice
        if vm.status is VmStatus.UNKNOWN:
            raise RequestRefused(
                f"VM {vm.name} is Unknown: its host does not answer; it can be stopped once the "
                "host answers or is fenced"
            )
        if vm.op is not None:
            raise RequestRefused(f"VM {vm.name} is {vm.status}; try again when it is done")
        if vm.status is VmStatus.DOWN:
            if vm.restart is not None:
                vm.restart = None
                state.note(T.HA_VM_NOT_RESTARTED, vm=vm.id, reason="the user stopped it")
            return
        host = vm.host
        assert host is not None
        vm.status = VmStatus.POWERING_DOWN
        vm.op = Operation("stop", host, now, math.inf)
        state.note(T.VM_STOPPING, host=host, vm=vm.id, reason="the user stops it")
        state.emit(StopVm(vm.id, host, "stopped by the user"))

    # -- decisions ------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Command]:
        """
        Let time pass and decide.

        :returns: the commands decided since the last tick (by ``observe`` and requests too),
            in order; each decision is followed or preceded by the event that explains it.
        """
        state = self.state
        for host in state.sorted_hosts():
            self._apply(host, HostEvent.TICK, now)
        vmtrack.timeouts(state, now)
        fencing.guard(state)
        for host in state.sorted_hosts():
            fencing.advance(state, host, now)
        harestart.tick(state, now)
        evacuation.tick(state, now, self._apply)
        self._balance(now)
        out, state.outbox = state.outbox, []
        return out

    def _calm(self) -> bool:
        state = self.state
        return not any(
            vm.restart is not None or vm.op is not None or vm.status is VmStatus.UNKNOWN
            for vm in state.vms.values()
        ) and not any(h.maintenance is not None for h in state.hosts.values())

    def _balance(self, now: float) -> None:
        if self._planner is None or not self._calm():
            return
        state = self.state
        placements = tuple(
            (vm.request(), vm.host)
            for vm in state.sorted_vms()
            if vm.status is VmStatus.UP and vm.host is not None
        )
        seen = BalanceInput(now, state.policy, tuple(state.host_views(now)), placements)
        for move in self._planner(seen):
            self._balance_move(move, now)

    def _balance_move(self, move: PlannedMove, now: float) -> None:
        state = self.state
        vm = state.vms.get(move.vm)
        if vm is None or vm.status is not VmStatus.UP or vm.op is not None or vm.host is None:
            return
        if state.in_flight(vm.host, "migrate", outgoing=True) >= state.settings.max_migrations_out:
            return
        request = state.request(vm, current_host=vm.host)
        decision = place_vm(state, request, now, kind="migrate", only={move.dst}).decision
        if decision.host is None:
            state.note(T.VM_MIGRATION_REFUSED, vm=vm.id, reason=refusal_text(decision))
            return
        source = vm.host
        evacuation.start_migration(state, vm, decision, f"balancing: {move.reason}", now)
        state.note(
            T.BALANCE_MIGRATION,
            host=source,
            vm=vm.id,
            destination=decision.host_name,
            reason=move.reason,
        )
