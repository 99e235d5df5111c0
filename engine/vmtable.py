"""``VmTable``: the engine's working copy of every VM, and the one path its runtime state is
written through.

The engine is the store's only writer, so it keeps each VM's latest row in memory (loaded at
start, updated by every write it makes): monitoring compares reports with it without reading the
database, and the scheduler's snapshot counts each host's committed memory from it.

A state change (:meth:`VmTable.apply`) takes effect in memory at once, in ``notify_time`` order
(an older status than the one held is dropped, unless forced), then goes to the store through
``set_vm_dynamic`` in one transaction with its audit event. Writes of one VM are serialized, so
the store sees them in the order the engine decided them; after the commit, the VM (and the
event) are published. A write the store could not take (PostgreSQL down) is remembered and
written again by :meth:`VmTable.retry_unsaved`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.logger import Logger

from .decide.reconcile import KnownVm
from .events import Auditor, LiveEvents
from .interfaces import IStore
from .store.auditlog import AuditEvent, NewAuditEvent
from .store.errors import NotFound, StoreError
from .store.rows import Vm, VmDynamic, VmStatic, VmStatistics, VmStatus

Predicate = Callable[[Vm], bool]


class VmGone(Exception):
    """The VM was removed while something waited for it."""


class Interrupted(Exception):
    """The engine is stopping: nobody waits for VMs any more."""


class VmTable:
    """
    Every VM's latest row (see the module docstring).

    :param store: where runtime state is written.
    :param live: where changed VMs are published.
    :param auditor: publishes the audit events written with a change.
    :param clock: times the waits of :meth:`wait_for`.
    """

    log = Logger()

    def __init__(self, store: IStore, live: LiveEvents, auditor: Auditor, clock: Any) -> None:
        self._store = store
        self._live = live
        self._auditor = auditor
        self._clock = clock
        self._vms: dict[UUID, Vm] = {}
        #: host id -> {VM id: (VM id as text, definition)} of the VMs on or coming to it.
        self._by_host: dict[UUID, dict[UUID, tuple[str, VmStatic]]] = {}
        self._locks: dict[UUID, DeferredLock] = {}
        self._waiters: dict[UUID, list[tuple[Predicate, Deferred]]] = {}
        self._unsaved: set[UUID] = set()
        self._closed = False
        self._texts: dict[UUID, str] = {}

    # -- reading -----------------------------------------------------------------------------

    def get(self, vm_id: UUID) -> Vm | None:
        """:returns: the VM's latest row, or None."""
        return self._vms.get(vm_id)

    def __iter__(self) -> Iterator[Vm]:
        return iter(list(self._vms.values()))

    def __len__(self) -> int:
        return len(self._vms)

    def on_host(self, host_id: UUID) -> list[Vm]:
        """:returns: the VMs running on or migrating to ``host_id`` (Down ones excluded)."""
        return [self._vms[i] for i in self._by_host.get(host_id, ())]

    def keyed_on_host(self, host_id: UUID) -> list[tuple[str, VmStatic]]:
        """:returns: ``(id as text, definition)`` of the VMs on ``host_id`` (the scheduler's
        snapshot counts them; the text ids are cached, as the pending ledger uses them)."""
        return list(self._by_host.get(host_id, {}).values())

    def known(self, vm_id: UUID) -> KnownVm | None:
        """:returns: the reconciler's view of a VM, or None if unknown."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return None
        d = vm.dynamic
        return KnownVm(
            vm_id=str(vm_id),
            status=d.status,
            run_on_host=None if d.run_on_host is None else str(d.run_on_host),
            migrating_to_host=None if d.migrating_to_host is None else str(d.migrating_to_host),
            last_notify_time=d.last_notify_time,
            external=d.external,
        )

    # -- changing the working copy -----------------------------------------------------------

    def load(self, vms: list[Vm]) -> None:
        """Start from the store's rows (engine start)."""
        self._vms.clear()
        self._texts.clear()
        self._by_host.clear()
        self._closed = False
        for vm in vms:
            self._set(vm)

    def put(self, vm: Vm) -> None:
        """Add a VM, or replace its definition (its runtime state and statistics are kept)."""
        current = self._vms.get(vm.id)
        if current is not None:
            vm = dataclasses.replace(current, static=vm.static)
        self._set(vm)

    def put_static(self, static: VmStatic) -> Vm | None:
        """Replace a VM's definition. :returns: the VM, or None if unknown."""
        current = self._vms.get(static.id)
        if current is None:
            return None
        vm = dataclasses.replace(current, static=static)
        self._set(vm)
        return vm

    def forget(self, vm_id: UUID) -> None:
        """Drop a removed VM; whoever waited for it gets :class:`VmGone`."""
        vm = self._vms.pop(vm_id, None)
        self._texts.pop(vm_id, None)
        if vm is not None:
            self._unindex(vm)
        self._unsaved.discard(vm_id)
        for _, waiter in self._waiters.pop(vm_id, []):
            waiter.errback(VmGone(f"VM {vm_id} was removed"))

    def set_statistics(self, samples: list[VmStatistics]) -> None:
        """Keep the latest sample of each known VM and publish it live (the caller writes them
        to the store)."""
        for sample in samples:
            vm = self._vms.get(sample.vm_id)
            if vm is not None:
                vm = self._vms[sample.vm_id] = dataclasses.replace(vm, statistics=sample)
                self._live.publish("vm", vm)

    def _set(self, vm: Vm) -> None:
        old = self._vms.get(vm.id)
        if old is not None:
            self._unindex(old)
        self._vms[vm.id] = vm
        if vm.id not in self._texts:
            self._texts[vm.id] = str(vm.id)
        d = vm.dynamic
        if d.status is not VmStatus.DOWN:
            for host in (d.run_on_host, d.migrating_to_host):
                if host is not None:
                    entry = (self._texts[vm.id], vm.static)
                    self._by_host.setdefault(host, {})[vm.id] = entry
        self._wake(vm)

    def _unindex(self, vm: Vm) -> None:
        for host in (vm.dynamic.run_on_host, vm.dynamic.migrating_to_host):
            if host is not None and host in self._by_host:
                self._by_host[host].pop(vm.id, None)
                if not self._by_host[host]:
                    del self._by_host[host]

    # -- runtime state -----------------------------------------------------------------------

    def apply(
        self,
        dynamic: VmDynamic,
        *,
        force: bool = False,
        event: NewAuditEvent | None = None,
        also: Sequence[NewAuditEvent] = (),
    ) -> Deferred:
        """
        Change a VM's runtime state (see the module docstring).

        :param dynamic: the new state; ``last_notify_time`` None keeps the one held.
        :param force: apply whatever the notify times say, and write ``last_notify_time`` as
            given (the VM changed host, or the engine itself decided the state).
        :param event: an audit event to record in the same transaction, if the change is
            written.
        :param also: audit events to record in the same transaction whatever happens (the
            decision that led to this change).
        :returns: a Deferred firing with True once written and published, False when dropped as
            stale (or the VM is unknown); never failing (a failed write is logged and retried).
        """
        current = self._vms.get(dynamic.vm_id)
        if current is None:
            return succeed(False)
        held = current.dynamic.last_notify_time
        if not force:
            if dynamic.last_notify_time is None:
                dynamic = dataclasses.replace(dynamic, last_notify_time=held)
            elif held is not None and dynamic.last_notify_time < held:
                return succeed(False)
        # The store stamps its own time when it writes; until then the engine's clock says when
        # the state changed, so live notifications carry it (the console's uptime reads it).
        now = datetime.fromtimestamp(self._clock.seconds(), UTC)
        dynamic = dataclasses.replace(dynamic, updated=now)
        self._set(dataclasses.replace(current, dynamic=dynamic))
        lock = self._locks.setdefault(dynamic.vm_id, DeferredLock())
        d = lock.run(lambda: Deferred.fromCoroutine(self._write(dynamic, force, event,
                                                                tuple(also))))
        d.addBoth(self._drop_lock, dynamic.vm_id, lock)
        return d

    def _drop_lock(self, result: Any, vm_id: UUID, lock: DeferredLock) -> Any:
        if not lock.locked and not lock.waiting and self._locks.get(vm_id) is lock:
            del self._locks[vm_id]
        return result

    async def _write(
        self,
        dynamic: VmDynamic,
        force: bool,
        event: NewAuditEvent | None,
        also: tuple[NewAuditEvent, ...],
    ) -> bool:
        async def change(tx: Any) -> tuple[bool, list[AuditEvent]]:
            written = await tx.set_vm_dynamic(dynamic, force=force)
            keep = (*also, event) if written and event is not None else also
            return written, [await tx.add_event(e) for e in keep]

        try:
            written, recorded = await self._store.transaction(change, idempotent=True)
        except NotFound:
            return False  # removed meanwhile
        except StoreError as e:
            self._unsaved.add(dynamic.vm_id)
            self.log.warn("state of VM {vm_id} not saved yet: {error}", vm_id=dynamic.vm_id,
                          error=e)
            return False
        self._unsaved.discard(dynamic.vm_id)
        for done in recorded:
            self._auditor.published(done)
        vm = self._vms.get(dynamic.vm_id)
        if vm is not None:
            self._live.publish("vm", vm)
        return written

    async def drain(self) -> None:
        """Wait until every write already decided has been made (or has failed)."""
        for lock in list(self._locks.values()):
            await lock.acquire()
            lock.release()

    def retry_unsaved(self) -> None:
        """Write again, unconditionally, the state of every VM whose last write failed."""
        for vm_id in list(self._unsaved):
            vm = self._vms.get(vm_id)
            self._unsaved.discard(vm_id)
            if vm is not None:
                self.apply(vm.dynamic, force=True)

    # -- waiting -----------------------------------------------------------------------------

    def wait_for(self, vm_id: UUID, predicate: Predicate, timeout: float) -> Deferred:
        """
        Wait until the VM's working copy satisfies ``predicate``.

        :returns: a Deferred firing with the ``Vm`` (at once if it already does); failing with
            ``twisted.internet.defer.TimeoutError`` after ``timeout`` seconds, or
            :class:`VmGone` if the VM is removed (or unknown), :class:`Interrupted` when the
            engine stops.
        """
        vm = self._vms.get(vm_id)
        if self._closed:
            return Deferred.fromCoroutine(_raise(Interrupted("the engine is stopping")))
        if vm is None:
            return Deferred.fromCoroutine(_raise(VmGone(f"VM {vm_id} is unknown")))
        if predicate(vm):
            return succeed(vm)
        waiter: Deferred = Deferred()
        entry = (predicate, waiter)
        self._waiters.setdefault(vm_id, []).append(entry)
        waiter.addTimeout(timeout, self._clock)
        waiter.addBoth(self._unwait, vm_id, entry)
        return waiter

    def interrupt(self) -> None:
        """The engine is stopping: every wait fails with :class:`Interrupted`, and new ones
        fail at once."""
        self._closed = True
        waiting, self._waiters = self._waiters, {}
        for entries in waiting.values():
            for _, waiter in entries:
                if not waiter.called:
                    waiter.errback(Interrupted("the engine is stopping"))

    def _unwait(self, result: Any, vm_id: UUID, entry: Any) -> Any:
        waiting = self._waiters.get(vm_id)
        if waiting and entry in waiting:
            waiting.remove(entry)
            if not waiting:
                del self._waiters[vm_id]
        return result

    def _wake(self, vm: Vm) -> None:
        for predicate, waiter in list(self._waiters.get(vm.id, ())):
            if not waiter.called and predicate(vm):
                waiter.callback(vm)


async def _raise(error: Exception) -> Any:
    raise error
