"""``HostMonitor``: one host's link, its state machine, its polls, and what they write.

Per host, the engine runs a :class:`~engine.hostlink.HostLink` and feeds its events to the pure
host state machine (:mod:`engine.decide.hoststate`); each transition is written (status and
reason, and on connection the capabilities, CPU count and memory) with its audit event, and
published. A timer wakes the state machine at its next deadline (the grace period, the install
timeout). While connected, two polls run: ``Host.getStats`` (statistics and their history) and
``Host.getAllVmStats`` (the VMs' state, reconciled by :class:`~engine.vmsync.VmSync`, and their
statistics). ``VM_status`` events are applied as they come, between polls.

The writes of one host are serialized, so the store sees its states in the order they happened.
A host that becomes NonResponsive has its VMs marked Unknown; one that connects again is
reconciled at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from . import wire
from .config import EngineConfig
from .decide import hoststate
from .decide.hoststate import HostEvent, HostState, Transition
from .decide.policies import Policy
from .decide.utilization import CpuBand, cpu_band_since, cpu_over_commit_seconds
from .events import Auditor, LiveEvents
from .hostlink import HostLink, LinkEvent, LinkEventKind
from .interfaces import IStore
from .store.auditlog import AuditType, NewAuditEvent, audit_event
from .store.errors import NotFound, StoreError
from .store.rows import Host, HostStatus, VmStatus
from .vmsync import VmSync

S = HostState


def host_url(address: str, port: int) -> str:
    """:returns: the agent's WebSocket URL (IPv6 addresses bracketed)."""
    shown = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"ws://{shown}:{port}/jsonrpc"


def transition_event(host: Host, t: Transition) -> NewAuditEvent | None:
    """The audit event of a host's state change (pure), or None when nothing changed."""
    if not t.changed:
        return None
    before = t.before.state if t.before is not None else None
    new = t.after.state
    ids: dict[str, Any] = {"host_id": host.id, "host": host.name, "reason": t.reason}
    if new is S.UP:
        if before is S.MAINTENANCE:
            kind = AuditType.HOST_ACTIVATED
        elif before in (S.CONNECTING, S.NON_RESPONSIVE):
            kind = AuditType.HOST_RECOVERED
        else:
            kind = AuditType.HOST_UP
    else:
        kind = {
            S.CONNECTING: AuditType.HOST_CONNECTING,
            S.NON_RESPONSIVE: AuditType.HOST_NON_RESPONSIVE,
            S.PREPARING_FOR_MAINTENANCE: AuditType.HOST_MAINTENANCE_STARTED,
            S.MAINTENANCE: AuditType.HOST_MAINTENANCE,
            S.DOWN: AuditType.HOST_DOWN,
            S.INSTALLING: AuditType.HOST_ADDED,
        }.get(new, AuditType.HOST_UPDATED)
    return audit_event(kind, **ids, state=str(new), previous=str(before))


