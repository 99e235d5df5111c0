"""``ClusterService``: the cluster manager in the live engine; it owns host state.

The pure :class:`~engine.decide.cluster.ClusterManager` decides host states (the host state
machine), HA restarts with fencing, maintenance evacuations and every placement. This service
is its imperative shell:

- **building**: :meth:`ClusterService.load` reads every host (with its power management) and
  VM from the store and rebuilds the manager with ``from_snapshot(..., restarted=True)``:
  hosts resume their stored state with a grace period, fencing waits
  ``startup_fence_delay``, HA VMs found Down with an error join the restart queue;
- **time**: a tick every ``tick_interval`` seconds on the engine's clock, and one more as soon
  as a fact changed something (a proof of death starts the HA restarts at once, not at the
  next tick) or a host's grace period ends (NonResponsive on time, not up to a tick late);
- **facts in**: :meth:`observe` takes what the monitors, VM sync, jobs and fencing saw
  (translated by :mod:`engine.clusterfacts`); what a fact decides at once (a host's new status,
  VMs marked Unknown) is carried out at once, what time decides at the next tick;
- **commands out**: handed to the :class:`~engine.clustercarry.CommandCarrier`, which carries
  them out through the engine's existing actions and reports their outcomes back here;
- **admin requests**: maintenance, activate, and the bookkeeping of VM starts, migrations and
  stops go through the manager (its refusals become ``ActionRefused``). A start or migration
  the admin asked for is carried out by the admin's own job: the request *claims* the
  ``StartVm`` / ``MigrateVm`` it produced, and everything else it decided is carried out as
  usual.

Host state is decided once, here: :class:`~engine.monitoring.HostMonitor` only reports link
events and writes the statuses this service decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol
from uuid import UUID

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from . import clusterfacts
from .decide import commands as c
from .decide import facts as f
from .decide import hoststate
from .decide.cluster import ClusterManager, MovePlanner, RequestRefused
from .decide.clusteradmin import MaintenanceReport
from .decide.clusterstate import HaSettings, RequestDecorator
from .decide.policies import Policy
from .decide.scheduler import Decision, PendingResources
from .errors import ActionRefused
from .interfaces import IStore
from .store.errors import NotFound
from .store.rows import Host, HostPowerManagement, Vm


class Carrier(Protocol):
    """What carries out the manager's commands (:class:`engine.clustercarry.CommandCarrier`)."""

    def carry_out(self, commands: list[c.Command]) -> Deferred:
        """Carry out ``commands`` in order; fires once the rows are written (never fails)."""


