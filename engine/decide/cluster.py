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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.store.auditlog import AuditType as T
from engine.store.rows import VmStatus

from . import (
    clusteradmin,
    clustersnapshot,
    evacuation,
    facts,
    fencing,
    harestart,
    hoststate,
    vmtrack,
)
from .clusteradmin import RequestRefused as RequestRefused
from .clustersnapshot import ClusterSnapshot, StoredHost, StoredVm
from .clusterstate import (
    ClusterState,
    ExitReason,
    HaSettings,
    HostRecord,
    RequestDecorator,
    VmRecord,
)
from .commands import (
    POWER_OFF_HOST,
    POWER_ON_HOST,
    Command,
    Event,
    MarkVmUnknown,
    PowerHost,
    SetHostStatus,
)
from .hoststate import HostEvent, HostState
from .model import HostView, VmRequest
from .moves import MoveHistory, VmPlacement
from .placing import place_vm, refusal_text
from .plugins import PolicyUnits
from .policies import Policy, make_policy
from .powersave import POWER_OFF, POWER_ON, SHORTAGE, PowerHistory
from .scheduler import Decision


@dataclass(frozen=True, slots=True)
class BalanceInput:
    """
    What a balancing planner sees.

    :ivar hosts: every host as the scheduler sees it.
    :ivar placements: ``(VM, host id)`` for every VM Up with nothing in flight.
    :ivar vms: the same VMs as the balancer sees them (CPU usage, migratable).
    :ivar history: the balancer's past moves (cooldown, no move back).
    :ivar power_history: power saving's past host power actions and shortages.
    :ivar pm_hosts: hosts with power management (power saving may switch them).
    :ivar waiting_vms: HA VMs waiting for a restart that no host could take.
    :ivar calm: nothing else is going on; when False (only VMs wait for room), moves and
        power-offs are ignored and only a power-on is taken.
    :ivar calm_since: since when the cluster is calm (loads need time to show past moves).
    """

    now: float
    policy: Policy
    hosts: tuple[HostView, ...]
    placements: tuple[tuple[VmRequest, str], ...]
    vms: tuple[VmPlacement, ...] = ()
    history: MoveHistory = MoveHistory()
    power_history: PowerHistory = PowerHistory()
    pm_hosts: frozenset[str] = frozenset()
    waiting_vms: int = 0
    calm: bool = True
    calm_since: float = 0.0


@dataclass(frozen=True, slots=True)
class PlannedMove:
    """A migration a planner proposes: ``vm`` to host ``dst``, and why."""

    vm: str
    dst: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedPower:
    """
    A host power action power saving proposes: ``action`` is
    :data:`~engine.decide.powersave.POWER_OFF` (maintenance, then power off),
    :data:`~engine.decide.powersave.POWER_ON` (power on, activate once it answers) or
    :data:`~engine.decide.powersave.SHORTAGE` (nothing to do: capacity was short, kept in the
    power history so no host is switched off soon after; ``host`` empty).
    """

    host: str
    action: str
    reason: str


#: A balancing planner: the cluster in, proposed moves, power actions and events (e.g. a host
#: the balancer cannot relieve) out; nothing by default.
MovePlanner = Callable[[BalanceInput], Sequence[PlannedMove | PlannedPower | Event]]

