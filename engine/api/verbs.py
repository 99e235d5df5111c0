"""The admin API's verbs on ``IEngine``: thin handlers, each validate → engine → wire.

Params arrive bound and checked against ``schema/engine.yml`` (keyword arguments with the
schema's names, defaults filled in); a handler converts ids and enums, calls one ``IEngine``
operation and returns the wire shape of the row it fires with (:mod:`engine.api.wire`). What
the engine raises is turned into API errors by :func:`engine.api.errors.translating`, applied
to every handler by :func:`shared_handlers`.

The verbs that depend on the connection (``Auth.*``, ``Engine.subscribe``,
``Engine.unsubscribe``, ``VMs.consoleWatch``, ``VMs.consoleUnwatch``) live with the connection,
in :mod:`engine.api.websocket`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from engine.fence import wire as fence_wire
from engine.fence.actions import FenceActions
from engine.interfaces import IEngine, IStore
from engine.store.auditlog import Severity
from engine.store.rows import JobStatus
from vdsmlike.api.verbs import collect, verb

from . import wire
from .errors import translating

#: ``VMs.add`` / ``VMs.update`` field names that differ between the wire and ``IEngine``.
_VM_FIELDS_FROM_WIRE = {"pinned_host_id": "pinned_host"}


def _vm_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """:returns: VM definition fields with ``IEngine``'s names, ids as UUIDs."""
    spec = {_VM_FIELDS_FROM_WIRE.get(key, key): value for key, value in fields.items()}
    if "pinned_host" in spec:
        spec["pinned_host"] = wire.parse_id(spec["pinned_host"])
    return spec


class HostsApi:
    """``Hosts.*``: register, list, inspect, remove; maintenance and activation as jobs.

    :param engine: the engine's operations.
    :param store: read directly for statistics history only.
    """

    def __init__(self, engine: IEngine, store: IStore) -> None:
        self._engine = engine
        self._store = store

    @verb("Hosts.add")
    async def add(self, name: str, address: str, port: int, token: str) -> dict[str, Any]:
        """Register a host; fires with its ``Host``."""
        return wire.host(await self._engine.add_host(name, address, port=port, token=token))

    @verb("Hosts.list")
    async def list_hosts(self) -> list[dict[str, Any]]:
        """Every host by name."""
        return [wire.host(row) for row in await self._engine.list_hosts()]

    @verb("Hosts.get")
    async def get(self, id: str) -> dict[str, Any]:
        """One host with its capabilities."""
        return wire.host_details(await self._engine.get_host(wire.parse_id(id)))

    @verb("Hosts.remove")
    async def remove(self, id: str) -> bool:
        """Forget a host."""
        await self._engine.remove_host(wire.parse_id(id))
        return True

    @verb("Hosts.maintenance")
    async def maintenance(
        self, id: str, idempotency_key: str | None, move_back: bool | None = None
    ) -> dict[str, Any]:
        """Start moving the host into Maintenance; fires with the ``Job``."""
        row = await self._engine.maintenance(
            wire.parse_id(id), idempotency_key=idempotency_key, move_back=move_back
        )
        return wire.job(row)

    @verb("Hosts.activate")
    async def activate(self, id: str, idempotency_key: str | None) -> dict[str, Any]:
        """Start bringing the host out of Maintenance; fires with the ``Job``."""
        row = await self._engine.activate(wire.parse_id(id), idempotency_key=idempotency_key)
        return wire.job(row)

    @verb("Hosts.statistics")
    async def statistics(self, id: str, since: str | None, limit: int) -> list[dict[str, Any]]:
        """The host's recent samples, oldest first (404 for an unknown host)."""
        host = await self._engine.get_host(wire.parse_id(id))
        samples = await self._store.host_statistics_history(
            host.id, since=wire.parse_time(since), limit=limit
        )
        return [wire.host_statistics(sample) for sample in samples]

    # Power management and fencing (engine/fence/): shapes from engine.fence.wire.

    @verb("Hosts.getPowerManagement")
    async def get_power_management(self, id: str) -> dict[str, Any]:
        """The host's power management, secret options named but not given."""
        return _power_management(await self._engine.get_power_management(wire.parse_id(id)))

    @verb("Hosts.setPowerManagement")
    async def set_power_management(
        self, id: str, enabled: bool, driver: str, options: dict[str, Any], fencing_enabled: bool
    ) -> dict[str, Any]:
        """Configure the host's power driver (checked by the driver); fires with the settings."""
        row = await self._engine.set_power_management(
            wire.parse_id(id), enabled=enabled, driver=driver, options=options,
            fencing_enabled=fencing_enabled,
        )  # fmt: skip
        return _power_management(row)

    @verb("Hosts.powerStatus")
    async def power_status(self, id: str) -> dict[str, Any]:
        """The host's power as observed now, with proof."""
        return fence_wire.fence_result(await self._engine.power_status(wire.parse_id(id)))

    @verb("Hosts.fence")
    async def fence(
        self, id: str, action: str, agent: str | None, force: bool, idempotency_key: str | None
    ) -> dict[str, Any]:
        """Fence the host as a job; fires with the ``Job``."""
        row = await self._engine.fence(
            wire.parse_id(id), action, agent=agent, force=force, idempotency_key=idempotency_key
        )
        return wire.job(row)


