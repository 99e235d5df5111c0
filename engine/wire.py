"""Pure: read what agents send (VDSM's wire shapes) into the engine's rows and reports.

Agents send numbers as strings, states with spaces (``"Powering up"``), and may send anything
at all when broken: every reader here tolerates junk, giving None (or skipping the entry) rather
than raising, so one bad agent cannot stop the engine's monitoring of the others. Each function
documents what it gives for junk.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from .decide.reconcile import VmReport
from .store.rows import HostStatistics, VmStatistics, VmStatus

#: The agent's wire states to the engine's (oVirt's ``VMStatus``) names.
WIRE_STATUS: Mapping[str, VmStatus] = {
    "WaitForLaunch": VmStatus.WAIT_FOR_LAUNCH,
    "Powering up": VmStatus.POWERING_UP,
    "Up": VmStatus.UP,
    "Powering down": VmStatus.POWERING_DOWN,
    "RebootInProgress": VmStatus.REBOOT_IN_PROGRESS,
    "Paused": VmStatus.PAUSED,
    "Migration Source": VmStatus.MIGRATING_FROM,
    "Migration Destination": VmStatus.MIGRATING_TO,
    "Saving State": VmStatus.SAVING_STATE,
    "Restoring state": VmStatus.RESTORING_STATE,
    "Down": VmStatus.DOWN,
}

VM_STATUS_EVENT = "|virt|VM_status|"


def number(value: Any) -> float | None:
    """:returns: a float from a number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def integer(value: Any) -> int | None:
    """:returns: an int from a number or a numeric string, else None."""
    found = number(value)
    return None if found is None else int(found)


def vm_id_of(value: Any) -> str | None:
    """:returns: a VM id in its canonical lower-case form, or None."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def report(vm_id: str, details: Any, time: int | None) -> VmReport | None:
    """
    A report from a VM's status details (an event's or a ``Host.getAllVmStats`` entry).

    :param time: the report's event time (None: the details' ``statusTime``).
    :returns: the report, or None for an unknown state or details that are not an object.
    """
    if not isinstance(details, Mapping):
        return None
    status = WIRE_STATUS.get(details.get("status"))  # type: ignore[arg-type]
    if status is None:
        return None
    if time is None:
        time = integer(details.get("statusTime"))
    name = details.get("vmName")
    return VmReport(
        vm_id=vm_id,
        status=status,
        time=time,
        name=name if isinstance(name, str) else "",
        exit_code=integer(details.get("exitCode")) if status is VmStatus.DOWN else None,
        exit_reason=integer(details.get("exitReason")) if status is VmStatus.DOWN else None,
        exit_message=_text(details.get("exitMessage")) if status is VmStatus.DOWN else None,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def status_event(event_id: str, params: Any) -> VmReport | None:
    """
    A report from a ``|virt|VM_status|<vmId>`` event.

    :returns: the report, or None for another event or junk.
    """
    if not event_id.startswith(VM_STATUS_EVENT) or not isinstance(params, Mapping):
        return None
    vm_id = vm_id_of(event_id[len(VM_STATUS_EVENT):])
    if vm_id is None:
        return None
    details = params.get(vm_id, params.get(event_id[len(VM_STATUS_EVENT):]))
    return report(vm_id, details, integer(params.get("notify_time")))


def poll_reports(stats: Any) -> list[VmReport]:
    """:returns: the reports of a ``Host.getAllVmStats`` answer; junk entries are skipped."""
    if not isinstance(stats, list):
        return []
    found = []
    for entry in stats:
        vm_id = vm_id_of(entry.get("vmId")) if isinstance(entry, Mapping) else None
        item = report(vm_id, entry, None) if vm_id else None
        if item is not None:
            found.append(item)
    return found


def _sum(entries: Any, key: str) -> int | None:
    if not isinstance(entries, Mapping):
        return None
    found = [integer(e.get(key)) for e in entries.values() if isinstance(e, Mapping)]
    values = [v for v in found if v is not None]
    return sum(values) if values else None


def vm_statistics(vm_uuid: UUID, entry: Mapping[str, Any]) -> VmStatistics:
    """A statistics sample from one ``Host.getAllVmStats`` entry (missing figures None)."""
    user, system = number(entry.get("cpuUser")), number(entry.get("cpuSys"))
    cpu = None if user is None and system is None else (user or 0.0) + (system or 0.0)
    balloon = entry.get("balloonInfo")
    balloon = balloon if isinstance(balloon, Mapping) else {}
    return VmStatistics(
        vm_id=vm_uuid,
        cpu_percent=cpu,
        mem_percent=number(entry.get("memUsage")),
        balloon_cur_kib=integer(balloon.get("balloon_cur")),
        balloon_target_kib=integer(balloon.get("balloon_target")),
        net_rx_bytes=_sum(entry.get("network"), "rx"),
        net_tx_bytes=_sum(entry.get("network"), "tx"),
        disk_read_bytes=_sum(entry.get("disks"), "readBytes"),
        disk_write_bytes=_sum(entry.get("disks"), "writtenBytes"),
    )


def poll_statistics(stats: Any) -> list[VmStatistics]:
    """:returns: one sample per running VM of a ``Host.getAllVmStats`` answer."""
    if not isinstance(stats, list):
        return []
    samples = []
    for entry in stats:
        if not isinstance(entry, Mapping):
            continue
        status = WIRE_STATUS.get(entry.get("status"))  # type: ignore[arg-type]
        if status is None or status is VmStatus.DOWN:
            continue
        vm_id = vm_id_of(entry.get("vmId"))
        if vm_id is not None:
            samples.append(vm_statistics(UUID(vm_id), entry))
    return samples


def host_statistics(host_id: UUID, stats: Any) -> HostStatistics | None:
    """:returns: a sample from a ``Host.getStats`` answer, or None if it is not an object."""
    if not isinstance(stats, Mapping):
        return None
    ksm = stats.get("ksmState")
    return HostStatistics(
        host_id=host_id,
        cpu_user=number(stats.get("cpuUser")),
        cpu_sys=number(stats.get("cpuSys")),
        cpu_idle=number(stats.get("cpuIdle")),
        mem_free_mib=integer(stats.get("memFree")),
        mem_used_percent=number(stats.get("memUsed")),
        vm_count=integer(stats.get("vmCount")),
        ksm_enabled=ksm if isinstance(ksm, bool) else None,
        ksm_pages=integer(stats.get("ksmPages")),
        ksm_cpu_percent=number(stats.get("ksmCpu")),
        swap_total_mib=integer(stats.get("swapTotal")),
        swap_free_mib=integer(stats.get("swapFree")),
    )


def host_facts(caps: Any) -> dict[str, Any]:
    """
    The host dynamic fields its capabilities give: ``cpu_count`` (threads, else cores) and
    ``mem_total_mib``; a figure that is missing or junk is left out.
    """
    if not isinstance(caps, Mapping):
        return {}
    facts: dict[str, Any] = {}
    cpus = integer(caps.get("cpuThreads")) or integer(caps.get("cpuCores"))
    if cpus:
        facts["cpu_count"] = cpus
    memory = integer(caps.get("memSize"))
    if memory:
        facts["mem_total_mib"] = memory
    return facts


def reserved_memory_mib(caps: Any) -> int:
    """:returns: the memory the host keeps for itself (caps ``reservedMem``), 0 if unknown."""
    if not isinstance(caps, Mapping):
        return 0
    return max(0, integer(caps.get("reservedMem")) or 0)
