"""Store queries about VMs: ``vm_static``, ``vm_dynamic``, ``vm_statistics`` and the
statistics history."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg2 import sql

from .base import QueryBase
from .errors import NotFound
from .mapping import (
    assignments,
    check_fields,
    field_names,
    from_row,
    insert,
    params_of,
    select_list,
    translated,
)
from .rows import Vm, VmDynamic, VmStatic, VmStatistics, VmStatus

_SELECT = sql.SQL(
    "SELECT {}, {}, {} FROM vm_static s JOIN vm_dynamic d ON d.vm_id = s.id "
    "LEFT JOIN vm_statistics t ON t.vm_id = s.id"
).format(select_list(VmStatic, "s"), select_list(VmDynamic, "d"), select_list(VmStatistics, "t"))

_HISTORY = sql.SQL(
    "SELECT * FROM (SELECT {} FROM vm_statistics_history h WHERE h.vm_id = %(id)s "
    "AND (%(since)s::timestamptz IS NULL OR h.time >= %(since)s) "
    "ORDER BY h.time DESC LIMIT %(limit)s) recent ORDER BY h_time"
).format(select_list(VmStatistics, "h"))

_SAMPLE_TYPES = {
    "vm_id": "uuid",
    "cpu_percent": "float8",
    "mem_percent": "float8",
    "balloon_cur_kib": "int8",
    "balloon_target_kib": "int8",
    "net_rx_bytes": "int8",
    "net_tx_bytes": "int8",
    "disk_read_bytes": "int8",
    "disk_write_bytes": "int8",
    "time": "timestamptz",
}
assert list(_SAMPLE_TYPES) == field_names(VmStatistics)

_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, _SAMPLE_TYPES))

# One statement for a whole batch: samples of VMs the store does not know are skipped, and the
# VMs' rows are share-locked so a concurrent removal waits rather than breaking the batch.
_RECORD = sql.SQL(
    "WITH sample AS ("
    " SELECT r.* FROM jsonb_to_recordset(%(samples)s::jsonb) AS r({defs})"
    " JOIN vm_static v ON v.id = r.vm_id FOR KEY SHARE OF v),"
    " latest AS (INSERT INTO vm_statistics ({cols}) SELECT {cols} FROM sample"
    " ON CONFLICT (vm_id) DO UPDATE SET {updates} RETURNING vm_id)"
    " INSERT INTO vm_statistics_history ({cols}) SELECT {cols} FROM sample"
).format(
    defs=sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
        for name, kind in _SAMPLE_TYPES.items()
    ),
    cols=_COLUMNS,
    updates=sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(name), sql.Identifier(name))
        for name in _SAMPLE_TYPES
        if name != "vm_id"
    ),
)


def vm_from_row(row: dict[str, Any]) -> Vm:
    """A :class:`Vm` from a row of the joined select."""
    statistics = None
    if row["t_vm_id"] is not None:
        statistics = from_row(VmStatistics, row, "t")
    return Vm(
        static=from_row(VmStatic, row, "s"),
        dynamic=from_row(VmDynamic, row, "d", {"status": VmStatus}),
        statistics=statistics,
    )


class VmQueries(QueryBase):
    """VMs: definition, runtime state, statistics."""

    async def add_vm(self, vm: VmStatic, *, dynamic: VmDynamic | None = None) -> Vm:
        """Define a VM, ``Down`` unless ``dynamic`` says otherwise (an external VM found
        running, for instance).

        :raises DuplicateName: another VM has this name.
        :raises NotFound: ``pinned_host`` or a host in ``dynamic`` does not exist.
        :raises InvalidValue: a value the schema refuses (memory or vCPUs not positive...).
        """
        params = params_of(dataclasses.replace(vm, created=self.now, updated=self.now))
        with translated(name=vm.name, params=params):
            await self._sql.execute(insert("vm_static", params), params)
        state = dataclasses.replace(dynamic or VmDynamic(vm.id), vm_id=vm.id, updated=self.now)
        dparams = params_of(state)
        with translated(params=dparams):
            await self._sql.execute(insert("vm_dynamic", dparams), dparams)
        return await self.get_vm(vm.id)

    async def get_vm(self, vm_id: UUID) -> Vm:
        """The VM with this id.

        :raises NotFound: no such VM.
        """
        row = await self._sql.fetch_one(_SELECT + sql.SQL(" WHERE s.id = %(id)s"), {"id": vm_id})
        if row is None:
            raise NotFound("vm", vm_id)
        return vm_from_row(row)

    async def get_vm_by_name(self, name: str) -> Vm:
        """The VM with this name.

        :raises NotFound: no such VM.
        """
        row = await self._sql.fetch_one(_SELECT + sql.SQL(" WHERE s.name = %(n)s"), {"n": name})
        if row is None:
            raise NotFound("vm", name)
        return vm_from_row(row)

    async def list_vms(self, *, host_id: UUID | None = None) -> list[Vm]:
        """Every VM by name, or those running on or migrating to ``host_id``."""
        where = sql.SQL(
            " WHERE %(host)s::uuid IS NULL OR d.run_on_host = %(host)s"
            " OR d.migrating_to_host = %(host)s ORDER BY s.name"
        )
        rows = await self._sql.fetch_all(_SELECT + where, {"host": host_id})
        return [vm_from_row(row) for row in rows]

    async def update_vm(self, vm_id: UUID, **changes: Any) -> Vm:
        """Change a VM's definition: any :class:`VmStatic` field but ``id``, ``created`` and
        ``updated``.

        :raises NotFound: no such VM, or no such ``pinned_host``.
        :raises DuplicateName: the new name is taken.
        :raises TypeError: a field that does not exist or cannot change.
        """
        check_fields(VmStatic, changes, fixed=("id", "created", "updated"))
        await self._update("vm", "vm_static", "id", vm_id, changes, name=changes.get("name"))
        return await self.get_vm(vm_id)

    async def remove_vm(self, vm_id: UUID) -> None:
        """Remove a VM with its runtime state and statistics (whatever its state: the caller
        checks that it is down).

        :raises NotFound: no such VM.
        """
        count = await self._sql.execute("DELETE FROM vm_static WHERE id = %(id)s", {"id": vm_id})
        if count == 0:
            raise NotFound("vm", vm_id)

    async def set_vm_dynamic(self, dynamic: VmDynamic, *, force: bool = False) -> bool:
        """Replace a VM's runtime state, unless it comes from an older status event.

        With ``dynamic.last_notify_time`` set, the write applies only if the stored
        ``last_notify_time`` is unset or not newer, so events applied in any order leave the
        newest one's state (the check and the write are one statement). Without it, the
        write applies and the stored ``last_notify_time`` stays. ``force`` writes
        unconditionally, ``last_notify_time`` included (when the VM moves to another host,
        whose notify clock is unrelated).

        :returns: True if written, False if refused as stale.
        :raises NotFound: no such VM, or no such ``run_on_host``/``migrating_to_host``.
        """
        params = params_of(dataclasses.replace(dynamic, updated=self.now))
        if dynamic.last_notify_time is None and not force:
            del params["last_notify_time"]
        changes = {k: v for k, v in params.items() if k != "vm_id"}
        statement = sql.SQL("UPDATE vm_dynamic SET {} WHERE vm_id = %(vm_id)s").format(
            assignments(changes)
        )
        if dynamic.last_notify_time is not None and not force:
            statement += sql.SQL(
                " AND (last_notify_time IS NULL OR last_notify_time <= %(last_notify_time)s)"
            )
        with translated(params=params):
            count = await self._sql.execute(statement, params)
        if count:
            return True
        if await self._sql.fetch_one(
            "SELECT 1 FROM vm_dynamic WHERE vm_id = %(id)s", {"id": dynamic.vm_id}
        ) is None:
            raise NotFound("vm", dynamic.vm_id)
        return False

    async def record_vm_statistics(self, samples: Sequence[VmStatistics]) -> int:
        """Make each sample its VM's latest statistics and add it to the history, in one
        statement; samples of unknown VMs are skipped (a VM removed meanwhile), and for a VM
        sampled twice the last sample counts. History older than the retention is dropped.

        :returns: how many samples were recorded.
        """
        latest = {}
        for sample in samples:
            latest[sample.vm_id] = dataclasses.replace(sample, time=sample.time or self.now)
        if not latest:
            return 0
        rows = [dataclasses.asdict(s) for s in latest.values()]
        count = await self._sql.execute(
            _RECORD, {"samples": json.dumps(rows, default=_iso)}
        )
        await self._sql.execute(
            "DELETE FROM vm_statistics_history WHERE vm_id = ANY(%(ids)s) AND time < %(cutoff)s",
            {"ids": list(latest), "cutoff": self.now - self._settings.history_retention},
        )
        return count

    async def vm_statistics_history(
        self, vm_id: UUID, *, since: datetime | None = None, limit: int = 1000
    ) -> list[VmStatistics]:
        """The VM's most recent samples (at most ``limit``, none before ``since``), oldest
        first. An unknown VM has no samples."""
        rows = await self._sql.fetch_all(_HISTORY, {"id": vm_id, "since": since, "limit": limit})
        return [from_row(VmStatistics, row, "h") for row in rows]


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
