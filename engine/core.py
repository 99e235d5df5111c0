"""``Engine``: the engine's operations (``IEngine``), over the store, the host monitors and the
cluster manager.

:class:`Engine` wires the pieces and delegates: host states, HA (fencing, restarts),
maintenance and every placement to the cluster manager's service
:class:`~engine.cluster.ClusterService` (its commands carried out by
:class:`~engine.clustercarry.CommandCarrier`), host operations to
:class:`~engine.hosts.HostActions`, VM operations to :class:`~engine.vms.VmActions`, reports to
:class:`~engine.vmsync.VmSync`, jobs to :class:`~engine.jobs.JobRunner`, live events to
:class:`~engine.events.LiveEvents`, serial consoles to
:class:`~engine.consolerelay.ConsoleRelay`, power management and fencing to
:class:`~engine.fence.actions.FenceActions`. Its :meth:`Engine.start` is how the engine converges
after a restart: it reads every host and VM from the store, fails the jobs the previous run left
unfinished, rebuilds the cluster manager from the rows (each host resumes its stored state, with
a grace period to reconnect; HA VMs left Down with an error are restarted), and starts a monitor
per host (on connection its VM list is reconciled with the store). ``EngineService``
(:mod:`engine.service`) starts and stops it with the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from zope.interface import implementer

from .affinitygroups import AffinityGroups
from .cluster import ClusterService
from .clustercarry import CommandCarrier
from .config import EngineConfig
from .consolerelay import ConsolePlace, ConsoleRelay, ConsoleWatch, Listener
from .decide import affinity as affinity_rules
from .decide.balancing import make_planner
from .decide.model import VmRequest
from .decide.scheduler import PendingResources
from .errors import EngineNotReady
from .events import Auditor, LiveEvents
from .fence.actions import FenceActions
from .hosts import HostActions
from .interfaces import IEngine, IStore
from .jobs import JobRunner
from .monitoring import HostMonitor
from .store.auditlog import AuditType
from .store.errors import NotFound
from .store.rows import Host
from .vms import VmActions
from .vmsync import VmSync
from .vmtable import VmTable


def _uuid(value: Any, what: str) -> UUID:
    """:returns: ``value`` as a UUID. :raises NotFound: for anything that is not an id."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise NotFound(what, value) from None


