"""``HostMonitor``: one host's link, its polls, and what they write.

Per host, the engine runs a :class:`~engine.hostlink.HostLink`. Its liveness events
(connected, link lost, heartbeat answered or missed, a connect attempt failed) go to the cluster
manager (:class:`~engine.cluster.ClusterService`), which owns the host's state: it runs the host
state machine, and the monitor writes the statuses it decides (:meth:`HostMonitor.write_status`,
with the event that explains each). On connection the monitor writes the capabilities, CPU
count and memory, and tells the manager the host's sizes. While connected, two polls run:
``Host.getStats`` (statistics and their history; the CPU load goes to the manager) and
``Host.getAllVmStats`` (the VMs' state, reconciled by :class:`~engine.vmsync.VmSync`, and their
statistics). ``VM_status`` events are applied as they come, between polls.

The writes of one host are serialized, so the store sees its states in the order they happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from . import clusterfacts, wire
from .cluster import ClusterService
from .config import EngineConfig
from .decide import facts as f
from .decide import hoststate
from .decide.hoststate import HostEvent, HostState, Transition
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
    :param cluster: owns the host's state; told every liveness event and the host's load.
    :param config: intervals, liveness budget and link timeouts.
    """

    log = Logger()

    def __init__(
        self,
        host: Host,
        *,
        store: IStore,
        live: LiveEvents,
        auditor: Auditor,
        vmsync: VmSync,
        cluster: ClusterService,
        config: EngineConfig,
        reactor: Any,
        clock: Any = None,
    ) -> None:
        self.row = host
        self._store, self._live, self._auditor = store, live, auditor
        self._vmsync = vmsync
        self._cluster = cluster
        self._config = config
        self._clock = clock if clock is not None else reactor
        self._writes = DeferredLock()
        self._loops: list[LoopingCall] = []
        self._polling: set[str] = set()
        self._last_failure = ""
        self._unsaved: dict[str, Any] = {}
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
    def status(self) -> hoststate.HostStatus:
        """The host's liveness status, as the cluster manager has it."""
        status = self._cluster.host_status(self.id)
        if status is None:  # not tracked (removed): its last stored state
            return hoststate.HostStatus(HostState(self.row.dynamic.status.value), since=0.0)
        return status

    @property
    def state(self) -> HostState:
        """The host's live state."""
        return self.status.state

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

    async def stop(self) -> None:
        """Stop watching and close the link; pending writes finish first."""
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        if self.link.running:
            await self.link.stopService()
        await self._writes.acquire()
        self._writes.release()

    # -- the host's state (decided by the cluster manager) ----------------------------------

    def command(self, event: HostEvent, detail: str = "") -> Deferred:
        """
        Report a finding about the host: only ``fenced`` (a fence job proved it powered off),
        which the cluster manager takes as the proof that the host and its VMs are down.

        :returns: a Deferred firing once the manager's decisions are written.
        :raises ValueError: for any other event (admin commands go to the cluster service).
        """
        if HostEvent(event) is not HostEvent.FENCED:
            raise ValueError(f"{event} is the cluster manager's to decide")
        proof = f"powered off by fencing: {detail}" if detail else "powered off by fencing"
        return self._cluster.observe(f.FenceDone(str(self.id), "power", f.FENCED, proof))

    def _on_link_event(self, event: LinkEvent) -> None:
        if event.kind is LinkEventKind.EVENT:
            self._on_agent_event(event)
            return
        if event.kind is LinkEventKind.CONNECTED:
            self._connected(event)
        elif event.kind is LinkEventKind.CONNECT_FAILED and event.reason != self._last_failure:
            self._last_failure = event.reason
            self._auditor.record(AuditType.HOST_CONNECT_FAILED, host_id=self.id, host=self.name,
                                 reason=event.reason, attempt=event.attempt)
            self._queue_write({"status_reason": f"link to the agent down ({event.reason})"})
        assert event.host_event is not None
        self._cluster.observe(clusterfacts.host_seen(self.id, event.host_event, event.reason))
        if event.kind is LinkEventKind.CONNECTED:
            self._poll_vms()
            self._poll_host()

    def _connected(self, event: LinkEvent) -> None:
        """Write what the agent says of its host, and tell the manager its sizes first (a
        placement on it right after uses them)."""
        self._last_failure = ""
        extra = {"capabilities": event.caps or {}, **wire.host_facts(event.caps)}
        self.row = replace(self.row, dynamic=replace(self.row.dynamic, **extra))
        self._cluster.update_host(self.row)
        self._queue_write(extra)

    def _on_agent_event(self, event: LinkEvent) -> None:
        report = wire.status_event(event.event_id or "", event.params)
        if report is not None:
            self._vmsync.host_reports(self, [report], complete=False)

    # -- writing -----------------------------------------------------------------------------

    def write_status(self, status: str, reason: str, event: NewAuditEvent | None) -> Deferred:
        """
        Write the status the cluster manager decided, its reason, and the event that explains
        it, in one transaction (after the host's earlier writes).

        :returns: a Deferred firing once written (never failing: a failed write is retried
            with the next statistics).
        """
        changes: dict[str, Any] = {"status": HostStatus(status), "status_reason": reason}
        if self.link.connected:
            changes["last_seen"] = _now(self._clock)
        return self._writes.run(lambda: Deferred.fromCoroutine(self._write(changes, event)))

    def _queue_write(self, changes: dict[str, Any]) -> Deferred:
        return self._writes.run(lambda: Deferred.fromCoroutine(self._write(changes, None)))

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
            self._cluster.observe(f.HostLoad(str(self.id), max(0.0, 100.0 - sample.cpu_idle)))
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
        loads = [f.VmLoad(str(self.id), str(s.vm_id), s.cpu_percent) for s in samples
                 if s.cpu_percent is not None]  # fmt: skip
        if loads:
            self._cluster.observe(*loads)
        if samples:
            await self._store.record_vm_statistics(samples)

    def running_vms(self) -> list[Any]:
        """:returns: the VMs the engine has on this host that are not Down."""
        return [v for v in self._vmsync.vms.on_host(self.id) if v.dynamic.status is not
                VmStatus.DOWN]


def _now(clock: Any) -> datetime:
    return datetime.fromtimestamp(clock.seconds(), UTC)

