"""Store queries about hosts: ``host_static``, ``host_dynamic``, ``host_statistics``, the
statistics history, and ``host_power_management``."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg2.errors
from psycopg2 import sql

from .base import QueryBase
from .errors import Conflict, NotFound
from .mapping import (
    check_fields,
    from_row,
    insert,
    params_of,
    select_list,
    translated,
    upsert,
)
from .rows import Host, HostDynamic, HostPowerManagement, HostStatic, HostStatistics, HostStatus

_SELECT = sql.SQL(
    "SELECT {}, {}, {} FROM host_static s JOIN host_dynamic d ON d.host_id = s.id "
    "LEFT JOIN host_statistics t ON t.host_id = s.id"
).format(
    select_list(HostStatic, "s"), select_list(HostDynamic, "d"), select_list(HostStatistics, "t")
)

_HISTORY = sql.SQL(
    "SELECT * FROM (SELECT {} FROM host_statistics_history h WHERE h.host_id = %(id)s "
    "AND (%(since)s::timestamptz IS NULL OR h.time >= %(since)s) "
    "ORDER BY h.time DESC LIMIT %(limit)s) recent ORDER BY h_time"
).format(select_list(HostStatistics, "h"))


def host_from_row(row: dict[str, Any]) -> Host:
    """A :class:`Host` from a row of the joined select."""
    statistics = None
    if row["t_host_id"] is not None:
        statistics = from_row(HostStatistics, row, "t")
    return Host(
        static=from_row(HostStatic, row, "s"),
        dynamic=from_row(HostDynamic, row, "d", {"status": HostStatus}),
        statistics=statistics,
    )


class HostQueries(QueryBase):
    """Hosts: configuration, runtime state, statistics."""

    async def add_host(self, host: HostStatic, *, dynamic: HostDynamic | None = None) -> Host:
        """Define a host (and its initial runtime state, ``Installing`` by default).

        :raises DuplicateName: another host has this name.
        """
        static = dataclasses.replace(host, created=self.now, updated=self.now)
        params = params_of(static)
        with translated(name=host.name, params=params):
            await self._sql.execute(insert("host_static", params), params)
        state = dataclasses.replace(dynamic or HostDynamic(host.id), host_id=host.id)
        dparams = params_of(dataclasses.replace(state, updated=self.now))
        with translated(params=dparams):
            await self._sql.execute(insert("host_dynamic", dparams), dparams)
        return await self.get_host(host.id)

    async def get_host(self, host_id: UUID) -> Host:
        """The host with this id.

        :raises NotFound: no such host.
        """
        row = await self._sql.fetch_one(_SELECT + sql.SQL(" WHERE s.id = %(id)s"), {"id": host_id})
        if row is None:
            raise NotFound("host", host_id)
        return host_from_row(row)

    async def get_host_by_name(self, name: str) -> Host:
        """The host with this name.

        :raises NotFound: no such host.
        """
        row = await self._sql.fetch_one(_SELECT + sql.SQL(" WHERE s.name = %(n)s"), {"n": name})
        if row is None:
            raise NotFound("host", name)
        return host_from_row(row)

    async def list_hosts(self) -> list[Host]:
        """Every host, by name."""
        rows = await self._sql.fetch_all(_SELECT + sql.SQL(" ORDER BY s.name"))
        return [host_from_row(row) for row in rows]

    async def update_host(self, host_id: UUID, **changes: Any) -> Host:
        """Change a host's configuration: any of ``name``, ``address``, ``port``, ``token``.

        :raises NotFound: no such host.
        :raises DuplicateName: the new name is taken.
        :raises TypeError: a field that does not exist or cannot change.
        """
        check_fields(HostStatic, changes, fixed=("id", "created", "updated"))
        await self._update("host", "host_static", "id", host_id, changes, name=changes.get("name"))
        return await self.get_host(host_id)

    async def remove_host(self, host_id: UUID) -> None:
        """Remove a host with its runtime state and statistics; VMs pinned to it are unpinned.

        :raises NotFound: no such host.
        :raises Conflict: VMs still run on it or migrate to it, as far as the store knows.
        """
        try:
            count = await self._sql.execute(
                "DELETE FROM host_static WHERE id = %(id)s", {"id": host_id}
            )
        except psycopg2.errors.ForeignKeyViolation as e:
            raise Conflict(f"host {host_id} still has VMs running on it or migrating to it") from e
        if count == 0:
            raise NotFound("host", host_id)

    async def update_host_dynamic(self, host_id: UUID, **changes: Any) -> Host:
        """Change a host's runtime state: any of ``status``, ``status_reason``, ``last_seen``,
        ``capabilities``, ``cpu_count``, ``mem_total_mib``.

        :raises NotFound: no such host.
        :raises InvalidValue: a value the schema refuses.
        """
        check_fields(HostDynamic, changes, fixed=("host_id", "updated"))
        await self._update("host", "host_dynamic", "host_id", host_id, changes)
        return await self.get_host(host_id)

    async def record_host_statistics(self, sample: HostStatistics) -> None:
        """Make ``sample`` the host's latest statistics and add it to the history, dropping
        history older than the retention.

        :raises NotFound: no such host.
        """
        params = params_of(dataclasses.replace(sample, time=sample.time or self.now))
        with translated(params=params):
            await self._sql.execute(upsert("host_statistics", params, key="host_id"), params)
            await self._sql.execute(insert("host_statistics_history", params), params)
        await self._sql.execute(
            "DELETE FROM host_statistics_history WHERE host_id = %(id)s AND time < %(cutoff)s",
            {"id": sample.host_id, "cutoff": self.now - self._settings.history_retention},
        )

    async def host_statistics_history(
        self, host_id: UUID, *, since: datetime | None = None, limit: int = 1000
    ) -> list[HostStatistics]:
        """The host's most recent samples (at most ``limit``, none before ``since``), oldest
        first. An unknown host has no samples."""
        rows = await self._sql.fetch_all(
            _HISTORY, {"id": host_id, "since": since, "limit": limit}
        )
        return [from_row(HostStatistics, row, "h") for row in rows]

    async def get_power_management(self, host_id: UUID) -> HostPowerManagement:
        """The host's power management (the defaults, disabled, if it has none).

        :raises NotFound: no such host.
        """
        row = await self._sql.fetch_one(
            sql.SQL(
                "SELECT {}, s.id AS host FROM host_static s LEFT JOIN host_power_management p "
                "ON p.host_id = s.id WHERE s.id = %(id)s"
            ).format(select_list(HostPowerManagement, "p")),
            {"id": host_id},
        )
        if row is None:
            raise NotFound("host", host_id)
        if row["p_host_id"] is None:
            return HostPowerManagement(host_id)
        return from_row(HostPowerManagement, row, "p")

    async def set_power_management(self, settings: HostPowerManagement) -> HostPowerManagement:
        """Replace the host's power management with ``settings``.

        :raises NotFound: no such host.
        :raises InvalidValue: enabled without a driver, or options that are not an object.
        """
        params = params_of(dataclasses.replace(settings, updated=self.now))
        with translated(params=params):
            await self._sql.execute(upsert("host_power_management", params, key="host_id"), params)
        return await self.get_power_management(settings.host_id)
