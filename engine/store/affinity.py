"""Store queries about affinity groups: ``affinity_groups`` and their member VMs and hosts.

A group is one row plus two member tables (``affinity_group_vms``, ``affinity_group_hosts``);
reads join them into one :class:`AffinityGroupRow`, writes replace the members whole. Removing a
VM or a host removes its memberships (``ON DELETE CASCADE``); the group stays. Whether groups
contradict each other is the engine's check (:func:`engine.decide.affinity.check_groups`), not
the schema's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg2 import sql

from .base import QueryBase
from .errors import NotFound
from .mapping import assignments, translated

#: Group fields stored in ``affinity_groups`` (the members are stored apart).
_COLUMNS = (
    "name", "description", "vm_polarity", "hard", "host_polarity", "hosts_hard", "priority",
)  # fmt: skip

_SELECT = (
    "SELECT g.*,"
    " coalesce((SELECT array_agg(v.vm_id ORDER BY v.vm_id) FROM affinity_group_vms v"
    "  WHERE v.group_id = g.id), '{}') AS vms,"
    " coalesce((SELECT array_agg(h.host_id ORDER BY h.host_id) FROM affinity_group_hosts h"
    "  WHERE h.group_id = g.id), '{}') AS hosts"
    " FROM affinity_groups g"
)


@dataclass(frozen=True)
class AffinityGroupRow:
    """
    One stored affinity group (see :class:`engine.decide.affinity.AffinityGroup` for the rules).

    :ivar vm_polarity: ``positive`` (together), ``negative`` (apart) or ``none``.
    :ivar host_polarity: ``positive`` (only on ``hosts``) or ``negative`` (never on them).
    :ivar hosts_hard: whether the host rule is enforcing; None: as ``hard``.
    :ivar vms: member VM ids, sorted.
    :ivar hosts: member host ids, sorted.
    """

    id: UUID
    name: str
    description: str = ""
    vm_polarity: str = "none"
    hard: bool = False
    host_polarity: str = "positive"
    hosts_hard: bool | None = None
    priority: float = 1.0
    vms: tuple[UUID, ...] = ()
    hosts: tuple[UUID, ...] = ()
    created: datetime | None = None
    updated: datetime | None = None


def _row(row: dict[str, Any]) -> AffinityGroupRow:
    values = {f.name: row[f.name] for f in dataclasses.fields(AffinityGroupRow)}
    values["vms"] = tuple(row["vms"] or ())
    values["hosts"] = tuple(row["hosts"] or ())
    return AffinityGroupRow(**values)


class AffinityQueries(QueryBase):
    """Affinity groups with their members."""

    async def add_affinity_group(self, group: AffinityGroupRow) -> AffinityGroupRow:
        """
        Store a new group with its members.

        :raises DuplicateName: another group has this name.
        :raises NotFound: a member VM or host does not exist.
        :raises InvalidValue: a value the schema refuses (polarity, negative priority).
        """
        params = {name: getattr(group, name) for name in _COLUMNS}
        params.update(id=group.id, now=self.now)
        statement = (
            "INSERT INTO affinity_groups (id, created, updated, "
            + ", ".join(_COLUMNS)
            + ") VALUES (%(id)s, %(now)s, %(now)s, "
            + ", ".join(f"%({c})s" for c in _COLUMNS)
            + ")"
        )
        with translated(name=group.name, params=params):
            await self._sql.execute(statement, params)
        await self._set_members(group.id, group.vms, group.hosts)
        return await self.get_affinity_group(group.id)

    async def _set_members(
        self, group_id: UUID, vms: Iterable[UUID] | None, hosts: Iterable[UUID] | None
    ) -> None:
        for table, column, members in (
            ("affinity_group_vms", "vm_id", vms),
            ("affinity_group_hosts", "host_id", hosts),
        ):
            if members is None:
                continue
            await self._sql.execute(
                sql.SQL("DELETE FROM {} WHERE group_id = %(id)s").format(sql.Identifier(table)),
                {"id": group_id},
            )
            for member in sorted(set(members)):
                params = {"id": group_id, column: member}
                with translated(params=params):
                    await self._sql.execute(
                        sql.SQL("INSERT INTO {} (group_id, {}) VALUES (%(id)s, {})").format(
                            sql.Identifier(table), sql.Identifier(column), sql.Placeholder(column)
                        ),
                        params,
                    )

    async def get_affinity_group(self, group_id: UUID) -> AffinityGroupRow:
        """:raises NotFound: no such group."""
        row = await self._sql.fetch_one(_SELECT + " WHERE g.id = %(id)s", {"id": group_id})
        if row is None:
            raise NotFound("affinity group", group_id)
        return _row(row)

    async def list_affinity_groups(self) -> list[AffinityGroupRow]:
        """:returns: every group, by name."""
        rows = await self._sql.fetch_all(_SELECT + " ORDER BY g.name")
        return [_row(r) for r in rows]

    async def update_affinity_group(self, group_id: UUID, **changes: Any) -> AffinityGroupRow:
        """
        Change a group: any of its fields; ``vms`` and ``hosts`` replace the members whole.

        :raises NotFound: no such group, or a member VM or host that does not exist.
        :raises DuplicateName: the new name is taken.
        :raises TypeError: a field groups do not have.
        """
        unknown = sorted(set(changes) - {*_COLUMNS, "vms", "hosts"})
        if unknown:
            raise TypeError(f"cannot change {', '.join(unknown)} of an affinity group")
        vms, hosts = changes.pop("vms", None), changes.pop("hosts", None)
        params = {**changes, "updated": self.now}
        statement = sql.SQL("UPDATE affinity_groups SET {} WHERE id = %(_id)s").format(
            assignments(params)
        )
        with translated(name=changes.get("name"), params=params):
            count = await self._sql.execute(statement, {**params, "_id": group_id})
        if count == 0:
            raise NotFound("affinity group", group_id)
        await self._set_members(group_id, vms, hosts)
        return await self.get_affinity_group(group_id)

    async def remove_affinity_group(self, group_id: UUID) -> None:
        """:raises NotFound: no such group."""
        count = await self._sql.execute(
            "DELETE FROM affinity_groups WHERE id = %(id)s", {"id": group_id}
        )
        if count == 0:
            raise NotFound("affinity group", group_id)
