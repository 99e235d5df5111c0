"""Pure: the admin API's wire shapes, from the store's rows (and the few values parsed back).

One function per shape of ``schema/engine.yml``: :func:`host`, :func:`host_details`,
:func:`vm`, :func:`job`, :func:`event`, the statistics samples, and :func:`refusal` for the
data of a refused action. Conventions: ids are strings (UUIDs in lower case, audit event ids
in decimal), times are ISO 8601 in UTC with milliseconds and a ``Z`` (:func:`time`), enums are
their values. Text is passed through untouched: HTML in a name is data, and the client
escapes it when it displays it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from engine.store.auditlog import AuditEvent
from engine.store.rows import Host, HostStatistics, Job, Session, Vm, VmStatistics

# -- scalars -----------------------------------------------------------------------------------


def time(value: datetime | None) -> str | None:
    """
    A time on the wire: ``2027-01-15T08:00:00.123Z`` (UTC, milliseconds), or None.

    A naive datetime is taken as UTC (the store's are all aware).
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def epoch_time(seconds: float) -> str:
    """:returns: the wire time of a POSIX timestamp (a clock's ``seconds()``)."""
    result = time(datetime.fromtimestamp(seconds, UTC))
    assert result is not None
    return result


def parse_time(text: str | None) -> datetime | None:
    """
    The datetime of a wire time (as :func:`time` writes it), or None.

    :raises ValueError: if ``text`` is no ISO 8601 time.
    """
    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def ident(value: UUID | None) -> str | None:
    """:returns: a UUID as a lower-case string, or None."""
    return None if value is None else str(value)


def parse_id(text: str | None) -> UUID | None:
    """
    The UUID of a wire id (either case), or None.

    :raises ValueError: if ``text`` is no UUID (the schema checks this first).
    """
    return None if text is None else uuid.UUID(text)


def parse_event_id(value: str | int | None) -> int | None:
    """:returns: an audit event id given as ``"42"`` or ``42``, as an int, or None."""
    return None if value is None else int(value)


# -- statistics ---------------------------------------------------------------------------------


def _sample(sample: Any, key: str) -> dict[str, Any]:
    """:returns: a statistics row's fields but its owner's id, with ``time`` on the wire."""
    fields = {f.name: getattr(sample, f.name) for f in dataclasses.fields(sample)}
    del fields[key]
    fields["time"] = time(fields["time"])
    return fields


def host_statistics(sample: HostStatistics) -> dict[str, Any]:
    """The ``HostStatistics`` shape of one sample."""
    return _sample(sample, "host_id")


def vm_statistics(sample: VmStatistics) -> dict[str, Any]:
    """The ``VmStatistics`` shape of one sample."""
    return _sample(sample, "vm_id")


# -- hosts, VMs, jobs, events ------------------------------------------------------------------


def host(row: Host) -> dict[str, Any]:
    """The ``Host`` shape: configuration (never the agent token), state, latest statistics."""
    static, dynamic = row.static, row.dynamic
    return {
        "id": ident(static.id),
        "name": static.name,
        "address": static.address,
        "port": static.port,
        "status": str(dynamic.status),
        "status_reason": dynamic.status_reason,
        "last_seen": time(dynamic.last_seen),
        "cpu_count": dynamic.cpu_count,
        "mem_total_mib": dynamic.mem_total_mib,
        "created": time(static.created),
        "updated": time(static.updated),
        "status_updated": time(dynamic.updated),
        "statistics": host_statistics(row.statistics) if row.statistics else None,
    }


def host_details(row: Host) -> dict[str, Any]:
    """The ``HostDetails`` shape: a ``Host`` and its agent's capabilities."""
    return {**host(row), "capabilities": row.dynamic.capabilities}


def vm(row: Vm) -> dict[str, Any]:
    """The ``Vm`` shape: definition, state, where it runs, latest statistics."""
    static, dynamic = row.static, row.dynamic
    return {
        "id": ident(static.id),
        "name": static.name,
        "memory_mib": static.mem_mib,
        "vcpus": static.vcpus,
        "kernel": static.kernel,
        "initrd": static.initrd,
        "cmdline": static.cmdline,
        "disks": static.disks,
        "nics": static.nics,
        "custom": static.custom,
        "ha": static.ha,
        "ha_priority": static.ha_priority,
        "pinned_host_id": ident(static.pinned_host),
        "status": str(dynamic.status),
        "run_on_host_id": ident(dynamic.run_on_host),
        "migrating_to_host_id": ident(dynamic.migrating_to_host),
        "exit_status": dynamic.exit_status,
        "exit_reason": dynamic.exit_reason,
        "exit_message": dynamic.exit_message,
        "external": dynamic.external,
        "created": time(static.created),
        "updated": time(static.updated),
        "status_updated": time(dynamic.updated),
        "statistics": vm_statistics(row.statistics) if row.statistics else None,
    }


def job(row: Job) -> dict[str, Any]:
    """The ``Job`` shape."""
    return {
        "id": ident(row.id),
        "action": row.action,
        "target_kind": row.target_kind,
        "target_id": ident(row.target_id),
        "status": str(row.status),
        "progress": row.progress,
        "result": row.result,
        "error": row.error,
        "idempotency_key": row.idempotency_key,
        "created": time(row.created),
        "updated": time(row.updated),
    }


def event(row: AuditEvent) -> dict[str, Any]:
    """The ``Event`` shape of an audit event (its id as a decimal string)."""
    return {
        "id": str(row.id),
        "time": time(row.time),
        "type": row.type,
        "severity": str(row.severity),
        "message": row.message,
        "host_id": ident(row.host_id),
        "vm_id": ident(row.vm_id),
        "job_id": ident(row.job_id),
        "details": row.details,
    }


def session(row: Session) -> dict[str, Any]:
    """The ``Session`` shape."""
    return {"user": row.user_name, "expires": time(row.expires)}


# -- refusals ----------------------------------------------------------------------------------


def refusal(error: BaseException) -> dict[str, Any]:
    """
    The ``Refusal`` shape (the data of error 4092) of an ``engine.errors.ActionRefused``.

    Reads ``error.reason`` (else the error's text), the scheduler's explanation from
    ``error.explanation`` (see :func:`explanation`) and, for ``ActionInProgress``, the
    ``job_id`` of the job holding the target.

    :returns: ``{"reason": str, "hosts": [HostExplanation], "job_id"?: str}``.
    """
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    data: dict[str, Any] = {
        "reason": str(reason),
        "hosts": explanation(
            getattr(error, "decision", None) or getattr(error, "explanation", None)
        ),
    }
    job_id = getattr(error, "job_id", None)
    if job_id is not None:
        data["job_id"] = str(job_id)
    return data


def explanation(explained: Any) -> list[dict[str, Any]]:
    """
    The per-host explanation of a scheduling decision as ``HostExplanation`` objects.

    :param explained: None; a mapping of host *name* to its reasons (a list of sentences, or
        one), as ``ActionRefused.explanation`` holds it; or an
        ``engine.decide.scheduler.Decision`` (anything with ``explanations`` by host id,
        ``host_names``, ``scores`` and ``ranking``), which also gives ids and scores.
    :returns: hosts as the scheduler ranked them (if it did), then the others by name.
    """
    if explained is None:
        return []
    if isinstance(explained, Mapping):
        return [_explained_host(None, str(name), explained[name]) for name in sorted(explained)]
    per_host = getattr(explained, "explanations", None)
    if not isinstance(per_host, Mapping):
        return []
    names: Mapping[Any, str] = getattr(explained, "host_names", None) or {}
    scores: Mapping[Any, int] = getattr(explained, "scores", None) or {}
    ranked = [h for h in getattr(explained, "ranking", None) or () if h in per_host]
    others = sorted(
        (h for h in per_host if h not in ranked), key=lambda h: (str(names.get(h, h)), str(h))
    )
    return [
        _explained_host(str(host_id), str(names.get(host_id, host_id)), per_host[host_id],
                        scores.get(host_id))
        for host_id in [*ranked, *others]
    ]


def _explained_host(
    host_id: str | None, name: str, reasons: Any, score: int | None = None
) -> dict[str, Any]:
    """:returns: one ``HostExplanation``: passed when it got a score."""
    return {
        "name": name,
        "id": host_id,
        "passed": score is not None,
        "score": score,
        "reasons": _reasons(reasons),
    }


def _reasons(value: Any) -> list[str]:
    """:returns: one host's reasons as a list of sentences."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(item) for item in value]
    return [str(value)]


def affinity_group(row: Any) -> dict[str, Any]:
    """The ``AffinityGroup`` shape (an ``engine.store.affinity.AffinityGroupRow``)."""
    return {
        "id": ident(row.id),
        "name": row.name,
        "description": row.description,
        "vm_polarity": row.vm_polarity,
        "hard": row.hard,
        "vm_ids": [ident(v) for v in row.vms],
        "host_polarity": row.host_polarity,
        "hosts_hard": row.hosts_hard,
        "host_ids": [ident(h) for h in row.hosts],
        "priority": row.priority,
        "created": time(row.created),
        "updated": time(row.updated),
    }