@implementer(IEngine)
class Engine:
    """
    The engine (see the module docstring).

    :param store: a started store.
    :param config: intervals, timeouts and the scheduling policy.
    :param reactor: connects the host links.
    :param clock: keeps time (the reactor by default).
    """

    log = Logger()

    def __init__(
        self, store: IStore, *, config: EngineConfig, reactor: Any, clock: Any = None
    ) -> None:
        self.store = store
        self.config = config
        self._reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.policy = config.scheduling_policy()
        self.live = LiveEvents()
        self.auditor = Auditor(store, self.live)
        self.vms = VmTable(store, self.live, self.auditor, self.clock)
        self.cluster = ClusterService(
            store=store, settings=config.ha_settings, policy=self.policy, clock=self.clock,
            tick_interval=config.ha_tick_interval, move_back=config.ha_move_back,
            decorate=self._decorate,
            planner=make_planner(
                groups=lambda: self.affinity.current(), settings=config.balancing_settings
            ),
        )
        self.sync = VmSync(self.vms, store, self.auditor, self.cluster)
        self.jobs = JobRunner(store, self.live, self.auditor)
        self.monitors: dict[UUID, HostMonitor] = {}
        self.vm_actions = VmActions(
            store=store, vms=self.vms, vmsync=self.sync, jobs=self.jobs, auditor=self.auditor,
            live=self.live, monitors=self.monitors, cluster=self.cluster, config=config,
        )
        self.affinity = AffinityGroups(store, self.auditor, self.vms, self.monitors)
        self.host_actions = HostActions(
            store=store, jobs=self.jobs, auditor=self.auditor, live=self.live,
            monitors=self.monitors, make_monitor=self._make_monitor, cluster=self.cluster,
        )
        self.fencing = FenceActions(
            store=store, jobs=self.jobs, auditor=self.auditor, monitors=self.monitors,
            vmsync=self.sync, reactor=reactor,
        )
        self.cluster.carrier = CommandCarrier(
            vms=self.vms, monitors=self.monitors, auditor=self.auditor, jobs=self.jobs,
            vm_actions=self.vm_actions, fencing=self.fencing, report=self.cluster.observe,
        )
        self.console = ConsoleRelay(
            self._console_place, clock=self.clock, interval=config.console_poll_interval,
            timeout=min(config.call_timeout, 10.0))
        self.live.subscribe(self._console_follow)
        self.ready = False

    def _make_monitor(self, host: Host) -> HostMonitor:
        return HostMonitor(
            host, store=self.store, live=self.live, auditor=self.auditor, vmsync=self.sync,
            cluster=self.cluster, config=self.config, reactor=self._reactor, clock=self.clock,
        )

    def _decorate(
        self, request: VmRequest, placement: Mapping[str, str], leaving: frozenset[str]
    ) -> VmRequest:
        """The cluster manager's request decorator: the VM's affinity groups, and where the
        other members run as the manager sees it."""
        groups = self.affinity.current()
        if not groups:
            return request
        return affinity_rules.with_affinity(
            request, groups, placement, self.affinity.names(),
            host_names=self.affinity.host_names(), leaving=leaving)

    @property
    def pending(self) -> PendingResources:
        """The scheduler's ledger (the cluster manager's): resources promised to starts and
        migrations in flight."""
        return self.cluster.pending

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Converge with the store and the hosts (see the module docstring)."""
        self.vms.load(await self.store.list_vms())
        await self.affinity.load()
        interrupted = await self.jobs.recover()
        hosts = await self.store.list_hosts()
        await self.cluster.load(hosts, list(self.vms))
        for host in hosts:
            self.host_actions.start_monitor(host)
        self.cluster.start()
        self.ready = True
        self.log.info("engine started: {hosts} hosts, {vms} VMs, {jobs} interrupted jobs failed",
                      hosts=len(hosts), vms=len(self.vms), jobs=interrupted)
        await self.auditor.record(AuditType.ENGINE_STARTED, hosts=len(hosts), vms=len(self.vms),
                                  interrupted_jobs=interrupted)

    async def stop(self) -> None:
        """Stop acting: waits are interrupted and links closed, so running jobs end (recorded
        as failed: interrupted); VMs keep running on their hosts."""
        if not self.ready:
            return
        self.ready = False
        self.cluster.stop()
        self.console.stop()
        self.jobs.stopping()
        self.vms.interrupt()
        self.host_actions.interrupt()
        for monitor in list(self.monitors.values()):
            await monitor.stop()
        self.monitors.clear()
        await self.jobs.stop(self.clock)
        await self.vms.drain()
        await self.auditor.record(AuditType.ENGINE_STOPPING)

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        if not self.ready:
            return fail(EngineNotReady("the engine is not running (starting or stopping)"))
        return Deferred.fromCoroutine(_call(fn, *args, **kwargs))

    # -- hosts -------------------------------------------------------------------------------

    def add_host(self, name: str, address: str, *, port: int = 54321,
                 token: str = "") -> Deferred:
        return self._run(self.host_actions.add_host, name, address, port=port, token=token)

    def list_hosts(self) -> Deferred:
        return self.store.list_hosts()

    def get_host(self, host_id: Any) -> Deferred:
        return self._run(self._get_host, host_id)

    async def _get_host(self, host_id: Any) -> Host:
        return await self.store.get_host(_uuid(host_id, "host"))

    def remove_host(self, host_id: Any) -> Deferred:
        return self._run(lambda: self.host_actions.remove_host(_uuid(host_id, "host")))

    def maintenance(self, host_id: Any, *, idempotency_key: str | None = None,
                    move_back: bool | None = None) -> Deferred:
        """See ``IEngine.maintenance``; ``move_back``: migrate the VMs back when the host is
        activated (None: ``[ha] move_back``)."""
        return self._run(lambda: self.host_actions.maintenance(
            _uuid(host_id, "host"), key=idempotency_key, move_back=move_back))

    def activate(self, host_id: Any, *, idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.host_actions.activate(_uuid(host_id, "host"),
                                                            key=idempotency_key))

    # -- power management and fencing (engine/fence/actions.py) -----------------------------

    def get_power_management(self, host_id: Any) -> Deferred:
        return self._run(lambda: self.fencing.get_power_management(_uuid(host_id, "host")))

    def set_power_management(self, host_id: Any, *, enabled: bool, driver: str,
                             options: Mapping[str, Any], fencing_enabled: bool = True) -> Deferred:
        return self._run(lambda: self._set_power_management(
            _uuid(host_id, "host"), enabled=enabled, driver=driver, options=options,
            fencing_enabled=fencing_enabled))

    async def _set_power_management(self, host_id: UUID, **settings: Any) -> Any:
        row = await self.fencing.set_power_management(host_id, **settings)
        monitor = self.monitors.get(host_id)
        if monitor is not None:  # the cluster manager fences with these settings from now on
            self.cluster.update_host(monitor.row, row)
        return row

    def power_status(self, host_id: Any) -> Deferred:
        return self._run(lambda: self.fencing.power_status(_uuid(host_id, "host")))

    def fence(self, host_id: Any, action: str, *, agent: str | None = None, force: bool = False,
              idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.fencing.fence(
            _uuid(host_id, "host"), action, agent=agent, force=force, key=idempotency_key))

    # -- VMs ---------------------------------------------------------------------------------

    def add_vm(self, spec: Mapping[str, Any]) -> Deferred:
        return self._run(self.vm_actions.add_vm, spec)

    def list_vms(self, *, host_id: Any = None) -> Deferred:
        if host_id is None:
            return self.store.list_vms()
        return self._run(lambda: self.store.list_vms(host_id=_uuid(host_id, "host")))

    def get_vm(self, vm_id: Any) -> Deferred:
        return self._run(lambda: self.store.get_vm(_uuid(vm_id, "vm")))

    def update_vm(self, vm_id: Any, changes: Mapping[str, Any]) -> Deferred:
        return self._run(lambda: self.vm_actions.update_vm(_uuid(vm_id, "vm"), changes))

    def remove_vm(self, vm_id: Any) -> Deferred:
        return self._run(lambda: self.vm_actions.remove_vm(_uuid(vm_id, "vm")))

    def start_vm(self, vm_id: Any, *, host_id: Any = None,
                 idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.vm_actions.start_vm(
            _uuid(vm_id, "vm"), host_id=None if host_id is None else _uuid(host_id, "host"),
            key=idempotency_key))

    def stop_vm(self, vm_id: Any, *, idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.vm_actions.stop_vm(_uuid(vm_id, "vm"),
                                                         key=idempotency_key))

    def shutdown_vm(self, vm_id: Any, *, idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.vm_actions.shutdown_vm(_uuid(vm_id, "vm"),
                                                             key=idempotency_key))

    def pause_vm(self, vm_id: Any, *, idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.vm_actions.pause_vm(_uuid(vm_id, "vm"),
                                                          key=idempotency_key))

    def resume_vm(self, vm_id: Any, *, idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.vm_actions.resume_vm(_uuid(vm_id, "vm"),
                                                           key=idempotency_key))

    def migrate_vm(self, vm_id: Any, *, host_id: Any = None,
                   idempotency_key: str | None = None) -> Deferred:
        return self._run(lambda: self.vm_actions.migrate_vm(
            _uuid(vm_id, "vm"), host_id=None if host_id is None else _uuid(host_id, "host"),
            key=idempotency_key))

    # -- consoles ----------------------------------------------------------------------------

    def read_console(self, vm_id: Any, *, offset: int | None = None,
                     size: int | None = None) -> Deferred:
        return self._run(lambda: self.console.read(_uuid(vm_id, "vm"), offset=offset, size=size))

    def watch_console(self, vm_id: Any, listener: Listener, *,
                      offset: int | None = None) -> Deferred[ConsoleWatch]:
        return self._run(lambda: self.console.watch(_uuid(vm_id, "vm"), listener, offset=offset))

    def _console_place(self, vm_id: UUID) -> ConsolePlace:
        """Where a VM's console is: its host and that host's link (the relay's ``locate``)."""
        vm = self.vms.get(vm_id)
        if vm is None:
            raise NotFound("vm", vm_id)
        monitor = self.monitors.get(vm.dynamic.run_on_host)  # type: ignore[arg-type]
        if monitor is None:
            return ConsolePlace(vm.name)
        return ConsolePlace(vm.name, monitor.id, monitor.name, monitor.link)

    def _console_follow(self, kind: str, payload: Any) -> None:
        """A watched VM that stops starts over at its next run (see ``ConsoleRelay``)."""
        if kind == "vm" and payload.id in self.console.streams:
            self.console.vm_changed(payload.id, payload.dynamic.run_on_host is not None)

    # -- affinity groups (engine/affinitygroups.py) ------------------------------------------

    def add_affinity_group(self, spec: Mapping[str, Any]) -> Deferred:
        return self._run(self.affinity.add, spec)

    def list_affinity_groups(self) -> Deferred:
        return self._run(self.affinity.list)

    def get_affinity_group(self, group_id: Any) -> Deferred:
        return self._run(lambda: self.affinity.get(_uuid(group_id, "affinity group")))

    def update_affinity_group(self, group_id: Any, changes: Mapping[str, Any]) -> Deferred:
        return self._run(lambda: self.affinity.update(_uuid(group_id, "affinity group"), changes))

    def remove_affinity_group(self, group_id: Any) -> Deferred:
        return self._run(lambda: self.affinity.remove(_uuid(group_id, "affinity group")))

    # -- events and jobs ---------------------------------------------------------------------

    def list_events(self, **filters: Any) -> Deferred:
        return self.store.list_events(**filters)

    def list_jobs(self, **filters: Any) -> Deferred:
        return self.store.list_jobs(**filters)

    def get_job(self, job_id: Any) -> Deferred:
        return self._run(lambda: self.store.get_job(_uuid(job_id, "job")))

    def subscribe(self, listener: Callable[[str, Any], None]) -> Callable[[], None]:
        return self.live.subscribe(listener)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)
