"""``AffinityGroups``: the engine's affinity groups, defined through the admin API and honoured
by every scheduling decision.

Definitions are store writes with an audit event (``AFFINITY_GROUP_ADDED``, ``_CHANGED``,
``_REMOVED``). Before anything is written, the groups as they would be after the change are
checked with :func:`engine.decide.affinity.check_groups` against every host of the cluster: a
change that brings a new contradiction between hard rules (two VMs that must run together and
apart, host rules that leave no host, an apart group larger than the hosts that may run it) is
refused with ``Conflict`` naming the groups, and nothing changes. A contradiction the groups
already had (stored before the check existed) does not block unrelated changes.

The groups are kept in memory (loaded at engine start, updated with each change), so that
the cluster manager's ``decorate`` hook (:mod:`engine.decide.balancing`'s ``make_decorator``,
or the engine's own) can give every scheduling request its groups synchronously, as the
scheduler is asked: :meth:`AffinityGroups.current` is the group source, :meth:`names` and
:meth:`host_names` name the members in explanations. Starts, migrations, maintenance, HA
restarts and balancing all place VMs through that manager, so all of them honour the groups.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from twisted.logger import Logger

from .decide import affinity
from .decide.affinity import AffinityError, AffinityGroup
from .events import Auditor
from .interfaces import IStore
from .store.affinity import AffinityGroupRow
from .store.auditlog import AuditType
from .store.errors import Conflict, DuplicateName, InvalidValue, NotFound
from .vmtable import VmTable

#: Fields a definition may set, and their defaults.
FIELDS: dict[str, Any] = {
    "description": "",
    "vm_polarity": "none",
    "hard": False,
    "host_polarity": "positive",
    "hosts_hard": None,
    "priority": 1.0,
    "vms": (),
    "hosts": (),
}


def _members(values: Any, kind: str) -> tuple[UUID, ...]:
    """:returns: member ids as UUIDs. :raises NotFound: for one that is not an id."""
    out = []
    for value in values or ():
        try:
            out.append(value if isinstance(value, UUID) else UUID(str(value)))
        except ValueError:
            raise NotFound(kind, value) from None
    return tuple(out)


def _fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """:returns: definition fields with members as UUID tuples and the name stripped."""
    fixed = dict(values)
    for key, kind in (("vms", "vm"), ("hosts", "host")):
        if key in fixed:
            fixed[key] = _members(fixed[key], kind)
    if "name" in fixed:
        fixed["name"] = str(fixed["name"]).strip()
    return fixed


def to_rule(row: AffinityGroupRow) -> AffinityGroup:
    """:returns: a stored group as the deciding code's :class:`AffinityGroup` (ids as text)."""
    return AffinityGroup(
        name=row.name,
        vms=frozenset(str(v) for v in row.vms),
        vm_polarity=row.vm_polarity,  # type: ignore[arg-type]
        hosts=frozenset(str(h) for h in row.hosts),
        host_polarity=row.host_polarity,  # type: ignore[arg-type]
        hard=row.hard,
        hosts_hard=row.hosts_hard,
        priority=row.priority,
    )