class ClusterService:
    """
    The cluster manager, run by the engine (see the module docstring).

    :param store: read at :meth:`load`.
    :param settings: the manager's settings (``EngineConfig.ha_settings``).
    :param policy: the cluster's scheduling policy.
    :param clock: the engine's clock (``seconds``, ``callLater``).
    :param tick_interval: seconds between ticks.
    :param move_back: whether maintenance requests move VMs back on activation by default.
    :param decorate: gives every scheduling request what extra units need (affinity).
    :param planner: the balancer and power saving (``engine.decide.balancing.make_planner``).
    """

    log = Logger()

    def __init__(
        self,
        *,
        store: IStore,
        settings: HaSettings,
        policy: Policy,
        clock: Any,
        tick_interval: float = 1.0,
        move_back: bool = False,
        decorate: RequestDecorator | None = None,
        planner: MovePlanner | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._policy = policy
        self._clock = clock
        self._interval = tick_interval
        self._move_back = move_back
        self._decorate = decorate
        self._planner = planner
        self.manager = ClusterManager(settings, policy=policy, decorate=decorate, planner=planner)
        #: Carries out the manager's commands; the engine sets it (it needs the actions).
        self.carrier: Carrier | None = None
        #: Called after every tick (maintenance jobs watch their host's report).
        self.after_tick: list[Callable[[], None]] = []
        self._loop: LoopingCall | None = None
        self._wake: Any = None

    @property
    def pending(self) -> PendingResources:
        """The scheduler's ledger: resources promised to starts and migrations in flight."""
        return self.manager.state.pending

    def now(self) -> float:
        """The engine's time (the manager's ``now``)."""
        return float(self._clock.seconds())

    # -- life --------------------------------------------------------------------------------

    async def load(self, hosts: list[Host], vms: list[Vm]) -> None:
        """Rebuild the manager from the store's rows (engine start; see the module docstring)."""
        powers: dict[UUID, HostPowerManagement] = {}
        for host in hosts:
            try:
                powers[host.id] = await self._store.get_power_management(host.id)
            except NotFound:
                continue
        snapshot = clusterfacts.snapshot(hosts, vms, powers)
        self.manager = ClusterManager.from_snapshot(
            self.now(),
            snapshot,
            self._settings,
            policy=self._policy,
            restarted=True,
            decorate=self._decorate,
            planner=self._planner,
        )
        await self._carry(self.manager.decided())

    def start(self) -> None:
        """Tick every ``tick_interval`` seconds from now on."""
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False).addErrback(
            lambda failure: self.log.failure("the cluster manager's ticks stopped", failure)
        )

    @property
    def running(self) -> bool:
        """Whether the manager ticks (between :meth:`start` and :meth:`stop`)."""
        return self._loop is not None

    def stop(self) -> None:
        """Stop deciding: no more ticks, and facts from now on are dropped (the next engine
        rebuilds the manager from the store; running jobs end on their own)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None

    def tick(self) -> Deferred:
        """Let time pass: the manager decides, the carrier acts. :returns: once written."""
        try:
            commands = self.manager.tick(self.now())
        except Exception:  # a bug must not stop the ticks: log it and go on next second
            self.log.failure("the cluster manager failed to tick")
            return succeed(None)
        self._arm(self._next_deadline())
        d = self._carry(commands)
        for observer in list(self.after_tick):
            try:
                observer()
            except Exception:
                self.log.failure("an after-tick observer failed")
        return d

    # -- facts -------------------------------------------------------------------------------

    def observe(self, *seen: f.Fact) -> Deferred:
        """
        Give the manager what the engine saw; carry out what it decided at once.

        :returns: a Deferred firing once those decisions are written (never failing).
        """
        if self._loop is None:
            return succeed(None)  # not started yet, or stopped
        try:
            self.manager.observe(self.now(), seen)
        except Exception:
            self.log.failure("the cluster manager failed on {facts}", facts=seen)
            return succeed(None)
        decided = self.manager.decided()
        if decided:  # something changed: what follows from it need not wait for the next tick
            self._arm(self.now())
        self._arm(self._next_deadline())
        return self._carry(decided)

    def _next_deadline(self) -> float | None:
        """The earliest time a host's state changes by itself (a grace period ending)."""
        timing = self._settings.timing
        due = [hoststate.deadline(h.status, timing) for h in self.manager.state.hosts.values()]
        return min((d for d in due if d is not None), default=None)

    def _arm(self, when: float | None) -> None:
        """Tick at ``when`` too (just after it), unless an extra tick comes sooner already."""
        if when is None or self._loop is None:
            return
        at = max(when, self.now())
        if self._wake is not None and self._wake.active():
            if self._wake.getTime() <= at + 0.001:
                return
            self._wake.cancel()
        self._wake = self._clock.callLater(at - self.now() + 0.001, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self.tick()

    def _carry(self, commands: list[c.Command]) -> Deferred:
        if not commands:
            return succeed(None)
        if self.carrier is None:
            self.log.warn("{count} cluster commands dropped: no carrier", count=len(commands))
            return succeed(None)
        return self.carrier.carry_out(commands)

    # -- hosts -------------------------------------------------------------------------------

    def host_status(self, host_id: UUID) -> hoststate.HostStatus | None:
        """:returns: the host's status as the manager has it, or None for an unknown host."""
        return self.manager.host_status(str(host_id))

    def add_host(self, host: Host) -> None:
        """Track a host an admin added (Installing until its agent connects)."""
        self.manager.add_host(self.now(), clusterfacts.stored_host(host))

    def update_host(self, host: Host, power: HostPowerManagement | None = None) -> None:
        """A host's sizes (learnt at connection) or power management changed."""
        record = self.manager.state.hosts.get(str(host.id))
        if record is None:
            return
        stored = clusterfacts.stored_host(host, power)
        if power is None:  # keep what the manager knows of its power management
            stored = replace(stored, power_management=record.power_management,
                             fencing_enabled=record.fencing_enabled)  # fmt: skip
        self.manager.update_host(stored)

    def check_remove_host(self, host_id: UUID) -> None:
        """:raises ActionRefused: when the host may not be removed (not in Maintenance...)."""
        try:
            self.manager.remove_host(self.now(), str(host_id), check_only=True)
        except RequestRefused as e:
            raise ActionRefused(e.reason) from None

    def forget_host(self, host_id: UUID) -> None:
        """Stop tracking a removed host."""
        try:
            self.manager.remove_host(self.now(), str(host_id))
        except RequestRefused as e:
            self.log.warn("host {host_id} removed from the store while {why}", host_id=host_id,
                          why=e.reason)  # fmt: skip
            self.manager.state.hosts.pop(str(host_id), None)

    def request_maintenance(self, host_id: UUID, *, move_back: bool | None = None) -> Deferred:
        """
        Start evacuating a host for maintenance.

        :param move_back: move its VMs back on activation (None: the configured default).
        :raises ActionRefused: when the host cannot enter maintenance now.
        :returns: a Deferred firing once the decisions are written.
        """
        back = self._move_back if move_back is None else move_back
        self._request(lambda now: self.manager.request_maintenance(now, str(host_id),
                                                                   move_back=back))  # fmt: skip
        return self.tick()  # evacuation starts now, not at the next tick

    def activate(self, host_id: UUID) -> Deferred:
        """
        Take a host out of maintenance.

        :raises ActionRefused: when it cannot be activated (NonResponsive...).
        :returns: a Deferred firing once the decisions are written.
        """
        self._request(lambda now: self.manager.activate(now, str(host_id)))
        return self._carry(self.manager.decided())

    def maintenance_report(self, host_id: UUID) -> MaintenanceReport:
        """:returns: where the host's maintenance stands."""
        return self.manager.maintenance_report(str(host_id))

    def _request(self, request: Callable[[float], Any]) -> Any:
        try:
            return request(self.now())
        except RequestRefused as e:
            raise ActionRefused(e.reason) from None

    # -- VMs ---------------------------------------------------------------------------------

    def add_vm(self, vm: Vm) -> None:
        """Track a VM an admin defined (or one found running on a host)."""
        self.manager.add_vm(clusterfacts.stored_vm(vm))

    def update_vm(self, vm: Vm) -> None:
        """A VM's definition changed (HA, priority, sizes, pinning)."""
        self.manager.update_vm(clusterfacts.stored_vm(vm))

    def remove_vm(self, vm_id: UUID) -> None:
        """Stop tracking a removed VM."""
        self.manager.remove_vm(str(vm_id))

    def start_vm(self, vm_id: UUID, *, host: UUID | None) -> tuple[Decision, c.StartVm | None]:
        """
        Place a Down VM (the admin's start) and claim the start for the caller's job.

        :returns: the scheduler's decision and the claimed command (None when refused).
        :raises ActionRefused: when the VM cannot be started now (not Down, HA restarting it).
        """
        decision = self._request(lambda now: self.manager.start_vm(
            now, str(vm_id), host=None if host is None else str(host)))  # fmt: skip
        return decision, self._claim(c.StartVm, vm_id)

    def migrate_vm(self, vm_id: UUID, *, host: UUID | None) -> tuple[Decision, c.MigrateVm | None]:
        """
        Place an Up VM elsewhere (the admin's migration) and claim it for the caller's job.

        :returns: the scheduler's decision and the claimed command (None when refused).
        :raises ActionRefused: when the VM cannot migrate now.
        """
        decision = self._request(lambda now: self.manager.migrate_vm(
            now, str(vm_id), host=None if host is None else str(host)))  # fmt: skip
        return decision, self._claim(c.MigrateVm, vm_id)

    def stop_vm(self, vm_id: UUID) -> c.StopVm | None:
        """
        Record the admin's stop and claim it for the caller's job.

        :returns: the claimed command, or None when there is nothing to stop (a Down VM; one
            waiting for an HA restart leaves the queue).
        :raises ActionRefused: when the VM cannot be stopped now (Unknown, starting...).
        """
        self._request(lambda now: self.manager.stop_vm(now, str(vm_id)))
        return self._claim(c.StopVm, vm_id)

    def restart_pending(self, vm_id: UUID) -> bool:
        """:returns: whether HA waits to restart the VM."""
        record = self.manager.state.vms.get(str(vm_id))
        return record is not None and record.restart is not None

    def _claim(self, kind: type, vm_id: UUID) -> Any:
        """Take the command of ``kind`` for ``vm_id`` out of what was just decided; carry out
        the rest."""
        claimed = None
        rest: list[c.Command] = []
        for command in self.manager.decided():
            ours = isinstance(command, kind) and getattr(command, "vm", None) == str(vm_id)
            if claimed is None and ours:
                claimed = command
            else:
                rest.append(command)
        self._carry(rest)
        return claimed
