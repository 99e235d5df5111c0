"""The engine's in-process live-event bus (behind ``IEngine.subscribe``) and its audit writer.

Every change the engine commits is published once, after the commit, as ``(kind, payload)``:

=========  ===================================================================================
kind       payload
=========  ===================================================================================
``event``  an ``engine.store.auditlog.AuditEvent`` just recorded
``host``   an ``engine.store.rows.Host``: its status, capabilities or statistics changed
``vm``     an ``engine.store.rows.Vm``: defined, updated, its status changed (``statistics``
           may be the latest sample or None); removed VMs are published as an ``event``
           (``VM_REMOVED``) only
``job``    an ``engine.store.rows.Job``: created, progressed, finished
=========  ===================================================================================

Listeners run on the reactor thread, in subscription order; one that raises is logged and the
others still run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .interfaces import IStore
from .store.auditlog import AuditEvent, AuditType, NewAuditEvent, audit_event
from .store.errors import StoreError

Listener = Callable[[str, Any], None]

KINDS = ("event", "host", "vm", "job")


class LiveEvents:
    """Publishes committed changes to whoever subscribed."""

    log = Logger()

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """
        Call ``listener(kind, payload)`` for every change from now on.

        :returns: a function that unsubscribes (calling it twice is harmless).
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, kind: str, payload: Any) -> None:
        """Give ``(kind, payload)`` to every listener."""
        for listener in list(self._listeners):
            try:
                listener(kind, payload)
            except Exception:
                self.log.failure("live-event listener failed on {kind}", kind=kind)

    @property
    def listeners(self) -> int:
        """How many listeners are subscribed."""
        return len(self._listeners)


class Auditor:
    """
    Writes audit events and publishes them.

    :param store: where events are recorded.
    :param live: where recorded events are published.
    """

    log = Logger()

    def __init__(self, store: IStore, live: LiveEvents) -> None:
        self._store = store
        self._live = live

    def record(self, kind: AuditType, **fields: Any) -> Deferred:
        """
        Record one event (``fields`` as :func:`engine.store.auditlog.audit_event` takes them).

        :returns: a Deferred firing with the ``AuditEvent``, or with None when the store could
            not record it (logged: a lost audit event never fails the action it describes).
        """
        return self.record_new(audit_event(kind, **fields))

    def record_new(self, event: NewAuditEvent) -> Deferred:
        """Record a built event; see :meth:`record`."""
        d = self._store.add_event(event)
        d.addCallbacks(self.published, self._failed, errbackArgs=(event,))
        return d

    def published(self, event: AuditEvent) -> AuditEvent:
        """Publish an event already recorded (e.g. inside a larger transaction)."""
        self._live.publish("event", event)
        return event

    def _failed(self, failure: Any, event: NewAuditEvent) -> None:
        if failure.check(StoreError):
            self.log.warn("audit event lost: {message} ({error})", message=event.message,
                          error=failure.value)
        else:
            self.log.failure("audit event lost: {message}", failure, message=event.message)