class HostMonitor:
    """
    Watches one host (see the module docstring).

    :param host: the host's row.
    :param status: its state machine's starting status (``added`` or ``resume``).
    :param config: intervals, liveness budget and link timeouts.
    :param policy: the cluster policy (its CPU band, for the scheduler's snapshot).
    """

    log = Logger()

    def __init__(
        self,
        host: Host,
        status: hoststate.HostStatus,
        *,
        store: IStore,
        live: LiveEvents,
        auditor: Auditor,
        vmsync: VmSync,
        config: EngineConfig,
        policy: Policy,
        reactor: Any,
        clock: Any = None,
    ) -> None:
        self.row = host
        self.status = status
        self._store, self._live, self._auditor = store, live, auditor
        self._vmsync = vmsync
        self._config = config
        self._timing = config.timing
        self._policy = policy
        self._clock = clock if clock is not None else reactor
        self._writes = DeferredLock()
        self._tick_call: Any = None
        self._loops: list[LoopingCall] = []
        self._polling: set[str] = set()
        self._last_failure = ""
        self._unsaved: dict[str, Any] = {}
        self.cpu_band: tuple[CpuBand, float] | None = None
        #: Called after each complete VM poll of this host (maintenance watches it).
        self.after_vm_poll: list[Callable[[HostMonitor], None]] = []
        self.link = HostLink(
            host_url(host.static.address, host.static.port),
            self._on_link_event,
            reactor=reactor,
            clock=self._clock,
            token=host.static.token or None,
            label=f"host {host.name}",
            retry_policy=backoffPolicy(
                initialDelay=config.reconnect_initial_delay, maxDelay=config.reconnect_max_delay
            ),
            connect_timeout=config.connect_timeout,
            call_timeout=config.call_timeout,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_timeout=config.heartbeat_timeout,
            auto_ping_interval=config.auto_ping_interval,
        )

    @property
    def id(self) -> UUID:
        """The host's id."""
        return self.row.id

    @property
    def name(self) -> str:
        """The host's name."""
        return self.row.name

    @property
    def state(self) -> HostState:
        """The host's live state."""
        return self.status.state

    def cpu_seconds(self) -> float:
        """How long the host's CPU load has been outside the policy's band."""
        if self.cpu_band is None:
            return 0.0
        return cpu_over_commit_seconds(self.cpu_band, self._clock.seconds())

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to the agent and start watching."""
        self.link.startService()
        for fn, interval in ((self._poll_host, self._config.host_stats_interval),
                             (self._poll_vms, self._config.vm_stats_interval)):
            loop = LoopingCall(fn)
            loop.clock = self._clock
            loop.start(interval, now=False).addErrback(
                lambda f: self.log.failure("poll loop of {host} stopped", f, host=self.name)
            )
            self._loops.append(loop)
        self._arm_tick()

    async def stop(self) -> None:
        """Stop watching and close the link; pending writes finish first."""
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        if self.link.running:
            await self.link.stopService()
        await self._writes.acquire()
        self._writes.release()

    # -- the state machine -------------------------------------------------------------------

    def command(self, event: HostEvent, detail: str = "") -> Deferred:
        """
        Apply an admin command or a finding (maintenance, activate, VMs evacuated).

        :returns: a Deferred firing with the ``Transition`` once written.
        :raises hoststate.InvalidTransition: at once, when the command makes no sense now.
        """
        t = self._step(event, self._clock.seconds(), detail)
        return self._record(t).addCallback(lambda _: t)

    def check(self, event: HostEvent) -> Transition:
        """:returns: what a command would do, changing nothing (raises as :meth:`command`)."""
        return hoststate.step(self.status, event, self._clock.seconds(), timing=self._timing)

    def _step(self, event: HostEvent, now: float, detail: str = "") -> Transition:
        t = hoststate.step(self.status, event, max(now, self.status.since), timing=self._timing,
                           detail=detail)
        self.status = t.after
        self._arm_tick()
        if t.changed:
            self.log.info("host {host}: {old} -> {new}: {reason}", host=self.name,
                          old=t.before.state if t.before else None, new=t.after.state,
                          reason=t.reason)
            if t.after.state is S.NON_RESPONSIVE:
                self._vmsync.host_lost(self, t.reason)
        return t

    def _arm_tick(self) -> None:
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        due = hoststate.deadline(self.status, self._timing)
        if due is not None:
            delay = max(0.0, due - self._clock.seconds()) + 0.001
            self._tick_call = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._tick_call = None
        t = self._step(HostEvent.TICK, self._clock.seconds())
        if t.changed:
            self._record(t)

    def _on_link_event(self, event: LinkEvent) -> None:
        if event.kind is LinkEventKind.EVENT:
            self._on_agent_event(event)
            return
        t = self._step(event.host_event, event.at, event.reason)  # type: ignore[arg-type]
        extra: dict[str, Any] = {}
        if event.kind is LinkEventKind.CONNECTED:
            extra = {"capabilities": event.caps or {}, **wire.host_facts(event.caps)}
            self._last_failure = ""
        if event.kind is LinkEventKind.CONNECT_FAILED and event.reason != self._last_failure:
            self._last_failure = event.reason
            self._auditor.record(AuditType.HOST_CONNECT_FAILED, host_id=self.id, host=self.name,
                                 reason=event.reason, attempt=event.attempt)
            extra = {"status_reason": t.reason}
        if t.changed or extra:
            self._record(t, **extra)
        if event.kind is LinkEventKind.CONNECTED:
            self._poll_vms()
            self._poll_host()

    def _on_agent_event(self, event: LinkEvent) -> None:
        report = wire.status_event(event.event_id or "", event.params)
        if report is not None:
            self._vmsync.host_reports(self, [report], complete=False)

    # -- writing -----------------------------------------------------------------------------

    def _record(self, t: Transition, **extra: Any) -> Deferred:
        """Write the host's state (and ``extra`` dynamic fields) with the transition's event."""
        changes = {"status": HostStatus(t.after.state.value), **extra}
        if t.changed:
            changes["status_reason"] = t.reason
        if t.after.link_up:
            changes["last_seen"] = _now(self._clock)
        event = transition_event(self.row, t)
        return self._writes.run(lambda: Deferred.fromCoroutine(self._write(changes, event)))

    async def _write(self, changes: dict[str, Any], event: NewAuditEvent | None) -> None:
        """Write ``changes`` (and whatever an earlier failed write left unsaved) with ``event``;
        a failure is logged and remembered, to be written by the next poll."""
        changes = {**self._unsaved, **changes}

        async def change(tx: Any) -> tuple[Host, Any]:
            row = await tx.update_host_dynamic(self.id, **changes)
            return row, (await tx.add_event(event) if event is not None else None)

        try:
            row, recorded = await self._store.transaction(change)
        except NotFound:
            return  # the host was removed meanwhile
        except StoreError as e:
            self.log.warn("state of host {host} not saved yet: {error}", host=self.name,
                          error=e)
            self._unsaved.update(changes)  # written with the next statistics
            return
        for key in changes:
            self._unsaved.pop(key, None)
        self.row = row
        if recorded is not None:
            self._auditor.published(recorded)
        self._live.publish("host", row)

    # -- polls -------------------------------------------------------------------------------

    def _poll_host(self) -> Deferred | None:
        if not self.link.connected and self._unsaved:
            return self._writes.run(lambda: Deferred.fromCoroutine(self._write({}, None)))
        return self._guarded("host", self._poll_host_stats)

    def _poll_vms(self) -> Deferred | None:
        return self._guarded("vms", self._poll_vm_stats)

    def _guarded(self, name: str, fn: Callable[[], Any]) -> Deferred | None:
        """Run one poll unless it is still running or the link is down; never fails."""
        if name in self._polling or not self.link.connected:
            return None
        self._polling.add(name)
        d = Deferred.fromCoroutine(fn())
        d.addErrback(self._poll_failed, name)
        d.addBoth(lambda _: self._polling.discard(name))
        return d

    def _poll_failed(self, failure: Any, name: str) -> None:
        if failure.check(StoreError):
            self.log.warn("{host}: {name} poll not saved: {error}", host=self.name, name=name,
                          error=failure.value)
        else:
            self.log.warn("{host}: {name} poll failed: {error}", host=self.name, name=name,
                          error=failure.getErrorMessage())

    async def _poll_host_stats(self) -> None:
        stats = await self.link.call("Host.getStats")
        sample = wire.host_statistics(self.id, stats)
        if sample is None:
            self.log.warn("{host}: Host.getStats answered junk", host=self.name)
            return
        if sample.cpu_idle is not None:
            self.cpu_band = cpu_band_since(self.cpu_band, 100.0 - sample.cpu_idle,
                                           self._policy.parameters, self._clock.seconds())
        seen = _now(self._clock)
        await self._writes.run(lambda: Deferred.fromCoroutine(self._write_stats(sample, seen)))

    async def _write_stats(self, sample: Any, seen: datetime) -> None:
        """Record a sample, with any state an earlier failed write left unsaved."""
        unsaved, self._unsaved = self._unsaved, {}

        async def change(tx: Any) -> Host:
            await tx.record_host_statistics(sample)
            return await tx.update_host_dynamic(self.id, **{**unsaved, "last_seen": seen})

        try:
            self.row = await self._store.transaction(change)
        except NotFound:
            return
        except StoreError:
            self._unsaved = {**unsaved, **self._unsaved}
            raise
        self._live.publish("host", self.row)

    async def _poll_vm_stats(self) -> None:
        stats = await self.link.call("Host.getAllVmStats")
        if not isinstance(stats, list):
            self.log.warn("{host}: Host.getAllVmStats answered junk", host=self.name)
            return
        reports = wire.poll_reports(stats)
        await self._vmsync.host_reports(self, reports, complete=True)
        samples = wire.poll_statistics(stats)
        self._vmsync.vms.set_statistics(samples)
        self._vmsync.vms.retry_unsaved()
        if samples:
            await self._store.record_vm_statistics(samples)
        for observer in list(self.after_vm_poll):
            observer(self)

    def running_vms(self) -> list[Any]:
        """:returns: the VMs the engine has on this host that are not Down."""
        return [v for v in self._vmsync.vms.on_host(self.id) if v.dynamic.status is not
                VmStatus.DOWN]


def _now(clock: Any) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), UTC)


def resumed(host: Host, now: float) -> hoststate.HostStatus:
    """The state machine's status for a host read from the store at engine start."""
    return hoststate.resume(HostState(host.dynamic.status.value), now)


def added(now: float, detail: str) -> hoststate.HostStatus:
    """The state machine's status for a host just added."""
    return hoststate.added(now, detail=detail).after
