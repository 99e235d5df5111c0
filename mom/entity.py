"""Pure: ``Entity``, the host or a guest as a policy sees it for one policy cycle.

An Entity is a snapshot: ``properties`` (a guest's ``uuid``, ``name``...), ``statistics`` (the
monitor's history rows, oldest first) and the ``controls`` the policy sets for the controllers.
Each declared field reads as an attribute holding its value in the *latest* row, so a policy
writes ``guest.balloon_cur``; a declared field missing from that row (an optional field that was
not collected) reads as None. With no rows at all there are no field attributes, as in MOM.

The capitalised methods are the ones policies call, with MOM's names and behaviour:
``(guest.Prop "name")``, ``(Host.Stat "mem_free")``, ``(Host.StatAvg "mem_free")``,
``(guest.Control "balloon_target" v)``, ``(guest.GetControl "balloon_target")``, and
``SetVar``/``GetVar``. Where MOM raises ``KeyError`` (an undeclared field, a missing property)
these raise ``EntityError``; during evaluation either becomes a ``PolicyError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


class EntityError(Exception):
    """A policy asked an Entity for a field, property or statistic it does not have."""


class Entity:
    """The host or one guest: properties, statistics history, and the controls set on it.

    :ivar properties: fixed facts (a guest's ``uuid``, ``name``, ``pid``...).
    :ivar statistics: the history rows, oldest first; the last one is current.
    :ivar fields: the declared statistic names (mandatory and optional).
    :ivar controls: what the policy asked for, by control name (the controllers' input).
    :ivar variables: per-cycle scratch values of ``SetVar``/``GetVar``.
    """

    def __init__(
        self,
        properties: Mapping[str, object] | None = None,
        statistics: Sequence[Mapping[str, object]] = (),
        fields: Iterable[str] | None = None,
    ) -> None:
        """
        :param properties: the entity's properties.
        :param statistics: history rows, oldest first.
        :param fields: the declared statistic names; by default every name in any row.
        """
        self.properties: dict[str, object] = dict(properties or {})
        self.statistics: list[dict[str, object]] = [dict(row) for row in statistics]
        if fields is None:
            fields = (name for row in self.statistics for name in row)
        self.fields: frozenset[str] = frozenset(fields)
        self.controls: dict[str, object] = {}
        self.variables: dict[str, object] = {}

    def __getattr__(self, name: str) -> object:
        # Only reached when normal lookup fails, so methods and instance attributes win over a
        # field of the same name. Reading through __dict__ keeps this safe while __init__ runs
        # or when copy/pickle probe an instance without one.
        fields = self.__dict__.get("fields", ())
        statistics = self.__dict__.get("statistics")
        if name in fields and statistics:
            return statistics[-1].get(name)
        raise AttributeError(f"{type(self).__name__!s} has no field {name!r}")

    def __repr__(self) -> str:
        label = self.properties.get("name", self.properties.get("uuid", "host"))
        return f"<Entity {label}>"

    def latest(self) -> dict[str, object]:
        """:returns: a copy of the newest statistics row (empty when there is none)."""
        return dict(self.statistics[-1]) if self.statistics else {}

    def _check_field(self, name: str) -> None:
        """:raises EntityError: when ``name`` is not a declared field."""
        if name not in self.fields:
            raise EntityError(f"Field '{name}' is not declared in any collector.")

    # --- methods policies call (MOM's names) ------------------------------------------------

    def Prop(self, name: str) -> object:
        """:returns: property ``name``; :raises EntityError: when the entity has none."""
        try:
            return self.properties[name]
        except KeyError:
            raise EntityError(f"Property '{name}' is not set") from None

    def Stat(self, name: str, default: object = None) -> object:
        """The newest value of statistic ``name``.

        :param default: returned when the newest row lacks the field.
        :returns: the value, or None when there are no rows at all.
        :raises EntityError: when ``name`` is not a declared field.
        """
        self._check_field(name)
        if not self.statistics:
            return None
        return self.statistics[-1].get(name, default)

    def StatAvg(self, name: str) -> float:
        """The mean of statistic ``name`` over the rows where it is not None.

        :returns: the mean as a float, 0.0 when no row has a value.
        :raises EntityError: when ``name`` is not declared, or there are no rows.
        """
        self._check_field(name)
        if not self.statistics:
            raise EntityError(f"Statistic '{name}' not available")
        values = [row[name] for row in self.statistics if row.get(name) is not None]
        if not values:
            return 0.0
        total: object = 0
        for value in values:
            total = total + value  # type: ignore[operator]
        return float(total / len(values))  # type: ignore[operator]

    def Control(self, name: str, value: object) -> None:
        """Set control ``name`` (e.g. ``balloon_target``) to ``value`` for the controllers."""
        self.controls[name] = value

    def GetControl(self, name: str) -> object:
        """:returns: control ``name`` as set so far this cycle, or None."""
        return self.controls.get(name)

    def SetVar(self, name: str, value: object) -> None:
        """Store a per-entity variable (for this cycle only, as in MOM)."""
        self.variables[name] = value

    def GetVar(self, name: str) -> object:
        """:returns: the per-entity variable ``name``, or None."""
        return self.variables.get(name)
