"""The audit log: typed events (pure) and their storage and filters on real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest_twisted
from pg_harness import fake_clock, open_store

from engine.store.auditlog import AuditType, Severity, audit_event, render


def test_event_from_type():
    """An event takes its type's name and severity, and its message from the template."""
    vm_id, host_id = uuid.uuid4(), uuid.uuid4()
    event = audit_event(AuditType.VM_PLACED, vm_id=vm_id, host_id=host_id, vm="web1",
                        host="host2", reason="most free memory")
    assert (event.type, event.severity) == ("VM_PLACED", Severity.NORMAL)
    assert event.message == "VM web1 placed on host host2: most free memory"
    assert (event.vm_id, event.host_id, event.job_id) == (vm_id, host_id, None)
    assert event.details == {"vm": "web1", "host": "host2", "reason": "most free memory"}


def test_missing_template_fields():
    """A template field the details lack renders as ``?`` rather than failing."""
    assert render("VM {vm} on {host}", {"vm": "a"}) == "VM a on ?"
    assert audit_event(AuditType.HOST_NON_RESPONSIVE).message == "Host ? is non-responsive: ?"


def test_severities():
    """Severities rank as oVirt's, and ``at_least`` lists the graver ones."""
    assert [s.rank for s in Severity] == [0, 1, 2, 10]
    assert Severity.ERROR.at_least() == [Severity.ERROR, Severity.ALERT]
    assert AuditType.HOST_NON_RESPONSIVE.severity is Severity.ALERT
    assert AuditType.VM_START_REFUSED.severity is Severity.WARNING
    assert AuditType.VM_START_FAILED.severity is Severity.ERROR


@pytest_twisted.ensureDeferred
async def test_add_and_read_back(store):
    """A recorded event gets an id and a time and reads back with its details."""
    job_id = uuid.uuid4()
    event = audit_event(AuditType.VM_START_REFUSED, vm_id=uuid.uuid4(), job_id=job_id,
                        vm="big", reason="no host has 64 GiB free",
                        hosts={"h1": "memory", "h2": "in maintenance"})
    recorded = await store.add_event(event)
    assert recorded.id > 0 and recorded.time is not None
    assert (recorded.type, recorded.severity) == ("VM_START_REFUSED", Severity.WARNING)
    assert recorded.details["hosts"] == {"h1": "memory", "h2": "in maintenance"}
    assert await store.list_events() == [recorded]


@pytest_twisted.ensureDeferred
async def test_filters(store):
    """Events list newest first, filtered by id range, severity, host, VM, job and type."""
    h1, h2, vm, job = (uuid.uuid4() for _ in range(4))
    added = [
        await store.add_event(audit_event(AuditType.HOST_UP, host_id=h1, host="h1")),
        await store.add_event(audit_event(AuditType.VM_STARTED, vm_id=vm, host_id=h1,
                                          job_id=job)),
        await store.add_event(audit_event(AuditType.HOST_CONNECTING, host_id=h2)),
        await store.add_event(audit_event(AuditType.VM_START_FAILED, vm_id=vm, host_id=h2)),
        await store.add_event(audit_event(AuditType.HOST_NON_RESPONSIVE, host_id=h2)),
    ]
    ids = [e.id for e in added]

    async def listed(**filters):
        return [e.id for e in await store.list_events(**filters)]

    assert await listed() == ids[::-1]
    assert await listed(limit=2) == [ids[4], ids[3]]
    assert await listed(since_id=ids[2]) == [ids[4], ids[3]]
    assert await listed(before_id=ids[2]) == [ids[1], ids[0]]
    assert await listed(min_severity=Severity.WARNING) == [ids[4], ids[3], ids[2]]
    assert await listed(min_severity=Severity.ERROR) == [ids[4], ids[3]]
    assert await listed(min_severity=Severity.ALERT) == [ids[4]]
    assert await listed(host_id=h1) == [ids[1], ids[0]]
    assert await listed(vm_id=vm) == [ids[3], ids[1]]
    assert await listed(job_id=job) == [ids[1]]
    assert await listed(event_type="HOST_UP") == [ids[0]]
    assert await listed(host_id=h2, min_severity=Severity.ERROR, since_id=ids[3]) == [ids[4]]


@pytest_twisted.ensureDeferred
async def test_purge_old_events(store):
    """``purge_events`` deletes the events recorded before the given time, and only those."""
    clock = fake_clock()
    timed = await open_store(store.dsn, clock=clock)
    try:
        old = await timed.add_event(audit_event(AuditType.ENGINE_STARTED))
        clock.advance(31 * 86400)
        new = await timed.add_event(audit_event(AuditType.ENGINE_STOPPING))
        purged = await timed.purge_events(new.time - timedelta(days=30))
        remaining = await timed.list_events()
    finally:
        timed.close()
    assert purged == 1 and remaining == [new] and old not in remaining
