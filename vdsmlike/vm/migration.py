"""Pure: live migration's parameters, the request the hypervisor gets, and the wire shapes.

``VM.migrate`` takes VDSM's ``MigrateParams`` (``dst``, ``method``, ``maxBandwidth``,
``autoConverge``, ``compressed``, ``convergenceSchedule``, ``outgoingLimit``, ...);
:func:`parse_migrate_params` checks them, fills VDSM's defaults from the host's
:class:`MigrationSettings`, and names the key it refuses. :func:`migration_request` combines them
with the destination agent's answer to ``VM.migrationCreate`` into the
:class:`MigrationRequest` the hypervisor adapter runs. :func:`destination_xml` is what the
destination does to the source's domain XML, and the rest builds what goes on the wire
(``VM.getMigrationStatus`` and ``|virt|VM_migration_status|<vmId>``).

No I/O here: the convergence schedule is in :mod:`.migration_convergence`, the per-host limits
in :mod:`.migration_slots`, and the jobs that do the work in :mod:`.migration_source` and
:mod:`.migration_destination`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import params as check
from .xmlsafe import InvalidDomainXml, InvalidVmParams, element_spans, encode, parse_xml
from .xmlsafe import set_attribute as _set_attribute

#: VDSM's port, used when ``dst`` names a host without one.
DEFAULT_PORT = 54321
#: The agent's JSON-RPC path (``vdsmlike.rpc.websocket``).
RPC_PATH = "/jsonrpc"

#: Bad migration params: the same error as bad VM params (a message naming the key).
InvalidMigrationParams = InvalidVmParams


@dataclass(frozen=True)
class MigrationSettings:
    """
    A host's migration settings (``[vars]`` in the agent's config), with VDSM's defaults.

    :ivar max_outgoing: concurrent outgoing migrations; more wait for a slot.
    :ivar max_incoming: concurrent incoming migrations; ``VM.migrationCreate`` refuses more (82).
    :ivar max_bandwidth: MiB/s when ``VM.migrate`` gives no ``maxBandwidth``; 0 is unlimited.
    :ivar downtime: ms the downtime ramp ends at when there is no convergence schedule.
    :ivar downtime_steps: steps of that ramp; ``downtime_delay`` its length in s per GiB of RAM.
    :ivar progress_timeout: abort after this many s without progress (0: never).
    :ivar max_time_per_gib: abort after this many s per GiB of RAM (0: never).
    :ivar monitor_interval: s between progress samples (and ``VM_migration_status`` events).
    :ivar retry_timeout: s the source waits before asking a busy destination again.
    :ivar create_timeout: s the source waits for ``VM.migrationCreate`` to answer.
    :ivar destination_timeout: s an incoming VM may wait for its migration to finish.
    :ivar address: the address this host's QEMU receives migrations on, told to sources
        (empty: the host part of the ``dst`` the source used).
    :ivar libvirt_uri: the libvirt URI sources' libvirt daemons reach this host's at (empty:
        the agent's own libvirt URI, right when both daemons share a machine).
    """

    max_outgoing: int = 2
    max_incoming: int = 2
    max_bandwidth: int = 52
    downtime: int = 500
    downtime_steps: int = 5
    downtime_delay: float = 100.0
    progress_timeout: float = 240.0
    max_time_per_gib: float = 64.0
    monitor_interval: float = 10.0
    retry_timeout: float = 10.0
    create_timeout: float = 600.0
    destination_timeout: float = 21600.0
    address: str = ""
    libvirt_uri: str = ""


@dataclass(frozen=True)
class MigrationSupport:
    """
    What a hypervisor adapter can do about migration (capabilities as data).

    :ivar outgoing: it can send a domain to another host.
    :ivar incoming: it can receive one (an embedded QEMU driver cannot: no daemon to talk to).
    :ivar emulated: it cannot migrate for real (libvirt's test driver, the in-memory twin) and
        emulates it; an emulating host only migrates to and from emulating hosts.
    """

    outgoing: bool
    incoming: bool
    emulated: bool


@dataclass(frozen=True)
class Destination:
    """
    Where ``dst`` points: the destination agent's JSON-RPC URL and its host name.

    ``dst`` is VDSM's ``host[:port]`` (port 54321 when absent, ``[v6addr]:port`` for IPv6) or a
    full ``ws://`` / ``wss://`` URL of the agent.
    """

    url: str
    host: str


@dataclass(frozen=True)
class ScheduleAction:
    """
    One convergence-schedule action: ``setDowntime`` (``value`` ms), ``abort`` or ``postcopy``.
    """

    name: str
    value: int | None = None


@dataclass(frozen=True)
class StallingItem:
    """Run ``action`` once the migration stalled more than ``limit`` times (-1: at once)."""

    limit: int
    action: ScheduleAction


@dataclass(frozen=True)
class ConvergenceSchedule:
    """VDSM's ``convergenceSchedule``: ``init`` actions, then ``stalling`` items in order."""

    init: tuple[ScheduleAction, ...] = ()
    stalling: tuple[StallingItem, ...] = ()


@dataclass(frozen=True)
class MigrateParams:
    """
    ``VM.migrate``'s params, checked, with defaults filled in.

    :ivar max_bandwidth: MiB/s, 0 unlimited.
    :ivar parallel: parallel migration connections (0: one, the plain kind).
    :ivar dstqemu: the address the destination's QEMU listens on, if the engine says.
    """

    destination: Destination
    dst_token: str | None = None
    dstqemu: str | None = None
    max_bandwidth: int = 52
    auto_converge: bool = False
    compressed: bool = False
    tunneled: bool = False
    encrypted: bool = False
    abort_on_error: bool = False
    parallel: int = 0
    zerocopy: bool = False
    schedule: ConvergenceSchedule | None = None
    outgoing_limit: int | None = None
    incoming_limit: int | None = None


@dataclass(frozen=True)
class MigrationRequest:
    """
    What the source's hypervisor adapter is asked to do: a live, peer-to-peer migration.

    :ivar dest_uri: the destination libvirt daemon's URI (``dconnuri``).
    :ivar migrate_uri: ``VIR_MIGRATE_PARAM_URI`` (``tcp://<address>``), or None for libvirt's.
    :ivar listen_address: ``VIR_MIGRATE_PARAM_LISTEN_ADDRESS`` on the destination, or None.
    :ivar dest_xml: ``VIR_MIGRATE_PARAM_DEST_XML``: the domain as the destination wants it.
    :ivar bandwidth: MiB/s, 0 unlimited.
    """

    dest_uri: str
    migrate_uri: str | None = None
    listen_address: str | None = None
    dest_xml: str | None = None
    bandwidth: int = 0
    auto_converge: bool = False
    compressed: bool = False
    tunneled: bool = False
    encrypted: bool = False
    abort_on_error: bool = False
    parallel_connections: int = 0
    zerocopy: bool = False


@dataclass(frozen=True)
class JobStats:
    """
    One reading of a running migration job (libvirt's ``jobStats()``), in bytes and ms.

    :ivar iteration: the memory pass (1 for the first copy of all RAM).
    :ivar downtime: the expected downtime in ms, when the hypervisor knows it.
    """

    iteration: int
    data_total: int
    data_processed: int
    data_remaining: int
    elapsed_ms: int
    downtime: int | None = None


# -- params ---------------------------------------------------------------------------------


def parse_destination(dst: Any) -> Destination:
    """
    Read ``dst``.

    :raises InvalidMigrationParams: for anything but ``host[:port]`` or a ``ws(s)://`` URL.
    """
    value = check.text(dst, "dst").strip()
    if value.startswith(("ws://", "wss://")):
        parts = urlsplit(value)
        if not parts.hostname:
            raise InvalidMigrationParams(f"dst has no host: {value!r}")
        _port(parts, value)
        return Destination(value, parts.hostname)
    parts = urlsplit(f"//{value}")
    if not parts.hostname or parts.path or parts.query or parts.username is not None:
        raise InvalidMigrationParams(f"dst must be host[:port] or a ws:// URL, got {value!r}")
    port = _port(parts, value) or DEFAULT_PORT
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    return Destination(f"ws://{shown}:{port}{RPC_PATH}", host)


def _port(parts: Any, value: str) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise InvalidMigrationParams(f"dst has a bad port: {value!r}") from None


def parse_migrate_params(raw: Any, settings: MigrationSettings) -> MigrateParams:
    """
    Check ``VM.migrate``'s params and fill in defaults (VDSM's names and meanings).

    Accepted but without effect here: ``enableGuestEvents``, ``consoleAddress``, ``cpusets``,
    ``numaNodesets`` (no guest agent, no NUMA pinning); ``mode`` must be ``remote`` and
    ``method`` ``online`` (live), the only kinds VDSM still uses.

    :raises InvalidMigrationParams: naming the key refused.
    """
    raw = check.mapping(raw, "params")
    if "dst" not in raw:
        raise InvalidMigrationParams("dst is required")
    check.choice(raw.get("method", "online"), "method", ("online",))
    check.choice(raw.get("mode", "remote"), "mode", ("remote",))
    flags = {
        key: check.boolean(raw.get(name, False), name)
        for key, name in (
            ("auto_converge", "autoConverge"),
            ("compressed", "compressed"),
            ("tunneled", "tunneled"),
            ("encrypted", "encrypted"),
            ("abort_on_error", "abortOnError"),
            ("zerocopy", "zerocopy"),
        )
    }
    parallel = _count(raw.get("parallel"), "parallel", maximum=255)
    if flags["zerocopy"] and not parallel:
        raise InvalidMigrationParams("zerocopy needs parallel connections")
    bandwidth = _count(raw.get("maxBandwidth"), "maxBandwidth", maximum=10**7)
    return MigrateParams(
        destination=parse_destination(raw["dst"]),
        dst_token=_optional_text(raw.get("dstToken"), "dstToken"),
        dstqemu=_optional_text(raw.get("dstqemu"), "dstqemu"),
        max_bandwidth=bandwidth or settings.max_bandwidth,
        parallel=parallel,
        schedule=parse_schedule(raw.get("convergenceSchedule")),
        outgoing_limit=_count(raw.get("outgoingLimit"), "outgoingLimit", maximum=1000) or None,
        incoming_limit=_count(raw.get("incomingLimit"), "incomingLimit", maximum=1000) or None,
        **flags,
    )


def _count(value: Any, key: str, *, maximum: int) -> int:
    """A non-negative integer (or its string); None and "" are 0."""
    if value is None or value == "":
        return 0
    return check.integer(value, key, minimum=0, maximum=maximum, what=f"an integer 0-{maximum}")


def _optional_text(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    return check.text(value, key).strip()


_ACTIONS = ("setDowntime", "abort", "postcopy")


def parse_schedule(raw: Any) -> ConvergenceSchedule | None:
    """
    Read VDSM's ``convergenceSchedule``::

        {"init": [{"name": "setDowntime", "params": ["100"]}],
         "stalling": [{"limit": 1, "action": {"name": "setDowntime", "params": ["150"]}},
                      {"limit": -1, "action": {"name": "abort", "params": []}}]}

    :returns: the schedule, or None when absent or empty (the legacy downtime ramp applies).
    :raises InvalidMigrationParams: naming the bad entry.
    """
    if raw is None or raw == {}:
        return None
    raw = check.mapping(raw, "convergenceSchedule")
    unknown = set(raw) - {"init", "stalling"}
    if unknown:
        raise InvalidMigrationParams(f"convergenceSchedule has unknown keys: {sorted(unknown)}")
    init = tuple(
        _action(item, f"convergenceSchedule.init[{i}]")
        for i, item in enumerate(_list(raw.get("init", []), "convergenceSchedule.init"))
    )
    stalling = []
    for i, item in enumerate(_list(raw.get("stalling", []), "convergenceSchedule.stalling")):
        key = f"convergenceSchedule.stalling[{i}]"
        item = check.mapping(item, key)
        limit = check.integer(
            item.get("limit"), f"{key}.limit", minimum=-1, maximum=10**6, what="an integer >= -1"
        )
        stalling.append(StallingItem(limit, _action(item.get("action"), f"{key}.action")))
    if not init and not stalling:
        return None
    return ConvergenceSchedule(init, tuple(stalling))


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidMigrationParams(f"{key} must be a list, got {type(value).__name__}")
    return value


def _action(raw: Any, key: str) -> ScheduleAction:
    raw = check.mapping(raw, key)
    name = check.choice(raw.get("name"), f"{key}.name", _ACTIONS)
    args = _list(raw.get("params", []), f"{key}.params")
    if name != "setDowntime":
        return ScheduleAction(name)
    if len(args) != 1:
        raise InvalidMigrationParams(f"{key}.params must hold one downtime in ms")
    ms = check.integer(args[0], f"{key}.params[0]", minimum=1, maximum=10**6, what="ms 1-1000000")
    return ScheduleAction(name, ms)


def parse_change_params(raw: Any) -> int:
    """
    Read ``VM.migrateChangeParams``'s params: ``{"maxBandwidth": MiB/s}`` (VDSM changes only that).

    :returns: the new bandwidth in MiB/s (0: unlimited).
    """
    raw = check.mapping(raw, "params")
    if "maxBandwidth" not in raw:
        raise InvalidMigrationParams("maxBandwidth is required")
    unknown = set(raw) - {"maxBandwidth"}
    if unknown:
        raise InvalidMigrationParams(f"only maxBandwidth can change, not {sorted(unknown)}")
    return _count(raw["maxBandwidth"], "maxBandwidth", maximum=10**7)


# -- the request ------------------------------------------------------------------------------


def migration_request(params: MigrateParams, answer: dict[str, Any]) -> MigrationRequest:
    """
    The hypervisor's request, from the checked params and the destination's answer.

    The destination's QEMU address is, in order: ``dstqemu``, the address the destination
    advertises, the host of ``dst``.

    :param answer: the ``params`` of ``VM.migrationCreate``'s result (``libvirtUri``, ``xml``,
        optionally ``migrationAddress``).
    :raises InvalidMigrationParams: if the answer lacks the destination's libvirt URI.
    """
    dest_uri = answer.get("libvirtUri")
    if not isinstance(dest_uri, str) or not dest_uri:
        raise InvalidMigrationParams("the destination did not say its libvirt URI")
    address = params.dstqemu or answer.get("migrationAddress") or params.destination.host
    shown = f"[{address}]" if ":" in address else address
    xml = answer.get("xml")
    return MigrationRequest(
        dest_uri=dest_uri,
        migrate_uri=f"tcp://{shown}",
        listen_address=address,
        dest_xml=xml if isinstance(xml, str) and xml else None,
        bandwidth=params.max_bandwidth,
        auto_converge=params.auto_converge,
        compressed=params.compressed,
        tunneled=params.tunneled,
        encrypted=params.encrypted,
        abort_on_error=params.abort_on_error,
        parallel_connections=params.parallel,
        zerocopy=params.zerocopy,
    )


def destination_xml(xml: str, serial_dir: str | None, vm_id: str) -> str:
    """
    The domain XML a destination runs: the source's, with file-backed ``<serial>`` and
    ``<console>`` logs moved into this host's serial directory (``<vmId>.log``, then
    ``<vmId>-1.log``... for further files), because the source's path means nothing here and two
    QEMUs on one machine must not write one file. Every other byte stays as it was.

    :raises InvalidDomainXml: for XML that is not a domain.
    """
    root = parse_xml(xml)
    if root.tag != "domain":
        raise InvalidDomainXml(f"root element must be <domain>, got <{root.tag}>")
    if not serial_dir:
        return xml
    renames: dict[str, str] = {}
    for tag in ("serial", "console"):
        for device in root.findall(f"devices/{tag}"):
            source = device.find("source")
            path = source.get("path") if source is not None else None
            if device.get("type") == "file" and path and path not in renames:
                suffix = f"-{len(renames)}" if renames else ""
                renames[path] = os.path.join(serial_dir, f"{vm_id}{suffix}.log")
    data = encode(xml)
    for span in reversed(element_spans(data, max_depth=4)):
        if span.path[1:] in (("devices", "serial", "source"), ("devices", "console", "source")):
            path = _attribute(data[span.start : span.tag_end].decode("utf-8"), "path")
            if path in renames:
                data = _set_attribute(data, span, "path", renames[path])
    return data.decode("utf-8")


def _attribute(tag: str, name: str) -> str | None:
    element = parse_xml(tag if tag.endswith("/>") else tag[:-1] + "/>")
    return element.get(name)


# -- wire shapes ------------------------------------------------------------------------------


def progress_percent(stats: JobStats) -> int:
    """How far a migration is, 0-99 (100 is only for a finished one)."""
    if stats.data_total <= 0:
        return 0
    done = stats.data_total - stats.data_remaining
    return max(0, min(99, done * 100 // stats.data_total))


def migration_status_event_id(vm_id: str) -> str:
    """The id of a VM's migration progress event, as VDSM names it."""
    return f"|virt|VM_migration_status|{vm_id}"


def progress_event(vm_id: str, progress: int, downtime: int | None) -> dict[str, Any]:
    """The params of ``|virt|VM_migration_status|<vmId>`` (``notify_time`` is added later)."""
    details: dict[str, Any] = {"progress": int(progress), "postcopy": False}
    if downtime is not None:
        details["downtime"] = int(downtime)
    return {vm_id: details}


@dataclass(frozen=True)
class MigrationView:
    """
    What ``VM.getMigrationStatus`` reports of a VM's last outgoing migration.

    :ivar state: ``none`` (never migrated), ``waiting`` (for a slot or a busy destination),
        ``preparing`` (the destination prepares), ``migrating``, ``succeeded``, ``failed``,
        ``cancelled``.
    :ivar error: why it failed, when it did.
    """

    state: str = "none"
    progress: int = 0
    destination: str | None = None
    downtime: int | None = None
    bandwidth: int | None = None
    error: str | None = None


_MESSAGES = {
    "none": "No migration",
    "waiting": "Migration waiting",
    "preparing": "Migration in progress",
    "migrating": "Migration in progress",
    "succeeded": "Migration done",
}

#: VDSM's ``migrateErr``: what a migration that did not happen reports.
MIGRATE_ERROR_CODE, MIGRATE_ERROR_MESSAGE = 12, "Fatal error during migration"


def migration_status(view: MigrationView) -> dict[str, Any]:
    """
    ``VM.getMigrationStatus``'s result: ``{status: {code, message}, progress, state, ...}``.

    ``status.code`` is 0 unless the migration failed or was cancelled, then 12 (``migrateErr``)
    with the reason in the message, as VDSM's source thread reports it.
    """
    if view.state in ("failed", "cancelled"):
        detail = view.error or view.state
        status = {"code": MIGRATE_ERROR_CODE, "message": f"{MIGRATE_ERROR_MESSAGE}: {detail}"}
    else:
        status = {"code": 0, "message": _MESSAGES[view.state]}
    result: dict[str, Any] = {
        "status": status,
        "progress": int(view.progress),
        "state": view.state,
        "postcopy": False,
    }
    for key, value in (
        ("dst", view.destination),
        ("downtime", view.downtime),
        ("maxBandwidth", view.bandwidth),
        ("error", view.error),
    ):
        if value is not None:
            result[key] = value
    return result
