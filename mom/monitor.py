"""A MOM monitor: the sample history of one host or guest, and the Entity a policy sees.

As MOM's ``Monitor``: collectors' outputs are merged (the first value that is not ``None``
wins); a sample missing a mandatory field is not stored and makes the monitor not ready (the
guest is left out of the cycle; for the host the cycle is skipped); optional fields that were
not collected are ``None``; the last ``history`` samples are kept, oldest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from .entity import Entity


def merge(samples: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """:returns: one row from several collectors' samples; the first non-``None`` value wins."""
    row: dict[str, Any] = {}
    for sample in samples:
        for key, value in sample.items():
            if row.get(key) is None:
                row[key] = value
    return row


class Monitor:
    """The history of one host or guest."""

    def __init__(
        self,
        fields: Iterable[str],
        optional: Iterable[str] = (),
        *,
        properties: Mapping[str, Any] | None = None,
        history: int = 10,
    ) -> None:
        """
        :param fields: mandatory fields; a sample without one of them is dropped.
        :param optional: fields that read ``None`` when not collected.
        :param properties: what ``(X.Prop "name")`` returns: a guest's uuid, name, pid.
        :param history: how many samples to keep (MOM's ``sample-history-length``).
        """
        self.fields = frozenset(fields)
        self.optional = frozenset(optional) - self.fields
        self.properties = dict(properties or {})
        self._rows: deque[dict[str, Any]] = deque(maxlen=max(1, history))
        self.ready = False
        self.missing: frozenset[str] = frozenset()

    def add(self, sample: Mapping[str, Any]) -> bool:
        """
        Store a sample.

        :returns: whether it was stored (it had every mandatory field).
        """
        self.missing = frozenset(f for f in self.fields if sample.get(f) is None)
        if self.missing:
            self.ready = False
            return False
        row = {name: sample.get(name) for name in self.fields | self.optional}
        self._rows.append(row)
        self.ready = True
        return True

    @property
    def latest(self) -> dict[str, Any] | None:
        """The newest stored row, or ``None``."""
        return dict(self._rows[-1]) if self._rows else None

    def interrogate(self) -> Entity | None:
        """:returns: a fresh Entity over the history (controls empty), or ``None`` if not ready."""
        if not self.ready:
            return None
        return Entity(
            properties=dict(self.properties),
            statistics=[dict(row) for row in self._rows],
            fields=self.fields | self.optional,
        )