def _power_management(row: Any) -> dict[str, Any]:
    secret = FenceActions.secret_options(row.driver)
    return fence_wire.power_management(row, secret, updated=wire.time(row.updated))


class VmsApi:
    """``VMs.*``: define, list, inspect, change, remove; lifecycle actions as jobs.

    :param engine: the engine's operations.
    :param store: read directly for statistics history only.
    """

    def __init__(self, engine: IEngine, store: IStore) -> None:
        self._engine = engine
        self._store = store

    @verb("VMs.add")
    async def add(
        self,
        name: str,
        memory_mib: int,
        vcpus: int,
        kernel: str | None,
        initrd: str | None,
        cmdline: str | None,
        disks: list[dict[str, Any]],
        nics: list[dict[str, Any]],
        custom: dict[str, str],
        ha: bool,
        ha_priority: int,
        pinned_host_id: str | None,
    ) -> dict[str, Any]:
        """Define a VM; fires with its ``Vm``."""
        spec = _vm_fields(
            {
                "name": name,
                "memory_mib": memory_mib,
                "vcpus": vcpus,
                "kernel": kernel,
                "initrd": initrd,
                "cmdline": cmdline,
                "disks": disks,
                "nics": nics,
                "custom": custom,
                "ha": ha,
                "ha_priority": ha_priority,
                "pinned_host_id": pinned_host_id,
            }
        )
        return wire.vm(await self._engine.add_vm(spec))

    @verb("VMs.list")
    async def list_vms(self, host_id: str | None) -> list[dict[str, Any]]:
        """Every VM by name, or one host's."""
        rows = await self._engine.list_vms(host_id=wire.parse_id(host_id))
        return [wire.vm(row) for row in rows]

    @verb("VMs.get")
    async def get(self, id: str) -> dict[str, Any]:
        """One VM."""
        return wire.vm(await self._engine.get_vm(wire.parse_id(id)))

    @verb("VMs.update")
    async def update(self, id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a VM's definition; fires with the ``Vm``."""
        return wire.vm(await self._engine.update_vm(wire.parse_id(id), _vm_fields(changes)))

    @verb("VMs.remove")
    async def remove(self, id: str) -> bool:
        """Forget a VM."""
        await self._engine.remove_vm(wire.parse_id(id))
        return True

    @verb("VMs.start")
    async def start(
        self, id: str, host_id: str | None, idempotency_key: str | None
    ) -> dict[str, Any]:
        """Start a VM (scheduled, or on ``host_id``); fires with the ``Job``."""
        row = await self._engine.start_vm(
            wire.parse_id(id), host_id=wire.parse_id(host_id), idempotency_key=idempotency_key
        )
        return wire.job(row)

    @verb("VMs.stop")
    async def stop(self, id: str, idempotency_key: str | None) -> dict[str, Any]:
        """Power a VM off; fires with the ``Job``."""
        row = await self._engine.stop_vm(wire.parse_id(id), idempotency_key=idempotency_key)
        return wire.job(row)

    @verb("VMs.shutdown")
    async def shutdown(self, id: str, idempotency_key: str | None) -> dict[str, Any]:
        """Ask a VM's guest to shut down; fires with the ``Job``."""
        row = await self._engine.shutdown_vm(wire.parse_id(id), idempotency_key=idempotency_key)
        return wire.job(row)

    @verb("VMs.pause")
    async def pause(self, id: str, idempotency_key: str | None) -> dict[str, Any]:
        """Pause a VM; fires with the ``Job``."""
        row = await self._engine.pause_vm(wire.parse_id(id), idempotency_key=idempotency_key)
        return wire.job(row)

    @verb("VMs.resume")
    async def resume(self, id: str, idempotency_key: str | None) -> dict[str, Any]:
        """Resume a paused VM; fires with the ``Job``."""
        row = await self._engine.resume_vm(wire.parse_id(id), idempotency_key=idempotency_key)
        return wire.job(row)

    @verb("VMs.migrate")
    async def migrate(
        self, id: str, host_id: str | None, idempotency_key: str | None
    ) -> dict[str, Any]:
        """Live-migrate a VM (to ``host_id`` or the scheduler's pick); fires with the ``Job``."""
        row = await self._engine.migrate_vm(
            wire.parse_id(id), host_id=wire.parse_id(host_id), idempotency_key=idempotency_key
        )
        return wire.job(row)

    @verb("VMs.console")
    async def console(self, id: str, offset: int | None, size: int) -> dict[str, Any]:
        """Read the VM's serial console from the host it runs on (409 when it runs nowhere)."""
        return await self._engine.read_console(wire.parse_id(id), offset=offset, size=size)

    @verb("VMs.statistics")
    async def statistics(self, id: str, since: str | None, limit: int) -> list[dict[str, Any]]:
        """The VM's recent samples, oldest first (404 for an unknown VM)."""
        row = await self._engine.get_vm(wire.parse_id(id))
        samples = await self._store.vm_statistics_history(
            row.id, since=wire.parse_time(since), limit=limit
        )
        return [wire.vm_statistics(sample) for sample in samples]


#: ``AffinityGroups.*`` field names that differ between the wire and ``IEngine``.
_GROUP_FIELDS_FROM_WIRE = {"vm_ids": "vms", "host_ids": "hosts"}


def _group_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """:returns: affinity group fields with ``IEngine``'s names, member ids as UUIDs."""
    spec = {_GROUP_FIELDS_FROM_WIRE.get(key, key): value for key, value in fields.items()}
    for key in ("vms", "hosts"):
        if key in spec:
            spec[key] = [wire.parse_id(member) for member in spec[key]]
    return spec


class AffinityGroupsApi:
    """``AffinityGroups.*``: define, list, inspect, change and remove affinity groups.

    :param engine: the engine's operations.
    """

    def __init__(self, engine: IEngine) -> None:
        self._engine = engine

    @verb("AffinityGroups.add")
    async def add(
        self,
        name: str,
        description: str,
        vm_polarity: str,
        hard: bool,
        vm_ids: list[str],
        host_polarity: str,
        hosts_hard: bool | None,
        host_ids: list[str],
        priority: float,
    ) -> dict[str, Any]:
        """Define a group (409 when it contradicts others); fires with its ``AffinityGroup``."""
        spec = _group_fields({
            "name": name, "description": description, "vm_polarity": vm_polarity,
            "hard": hard, "vm_ids": vm_ids, "host_polarity": host_polarity,
            "hosts_hard": hosts_hard, "host_ids": host_ids, "priority": priority,
        })  # fmt: skip
        return wire.affinity_group(await self._engine.add_affinity_group(spec))

    @verb("AffinityGroups.list")
    async def list_groups(self) -> list[dict[str, Any]]:
        """Every group by name."""
        return [wire.affinity_group(row) for row in await self._engine.list_affinity_groups()]

    @verb("AffinityGroups.get")
    async def get(self, id: str) -> dict[str, Any]:
        """One group."""
        return wire.affinity_group(await self._engine.get_affinity_group(wire.parse_id(id)))

    @verb("AffinityGroups.update")
    async def update(self, id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a group (members replaced whole); fires with the ``AffinityGroup``."""
        row = await self._engine.update_affinity_group(wire.parse_id(id), _group_fields(changes))
        return wire.affinity_group(row)

    @verb("AffinityGroups.remove")
    async def remove(self, id: str) -> bool:
        """Forget a group."""
        await self._engine.remove_affinity_group(wire.parse_id(id))
        return True


class JournalApi:
    """``Events.list``, ``Jobs.list``, ``Jobs.get`` and ``Engine.ping``.

    :param engine: the engine's operations.
    :param clock: the time ``Engine.ping`` reports.
    :param version: the API version ``Engine.ping`` reports.
    """

    def __init__(self, engine: IEngine, clock: IReactorTime, version: str) -> None:
        self._engine = engine
        self._clock = clock
        self._version = version

    @verb("Engine.ping")
    def ping(self) -> dict[str, Any]:
        """The API version and the engine's time."""
        return {"version": self._version, "time": wire.epoch_time(self._clock.seconds())}

    @verb("Events.list")
    async def events(
        self,
        since: str | int | None,
        before: str | int | None,
        severity: str | None,
        host_id: str | None,
        vm_id: str | None,
        job_id: str | None,
        type: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """The audit log, newest first, filtered."""
        filters = {
            "since_id": wire.parse_event_id(since),
            "before_id": wire.parse_event_id(before),
            "min_severity": Severity(severity) if severity else None,
            "host_id": wire.parse_id(host_id),
            "vm_id": wire.parse_id(vm_id),
            "job_id": wire.parse_id(job_id),
            "event_type": type,
        }
        given = {key: value for key, value in filters.items() if value is not None}
        return [wire.event(row) for row in await self._engine.list_events(limit=limit, **given)]

    @verb("Jobs.list")
    async def jobs(
        self, status: str | None, target_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Jobs, newest first, filtered."""
        filters = {
            "status": JobStatus(status) if status else None,
            "target_id": wire.parse_id(target_id),
        }
        given = {key: value for key, value in filters.items() if value is not None}
        return [wire.job(row) for row in await self._engine.list_jobs(limit=limit, **given)]

    @verb("Jobs.get")
    async def job(self, id: str) -> dict[str, Any]:
        """One job."""
        return wire.job(await self._engine.get_job(wire.parse_id(id)))


def shared_handlers(
    engine: IEngine, store: IStore, clock: IReactorTime, version: str
) -> dict[str, Callable[..., Any]]:
    """
    The verbs every connection shares, each translating failures into API errors.

    :returns: ``{verb name: handler}``.
    """
    handlers = collect(
        HostsApi(engine, store),
        VmsApi(engine, store),
        AffinityGroupsApi(engine),
        JournalApi(engine, clock, version),
    )
    return {name: translating(name, fn) for name, fn in handlers.items()}