#: How long the balancer's move history is kept (longer than any no-move-back window).
_HISTORY_SECONDS = 4 * 3600.0


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
            if fact.event in (HostEvent.CONNECTED, HostEvent.HEARTBEAT_OK):
                self._woken(host, now)
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
        elif isinstance(fact, facts.VmLoad):
            vm = state.vms.get(fact.vm)
            if vm is not None and vm.host == fact.host:
                vm.cpu_percent = fact.cpu_percent

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
            # "responding again" after trouble, as the audit log always said; Up otherwise
            back = old in (HostState.CONNECTING, HostState.NON_RESPONSIVE)
            kind = T.HOST_RECOVERED if back else T.HOST_UP
            state.note(kind, host=host.id, reason=t.reason)
        elif new is HostState.NON_RESPONSIVE:
            state.note(T.HOST_NON_RESPONSIVE, host=host.id, reason=t.reason)
            self._host_lost(host, now)
        elif new is HostState.PREPARING_FOR_MAINTENANCE:
            state.note(T.HOST_MAINTENANCE_STARTED, host=host.id)
        elif new is HostState.MAINTENANCE:
            state.note(T.HOST_MAINTENANCE, host=host.id, reason=t.reason)
            if host.power_saving == "switching_off":
                host.power_saving = "off"
                state.emit(PowerHost(host.id, POWER_OFF_HOST, "power saving: empty and idle"))
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

    # -- admin requests (engine/decide/clusteradmin.py) --------------------------------------

    def request_maintenance(self, now: float, host_id: str, *, move_back: bool = False) -> None:
        """
        Put a host into maintenance: evacuate it (see :mod:`engine.decide.evacuation`).

        :param move_back: migrate its VMs back when it is activated.
        :raises RequestRefused: for an unknown host or one that cannot enter maintenance.
        """
        clusteradmin.request_maintenance(self.state, self._apply, now, host_id, move_back=move_back)

    def activate(self, now: float, host_id: str) -> None:
        """
        Take a host out of maintenance; VMs evacuated with ``move_back`` move back once it is Up.

        :raises RequestRefused: for an unknown host or one that cannot be activated.
        """
        clusteradmin.activate(self.state, self._apply, now, host_id)

    def start_vm(self, now: float, vm_id: str, *, host: str | None = None) -> Decision:
        """
        Start a Down VM on the host the scheduler chooses (a refusal is an event, not retried).

        :param host: only this host may take it (the admin's choice), else any.
        :returns: the scheduler's decision; its ``host`` is None when it refused (the VM stays
            Down), else a ``StartVm`` for that host is queued. The per-host start limit does
            not apply to the admin's starts; they count towards it.
        :raises RequestRefused: for an unknown VM, one that is not Down, or one HA is about to
            restart.
        """
        return clusteradmin.start_vm(self.state, now, vm_id, host=host)

    def migrate_vm(self, now: float, vm_id: str, *, host: str | None = None) -> Decision:
        """
        Live-migrate an Up VM to ``host`` or the scheduler's choice (an admin's migration).

        :returns: the scheduler's decision; its ``host`` is None when it refused (nothing is
            noted: the caller reports it), else a ``MigrateVm`` is queued.
        :raises RequestRefused: for an unknown VM, one that is not Up or has something in
            flight, or its own host. The per-host limits do not apply (the agents pace an
            admin's migrations); they count towards them.
        """
        return clusteradmin.migrate_vm(self.state, now, vm_id, host=host)

    def stop_vm(self, now: float, vm_id: str) -> None:
        """
        Stop a VM (an admin's stop: it is not restarted); a VM waiting for an HA restart
        leaves the queue.

        :raises RequestRefused: for an unknown VM, or one in Unknown (its host must be fenced
            or answer first) or in the middle of a start or migration.
        """
        clusteradmin.stop_vm(self.state, now, vm_id)

    def maintenance_report(self, host_id: str) -> clusteradmin.MaintenanceReport:
        """:returns: where a host's maintenance stands. :raises RequestRefused: unknown host."""
        return clusteradmin.maintenance_report(self.state, host_id)

    def host_status(self, host_id: str) -> hoststate.HostStatus | None:
        """:returns: a host's status (the host state machine's), or None when unknown."""
        return clusteradmin.host_status(self.state, host_id)

    def update_host(self, host: StoredHost) -> None:
        """A host's definition changed (sizes learnt at connection, power management)."""
        clusteradmin.update_host(self.state, host)

    def remove_host(self, now: float, host_id: str, *, check_only: bool = False) -> None:
        """
        Forget a host in Maintenance, Down or never connected, with no VMs.

        :param check_only: only check that it may be removed.
        :raises RequestRefused: why it may not be removed.
        """
        clusteradmin.remove_host(self.state, now, host_id, check_only=check_only)

    def update_vm(self, vm: StoredVm) -> None:
        """A VM's definition changed (its status is kept); an unknown VM is added."""
        clusteradmin.update_vm(self.state, vm)

    def remove_vm(self, vm_id: str) -> None:
        """Forget a VM."""
        clusteradmin.remove_vm(self.state, vm_id)

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
        return self.decided()

    def decided(self) -> list[Command]:
        """
        :returns: the commands decided since the last call (or ``tick``), by ``observe`` and
            requests, without letting time pass: the engine carries out what a fact or a
            request decided at once, and what time decides on its next tick.
        """
        out, self.state.outbox = self.state.outbox, []
        return out

    def _calm(self, *, restarts: bool = True) -> bool:
        """:param restarts: HA restarts waiting count as unrest (else only the others)."""
        state = self.state
        return (
            not any(
                (restarts and vm.restart is not None)
                or vm.op is not None
                or vm.status is VmStatus.UNKNOWN
                for vm in state.vms.values()
            )
            and not any(
                h.maintenance is not None and h.state is not HostState.MAINTENANCE
                for h in state.hosts.values()
            )
            and not state.move_back
        )

    def _balance(self, now: float) -> None:
        if self._planner is None:
            return
        state = self.state
        calm = self._calm()
        waiting = sum(
            1
            for vm in state.vms.values()
            if vm.restart is not None and vm.op is None and vm.restart.attempts > 0
        )
        if not calm:
            state.calm_since = None
            if not (waiting and self._calm(restarts=False)):
                return
        elif state.calm_since is None:
            state.calm_since = now
        state.moves = state.moves.since(now - _HISTORY_SECONDS)
        for item in self._planner(self._balance_input(now, calm, waiting)):
            if isinstance(item, Event):
                state.emit(item)
            elif isinstance(item, PlannedPower):
                self._power(item, now, calm)
            elif calm:
                self._balance_move(item, now)

    def _balance_input(self, now: float, calm: bool, waiting: int) -> BalanceInput:
        state = self.state
        up = [
            vm
            for vm in state.sorted_vms()
            if vm.status is VmStatus.UP and vm.host is not None and vm.op is None
        ]
        return BalanceInput(
            now,
            state.policy,
            tuple(state.host_views(now)),
            tuple((vm.request(), vm.host) for vm in up if vm.host is not None),
            vms=tuple(_placement(vm) for vm in up),
            history=state.moves,
            power_history=state.power,
            pm_hosts=frozenset(h.id for h in state.hosts.values() if h.power_management),
            waiting_vms=waiting,
            calm=calm,
            calm_since=now if state.calm_since is None else state.calm_since,
        )

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
        state.moves = state.moves.record(vm.id, source, decision.host, now)
        state.note(
            T.BALANCE_MIGRATION,
            host=source,
            vm=vm.id,
            destination=decision.host_name,
            reason=move.reason,
        )

    def _power(self, planned: PlannedPower, now: float, calm: bool) -> None:
        """Carry out a power-saving action if the host is still as the planner saw it."""
        state = self.state
        if planned.action == SHORTAGE:
            kept = tuple(r for r in state.power.records if r.action != SHORTAGE)
            state.power = PowerHistory(kept).record("", SHORTAGE, now)
            return
        host = state.hosts.get(planned.host)
        if host is None or not host.power_management:
            return
        if planned.action == POWER_ON:
            last = state.power.last(host.id)  # the history survives restarts, the flag not
            if host.state not in _OFF or last is None or last.action != POWER_OFF:
                return
            host.power_saving = "waking"
            state.power = state.power.record(host.id, POWER_ON, now)
            state.note(T.POWER_SAVING_HOST_ON, host=host.id, reason=planned.reason)
            state.emit(PowerHost(host.id, POWER_ON_HOST, planned.reason))
        elif planned.action == POWER_OFF and calm:
            if host.state is not HostState.UP or state.vms_on(host.id) or host.maintenance:
                return
            state.power = state.power.record(host.id, POWER_OFF, now)
            state.note(T.POWER_SAVING_HOST_OFF, host=host.id, reason=planned.reason)
            host.power_saving = "switching_off"
            self.request_maintenance(now, host.id)

    def _woken(self, host: HostRecord, now: float) -> None:
        """A host power saving powered on answers: activate it (it was in Maintenance)."""
        if host.power_saving != "waking":
            return
        if host.state is HostState.MAINTENANCE:
            host.maintenance, host.power_saving = None, None
            self._apply(host, HostEvent.ACTIVATE_REQUESTED, now, "powered on by power saving")
        elif host.state is HostState.UP:
            host.power_saving = None


def _placement(vm: VmRecord) -> VmPlacement:
    """:returns: an Up VM as the balancer sees it (pinned VMs do not move)."""
    assert vm.host is not None
    migratable = vm.pinned_host is None
    return VmPlacement(vm.id, vm.name, vm.host, vm.memory_mib, vm.vcpus, vm.cpu_percent, migratable)


#: Host states of a host that power saving switched off.
_OFF = frozenset({HostState.MAINTENANCE, HostState.DOWN})
