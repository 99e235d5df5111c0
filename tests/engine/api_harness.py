"""Test harness for the admin API: an in-memory ``FakeEngine``, a real server, real clients.

- :class:`FakeEngine` implements ``IEngine`` in memory with the store's real row dataclasses and
  the engine's real errors, so that the API's routing, validation, serialization and error
  shapes can be tested without the engine core. Actions complete on the next reactor turn,
  publishing ``job``, ``vm``/``host`` and ``event`` changes as the real engine does; a start no
  host has memory for is refused with a per-host explanation.
- :class:`ApiServer` mounts :func:`engine.api.site.make_resources` on a ``twisted.web`` site on
  127.0.0.1, as ``engine/service.py`` does, with results and notifications validated against
  ``schema/engine.yml``; violations fail the test at :meth:`ApiServer.stop`.
- :func:`raw_connect` gives a WebSocket client that sends any text (bad JSON included).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from engine.api.site import ApiSettings, close_resources, make_resources
from engine.errors import ActionRefused
from engine.interfaces import IEngine
from engine.store.auditlog import AuditEvent, AuditType, Severity, audit_event
from engine.store.errors import Conflict, DuplicateName, NotFound
from engine.store.rows import (
    Host,
    HostDynamic,
    HostStatic,
    HostStatus,
    Job,
    JobStatus,
    Vm,
    VmDynamic,
    VmStatic,
    VmStatus,
)
from vdsmlike import client as rpc_client

ADMIN, PASSWORD = "admin", "correct horse battery staple"

#: ``VMs.add`` spec names (``IEngine``'s) to ``VmStatic`` fields.
_SPEC_TO_STATIC = {"memory_mib": "mem_mib"}


def _deferred(fn: Callable[..., Any]) -> Callable[..., Deferred]:
    """Make a synchronous method return a Deferred (failed with what it raised)."""

    def run(*args: Any, **kwargs: Any) -> Deferred:
        try:
            return succeed(fn(*args, **kwargs))
        except Exception:
            return fail()

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@implementer(IEngine)
class FakeEngine:
    """
    ``IEngine`` in memory: hosts are Up with ``host_memory_mib`` each as soon as added.

    :param clock: the time source of the rows' timestamps and of job completion.
    :ivar fail_next: an exception the next call of that method name raises (a dict).
    :ivar delays: seconds the named method waits before answering (out-of-order replies).
    """

    def __init__(self, clock: Any = reactor, *, host_memory_mib: int = 4096) -> None:
        self.clock = clock
        self.host_memory_mib = host_memory_mib
        self.hosts: dict[UUID, Host] = {}
        self.vms: dict[UUID, Vm] = {}
        self.jobs: dict[UUID, Job] = {}
        self.events: list[AuditEvent] = []
        self.fail_next: dict[str, Exception] = {}
        self.delays: dict[str, float] = {}
        self.calls: list[tuple[str, tuple, dict]] = []
        self._listeners: list[Callable[[str, Any], None]] = []
        self._event_ids = itertools.count(1)
        self._created = itertools.count()

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name.startswith("_") or not callable(value) or name not in IEngine.names():
            return value
        return object.__getattribute__(self, "_instrumented")(name, value)

    def _instrumented(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            error = self.fail_next.pop(name, None)
            if error is not None:
                return fail(error)
            delay = self.delays.get(name)
            if delay:
                return deferLater(reactor, delay, lambda: None).addCallback(
                    lambda _: method(*args, **kwargs)
                )
            return method(*args, **kwargs)

        return call

    # -- helpers -------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The clock's time, as the store writes it; distinct for each row created."""
        return datetime.fromtimestamp(self.clock.seconds() + next(self._created) * 1e-3, UTC)

    def _emit(self, kind: str, payload: Any) -> None:
        for listener in list(self._listeners):
            listener(kind, payload)

    def record(self, kind: AuditType, **fields: Any) -> AuditEvent:
        """Record and publish an audit event, as the engine's ``Auditor`` does."""
        new = audit_event(kind, **fields)
        event = AuditEvent(
            id=next(self._event_ids), time=self.now(), type=new.type, severity=new.severity,
            message=new.message, host_id=new.host_id, vm_id=new.vm_id, job_id=new.job_id,
            details=new.details,
        )
        self.events.append(event)
        self._emit("event", event)
        return event

    def _host(self, host_id: UUID) -> Host:
        if host_id not in self.hosts:
            raise NotFound("host", host_id)
        return self.hosts[host_id]

    def _vm(self, vm_id: UUID) -> Vm:
        if vm_id not in self.vms:
            raise NotFound("vm", vm_id)
        return self.vms[vm_id]

    def _set_vm(self, vm: Vm, **dynamic: Any) -> Vm:
        vm = replace(vm, dynamic=replace(vm.dynamic, updated=self.now(), **dynamic))
        self.vms[vm.id] = vm
        self._emit("vm", vm)
        return vm

    def _set_host(self, host: Host, **dynamic: Any) -> Host:
        host = replace(host, dynamic=replace(host.dynamic, updated=self.now(), **dynamic))
        self.hosts[host.id] = host
        self._emit("host", host)
        return host

    def _keyed(self, action: str, target: UUID, key: str | None) -> Job | None:
        """The job an idempotency key already made, if any (409 for another action)."""
        for job in self.jobs.values():
            if key is not None and job.idempotency_key == key:
                if (job.action, job.target_id) != (action, target):
                    raise Conflict(f"idempotency key {key!r} is job {job.id} ({job.action})")
                return job
        return None

    def _job(self, action: str, kind: str, target: UUID, key: str | None,
             effect: Callable[[], Any]) -> Job:
        """Create a job (or find the one with ``key``); ``effect`` runs on the next turn."""
        existing = self._keyed(action, target, key)
        if existing is not None:
            return existing
        now = self.now()
        job = Job(uuid.uuid4(), action, kind, target, JobStatus.PENDING, 0, None, None, key,
                  now, now)
        self.jobs[job.id] = job
        self._emit("job", job)
        self.clock.callLater(0, self._finish, job.id, effect)
        return job

    def _finish(self, job_id: UUID, effect: Callable[[], Any]) -> None:
        job = self.jobs[job_id]
        try:
            result = effect()
        except Exception as e:
            job = replace(job, status=JobStatus.FAILED, error=str(e), updated=self.now())
            self.record(AuditType.JOB_FAILED, job_id=job_id, action=job.action, reason=str(e))
        else:
            job = replace(job, status=JobStatus.SUCCEEDED, progress=100, result=result,
                          updated=self.now())
        self.jobs[job_id] = job
        self._emit("job", job)

    def _placement(self, vm: Vm, host_id: UUID | None, exclude: UUID | None = None) -> Host:
        """The host to run ``vm``: ``host_id``, else the Up host with the most memory."""
        candidates = [self._host(host_id)] if host_id else list(self.hosts.values())
        explanation: dict[str, list[str]] = {}
        fits = []
        for host in sorted(candidates, key=lambda h: h.name):
            reasons = []
            if host.dynamic.status != HostStatus.UP:
                reasons.append(f"refused by status: host is {host.dynamic.status}")
            if (host.dynamic.mem_total_mib or 0) < vm.static.mem_mib:
                reasons.append(
                    f"refused by memory: needs {vm.static.mem_mib} MiB, "
                    f"{host.dynamic.mem_total_mib} MiB schedulable"
                )
            if host.id == exclude:
                reasons.append("refused by excluded: the VM runs there")
            explanation[host.name] = reasons or ["passed filters: status, memory"]
            if not reasons:
                fits.append(host)
        if not fits:
            raise ActionRefused(
                f"no host can run VM {vm.name} ({vm.static.mem_mib} MiB)", explanation
            )
        return max(fits, key=lambda h: h.dynamic.mem_total_mib or 0)

    # -- IEngine: hosts ------------------------------------------------------------------------

    @_deferred
    def add_host(self, name: str, address: str, *, port: int = 54321, token: str = "") -> Host:
        """Register a host; it is Up at once."""
        if any(h.name == name for h in self.hosts.values()):
            raise DuplicateName("host", name)
        now = self.now()
        static = HostStatic(uuid.uuid4(), name, address, port, token, created=now, updated=now)
        dynamic = HostDynamic(
            static.id, HostStatus.UP, last_seen=now, cpu_count=4,
            mem_total_mib=self.host_memory_mib, capabilities={"cpuCores": "4"}, updated=now,
        )
        host = Host(static, dynamic)
        self.hosts[host.id] = host
        self._emit("host", host)
        self.record(AuditType.HOST_ADDED, host_id=host.id, host=name, address=address)
        return host

    @_deferred
    def list_hosts(self) -> list[Host]:
        """Every host by name."""
        return sorted(self.hosts.values(), key=lambda h: h.name)

    @_deferred
    def get_host(self, host_id: UUID) -> Host:
        """One host."""
        return self._host(host_id)

    @_deferred
    def remove_host(self, host_id: UUID) -> None:
        """Forget a host that runs nothing."""
        host = self._host(host_id)
        if any(vm.dynamic.run_on_host == host_id for vm in self.vms.values()):
            raise Conflict(f"host {host_id} still has VMs running on it or migrating to it")
        del self.hosts[host_id]
        self.record(AuditType.HOST_REMOVED, host_id=host_id, host=host.name)

    @_deferred
    def maintenance(
        self, host_id: UUID, *, idempotency_key: str | None = None, move_back: bool | None = None
    ) -> Job:
        """Put a host into Maintenance (refused while VMs run there); ``move_back`` is kept in
        ``self.move_back`` for the tests."""
        self.move_back = move_back
        host = self._host(host_id)
        if any(vm.dynamic.run_on_host == host_id for vm in self.vms.values()):
            raise ActionRefused(f"host {host.name} still runs VMs")
        return self._job("maintenance", "host", host_id, idempotency_key,
                         lambda: self._set_host(self.hosts[host_id],
                                                status=HostStatus.MAINTENANCE) and None)

    @_deferred
    def activate(self, host_id: UUID, *, idempotency_key: str | None = None) -> Job:
        """Bring a host out of Maintenance."""
        self._host(host_id)
        return self._job("activate", "host", host_id, idempotency_key,
                         lambda: self._set_host(self.hosts[host_id], status=HostStatus.UP)
                         and None)

    # -- IEngine: VMs --------------------------------------------------------------------------

    @_deferred
    def add_vm(self, spec: dict[str, Any]) -> Vm:
        """Define a VM from ``IEngine``'s spec."""
        fields = {_SPEC_TO_STATIC.get(k, k): v for k, v in spec.items()}
        if any(vm.name == fields["name"] for vm in self.vms.values()):
            raise DuplicateName("vm", fields["name"])
        if fields.get("pinned_host") is not None:
            self._host(fields["pinned_host"])
        now = self.now()
        static = VmStatic(id=uuid.uuid4(), created=now, updated=now, **fields)
        vm = Vm(static, VmDynamic(static.id, updated=now))
        self.vms[vm.id] = vm
        self._emit("vm", vm)
        self.record(AuditType.VM_ADDED, vm_id=vm.id, vm=vm.name)
        return vm

    @_deferred
    def list_vms(self, *, host_id: UUID | None = None) -> list[Vm]:
        """Every VM by name, or those on ``host_id``."""
        vms = [vm for vm in self.vms.values()
               if host_id is None or host_id in (vm.dynamic.run_on_host,
                                                 vm.dynamic.migrating_to_host)]
        return sorted(vms, key=lambda vm: vm.name)

    @_deferred
    def get_vm(self, vm_id: UUID) -> Vm:
        """One VM."""
        return self._vm(vm_id)

    @_deferred
    def update_vm(self, vm_id: UUID, changes: dict[str, Any]) -> Vm:
        """Change a VM's definition."""
        vm = self._vm(vm_id)
        fields = {_SPEC_TO_STATIC.get(k, k): v for k, v in changes.items()}
        name = fields.get("name")
        if name is not None and any(o.name == name and o.id != vm_id for o in self.vms.values()):
            raise DuplicateName("vm", name)
        vm = replace(vm, static=replace(vm.static, updated=self.now(), **fields))
        self.vms[vm_id] = vm
        self._emit("vm", vm)
        self.record(AuditType.VM_UPDATED, vm_id=vm_id, vm=vm.name)
        return vm

    @_deferred
    def remove_vm(self, vm_id: UUID) -> None:
        """Forget a Down VM."""
        vm = self._vm(vm_id)
        if vm.dynamic.status != VmStatus.DOWN:
            raise Conflict(f"VM {vm.name} is {vm.dynamic.status}, not Down")
        del self.vms[vm_id]  # as the core records it: the id in the details
        self.record(AuditType.VM_REMOVED, vm=vm.name, removed_vm_id=str(vm_id))

    def _vm_action(self, action: str, vm_id: UUID, key: str | None, allowed: set[VmStatus],
                   effect: Callable[[Vm], Any]) -> Job:
        vm = self._vm(vm_id)
        existing = self._keyed(action, vm_id, key)
        if existing is not None:
            return existing
        if vm.dynamic.status not in allowed:
            raise ActionRefused(f"VM {vm.name} is {vm.dynamic.status}")
        return self._job(action, "vm", vm_id, key, lambda: effect(self.vms[vm_id]))

    @_deferred
    def start_vm(self, vm_id: UUID, *, host_id: UUID | None = None,
                 idempotency_key: str | None = None) -> Job:
        """Place and start a Down VM (refused with the explanation when nothing fits)."""
        vm = self._vm(vm_id)
        if vm.dynamic.status == VmStatus.DOWN and not self._keyed("start", vm_id, idempotency_key):
            host = self._placement(vm, host_id)
        else:
            host = None

        def start(vm: Vm) -> dict[str, str]:
            assert host is not None
            self._set_vm(vm, status=VmStatus.UP, run_on_host=host.id)
            self.record(AuditType.VM_STARTED, vm_id=vm.id, host_id=host.id, vm=vm.name,
                        host=host.name)
            return {"host_id": str(host.id)}

        return self._vm_action("start", vm_id, idempotency_key, {VmStatus.DOWN}, start)

    @_deferred
    def stop_vm(self, vm_id: UUID, *, idempotency_key: str | None = None) -> Job:
        """Power a VM off."""
        running = set(VmStatus) - {VmStatus.DOWN}
        return self._vm_action("stop", vm_id, idempotency_key, running,
                               lambda vm: self._set_vm(vm, status=VmStatus.DOWN,
                                                       run_on_host=None) and None)

    @_deferred
    def shutdown_vm(self, vm_id: UUID, *, idempotency_key: str | None = None) -> Job:
        """Shut a VM down."""
        return self._vm_action("shutdown", vm_id, idempotency_key, {VmStatus.UP},
                               lambda vm: self._set_vm(vm, status=VmStatus.DOWN,
                                                       run_on_host=None) and None)

    @_deferred
    def pause_vm(self, vm_id: UUID, *, idempotency_key: str | None = None) -> Job:
        """Pause an Up VM."""
        return self._vm_action("pause", vm_id, idempotency_key, {VmStatus.UP},
                               lambda vm: self._set_vm(vm, status=VmStatus.PAUSED) and None)

    @_deferred
    def resume_vm(self, vm_id: UUID, *, idempotency_key: str | None = None) -> Job:
        """Resume a Paused VM."""
        return self._vm_action("resume", vm_id, idempotency_key, {VmStatus.PAUSED},
                               lambda vm: self._set_vm(vm, status=VmStatus.UP) and None)

    @_deferred
    def migrate_vm(self, vm_id: UUID, *, host_id: UUID | None = None,
                   idempotency_key: str | None = None) -> Job:
        """Move an Up VM to ``host_id`` or another host."""
        vm = self._vm(vm_id)
        if vm.dynamic.status != VmStatus.UP:
            raise ActionRefused(f"VM {vm.name} is {vm.dynamic.status}")
        host = self._placement(vm, host_id, exclude=vm.dynamic.run_on_host)
        return self._vm_action("migrate", vm_id, idempotency_key, {VmStatus.UP},
                               lambda vm: self._set_vm(vm, run_on_host=host.id) and None)

    # -- IEngine: events, jobs, changes ------------------------------------------------------

    @_deferred
    def list_events(self, *, since_id: int | None = None, before_id: int | None = None,
                    min_severity: Severity | None = None, host_id: UUID | None = None,
                    vm_id: UUID | None = None, job_id: UUID | None = None,
                    event_type: str | None = None, limit: int = 100) -> list[AuditEvent]:
        """The audit log, newest first, filtered as the store filters it."""
        graver = set(min_severity.at_least()) if min_severity else set(Severity)
        chosen = [
            e for e in reversed(self.events)
            if (since_id is None or e.id > since_id) and (before_id is None or e.id < before_id)
            and e.severity in graver and (host_id is None or e.host_id == host_id)
            and (vm_id is None or e.vm_id == vm_id) and (job_id is None or e.job_id == job_id)
            and (event_type is None or e.type == event_type)
        ]
        return chosen[:limit]

    @_deferred
    def list_jobs(self, *, status: JobStatus | None = None, target_id: UUID | None = None,
                  limit: int = 100) -> list[Job]:
        """Jobs, newest first."""
        jobs = sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)
        return [j for j in jobs if (status is None or j.status == status)
                and (target_id is None or j.target_id == target_id)][:limit]

    @_deferred
    def get_job(self, job_id: UUID) -> Job:
        """One job."""
        if job_id not in self.jobs:
            raise NotFound("job", job_id)
        return self.jobs[job_id]

    def subscribe(self, listener: Callable[[str, Any], None]) -> Callable[[], None]:
        """Call ``listener(kind, payload)`` for every change."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None


# -- the server --------------------------------------------------------------------------------


class ApiServer:
    """
    The admin API on a real ``twisted.web`` site on 127.0.0.1, as the engine mounts it.

    :param engine: the ``IEngine`` (a :class:`FakeEngine` or the real core).
    :param store: the ``IStore`` (real PostgreSQL).
    :param settings: ``ApiSettings`` (validation on, pings off, unless given).
    :param clock: the API's clock (the reactor unless given).
    """

    def __init__(self, engine: Any, store: Any, *, settings: ApiSettings | None = None,
                 clock: Any = None) -> None:
        self.engine = engine
        self.store = store
        settings = settings or ApiSettings(validate=True, auto_ping_interval=0)
        self.resources = make_resources(engine, store, reactor, settings=settings, clock=clock)
        self.factory = self.resources["api"].factory
        self.protocols: list[Any] = []
        self.notifications: list[tuple[str, dict]] = []
        self.violations: list[str] = []
        build = self.factory.buildProtocol

        def remember(addr: Any) -> Any:
            protocol = build(addr)
            self.protocols.append(protocol)
            return protocol

        self.factory.buildProtocol = remember
        self.factory.bus.add_observer(self._check)
        self.port: Any = None
        self.url = ""

    def _check(self, event_id: str, params: dict) -> None:
        self.notifications.append((event_id, params))
        try:
            self.factory.schema.check_event(event_id, params)
        except AssertionError as e:
            self.violations.append(f"{event_id}: {e}")

    async def start(self) -> ApiServer:
        """Listen on a free port; ``url`` is then ``ws://127.0.0.1:<port>/api``."""
        root = Resource()
        for segment, resource in self.resources.items():
            root.putChild(segment.encode("ascii"), resource)
        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        self.port = await endpoint.listen(Site(root))
        self.url = f"ws://127.0.0.1:{self.port.getHost().port}/api"
        return self

    async def stop(self) -> None:
        """Drop every connection, stop listening, and fail on any schema violation seen."""
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        await self.port.stopListening()
        close_resources(self.resources)
        await deferLater(reactor, 0, lambda: None)
        assert not self.violations, self.violations

    async def connect(self, *, token: str | None = None, query: str = "") -> Any:
        """A client of this server (see :func:`connect`)."""
        return await connect(self.url + query, token=token)

    async def login(self, user: str = ADMIN, password: str = PASSWORD) -> Any:
        """A client of this server logged in as ``user`` (see :func:`login`)."""
        return await login(self.url, user, password)