class AffinityGroups:
    """
    The engine's affinity groups (see the module docstring).

    :param store: where groups are kept.
    :param auditor: records the definition events.
    :param vms: the engine's VMs (names, where they run).
    :param monitors: host id → its monitor (names, states).
    """

    log = Logger()

    def __init__(
        self, store: IStore, auditor: Auditor, vms: VmTable, monitors: Mapping[UUID, Any]
    ) -> None:
        self._store = store
        self._auditor = auditor
        self._vms = vms
        self._monitors = monitors
        self._rows: dict[UUID, AffinityGroupRow] = {}

    async def load(self) -> None:
        """Read every group from the store (at engine start)."""
        self._rows = {row.id: row for row in await self._store.list_affinity_groups()}

    # -- reading -----------------------------------------------------------------------------

    def current(self) -> list[AffinityGroup]:
        """:returns: every group as the deciding code reads it (a group source)."""
        return [to_rule(row) for row in self._rows.values()]

    def names(self) -> dict[str, str]:
        """:returns: VM ids → names (for explanations)."""
        return {str(vm.id): vm.name for vm in self._vms}

    def host_names(self) -> dict[str, str]:
        """:returns: host ids → names (for explanations)."""
        return {str(host_id): m.name for host_id, m in self._monitors.items()}

    async def list(self) -> list[AffinityGroupRow]:
        """:returns: every group, by name (from the store)."""
        return await self._store.list_affinity_groups()

    async def get(self, group_id: UUID) -> AffinityGroupRow:
        """:raises NotFound: no such group."""
        return await self._store.get_affinity_group(group_id)

    # -- changing ----------------------------------------------------------------------------

    async def add(self, spec: Mapping[str, Any]) -> AffinityGroupRow:
        """
        Define a group: ``name`` and any of :data:`FIELDS` (``vms``, ``hosts`` as ids).

        :raises NotFound: a member VM or host that does not exist.
        :raises InvalidValue: a bad polarity or priority.
        :raises Conflict: the group contradicts the others (the message names them).
        :raises DuplicateName: another group has this name.
        """
        unknown = sorted(set(spec) - set(FIELDS) - {"name"})
        if unknown:
            raise InvalidValue(f"affinity groups have no field(s) {', '.join(unknown)}")
        row = AffinityGroupRow(id=uuid.uuid4(), **_fields({**FIELDS, "name": "", **spec}))
        self._check(row, replacing=None)
        stored = await self._store.add_affinity_group(row)
        self._rows[stored.id] = stored
        await self._auditor.record(
            AuditType.AFFINITY_GROUP_ADDED, group=stored.name, group_id=str(stored.id),
            summary=self._summary(stored),
        )  # fmt: skip
        return stored

    async def update(self, group_id: UUID, changes: Mapping[str, Any]) -> AffinityGroupRow:
        """
        Change a group (``vms`` and ``hosts`` replace the members whole).

        :raises NotFound: no such group, or a member that does not exist.
        :raises InvalidValue: a field groups do not have, a bad polarity or priority.
        :raises Conflict: the changed group contradicts the others.
        """
        unknown = sorted(set(changes) - set(FIELDS) - {"name"})
        if unknown:
            raise InvalidValue(f"affinity groups have no field(s) {', '.join(unknown)}")
        old = await self._store.get_affinity_group(group_id)  # fresh: removed VMs have left it
        fixed = _fields(changes)
        new = AffinityGroupRow(**{**old.__dict__, **fixed})
        self._check(new, replacing=group_id)
        stored = await self._store.update_affinity_group(group_id, **fixed)
        self._rows[group_id] = stored
        await self._auditor.record(
            AuditType.AFFINITY_GROUP_CHANGED, group=stored.name, group_id=str(stored.id),
            summary=self._summary(stored), changed=sorted(fixed),
        )  # fmt: skip
        return stored

    async def remove(self, group_id: UUID) -> None:
        """:raises NotFound: no such group."""
        old = await self._store.get_affinity_group(group_id)
        await self._store.remove_affinity_group(group_id)
        self._rows.pop(group_id, None)
        await self._auditor.record(
            AuditType.AFFINITY_GROUP_REMOVED, group=old.name, group_id=str(group_id)
        )

    # -- checks ------------------------------------------------------------------------------

    def _check(self, row: AffinityGroupRow, *, replacing: UUID | None) -> None:
        if not row.name:
            raise InvalidValue("an affinity group needs a name")
        if any(r.name == row.name and key != replacing for key, r in self._rows.items()):
            raise DuplicateName("affinity group", row.name)
        for vm_id in row.vms:
            if self._vms.get(vm_id) is None:
                raise NotFound("vm", vm_id)
        for host_id in row.hosts:
            if host_id not in self._monitors:
                raise NotFound("host", host_id)
        try:
            rule = to_rule(row)
        except AffinityError as e:
            raise InvalidValue(str(e)) from None
        if row.priority < 0:
            raise InvalidValue("priority must be ≥ 0")
        others = [to_rule(r) for key, r in self._rows.items() if key != replacing]
        hosts = [str(h) for h in self._monitors]
        names = {**self.names(), **self.host_names()}
        before = set(affinity.check_groups(others, names, hosts=hosts))
        after = affinity.check_groups([*others, rule], names, hosts=hosts)
        new = [problem for problem in after if problem not in before]
        if new:
            raise Conflict(f"affinity group {row.name!r} conflicts: " + "; ".join(new))

    def _summary(self, row: AffinityGroupRow) -> str:
        return affinity.describe_group(to_rule(row), self.names(), host_names=self.host_names())