async def connect(url: str, *, token: str | None = None) -> Any:
    """
    A ``vdsmlike.client.AgentClient`` on the API at ``url`` (with a Bearer ``token``); the
    notifications it receives are appended to ``client.events``.
    """
    client = await rpc_client.connect(reactor, url, token=token, timeout=10)
    events: list[tuple[str, dict]] = []
    client.on_event(lambda event_id, params: events.append((event_id, params)))
    client.events = events
    return client


async def login(url: str, user: str = ADMIN, password: str = PASSWORD) -> Any:
    """A client of the API at ``url`` logged in as ``user``; its token is ``client.token``."""
    client = await connect(url)
    answer = await client.call("Auth.login", {"user": user, "password": password})
    client.token = answer["token"]
    return client


async def start_api(engine: Any, store: Any, **kwargs: Any) -> ApiServer:
    """Create the admin account and start an :class:`ApiServer`."""
    await store.create_user(ADMIN, PASSWORD)
    return await ApiServer(engine, store, **kwargs).start()


# -- raw WebSocket clients -------------------------------------------------------------------


class RawClient(WebSocketClientProtocol):
    """Sends any text; every message received is queued, decoded, in ``messages``."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: DeferredQueue = DeferredQueue()
        self.closed: Deferred = Deferred()

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(reason))
        if not self.closed.called:
            self.closed.callback(code)

    def send_text(self, text: str | bytes, *, binary: bool = False) -> None:
        """Send one message as it is."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        self.sendMessage(data, isBinary=binary)

    def send_json(self, message: Any) -> None:
        """Send one JSON message."""
        self.send_text(json.dumps(message))

    async def next(self, timeout: float = 10.0) -> Any:
        """The next message received."""
        d = self.messages.get()
        d.addTimeout(timeout, reactor)
        return await d

    async def next_reply(self, timeout: float = 10.0) -> Any:
        """The next message that is not a notification."""
        while True:
            message = await self.next(timeout)
            if not (isinstance(message, dict) and "method" in message):
                return message


async def raw_connect(url: str) -> RawClient:
    """Open a :class:`RawClient`; fails with ``ConnectionError`` if the handshake is refused."""
    factory = WebSocketClientFactory(url, reactor=reactor)
    factory.protocol = RawClient
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, factory.host, factory.port).connect(factory)
    return await factory.opened


def request(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    """A JSON-RPC request object."""
    return {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": id}


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> None:
    """Poll ``predicate`` on the reactor every 10 ms until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)
