"""Between the row dataclasses and SQL: column lists, row building, parameters, and psycopg2
errors translated into the store's typed ones.

Dataclass field names are column names, so statements are composed from identifiers with
:mod:`psycopg2.sql`; values always travel as parameters.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import Json

from .errors import Conflict, DuplicateName, InvalidValue, NotFound, StoreError

T = TypeVar("T")

#: Unique constraints that mean "this name is taken", by the kind of row they guard.
NAME_CONSTRAINTS = {
    "host_static_name_key": "host",
    "vm_static_name_key": "vm",
    "users_pkey": "user",
    "affinity_groups_name_key": "affinity group",
}

#: Foreign keys: the kind of row each one points at, and the column holding its key.
REFERENCES = {
    "host_dynamic_host_id_fkey": ("host", "host_id"),
    "host_statistics_host_id_fkey": ("host", "host_id"),
    "host_statistics_history_host_id_fkey": ("host", "host_id"),
    "host_power_management_host_id_fkey": ("host", "host_id"),
    "vm_static_pinned_host_fkey": ("host", "pinned_host"),
    "vm_dynamic_vm_id_fkey": ("vm", "vm_id"),
    "vm_dynamic_run_on_host_fkey": ("host", "run_on_host"),
    "vm_dynamic_migrating_to_host_fkey": ("host", "migrating_to_host"),
    "vm_statistics_vm_id_fkey": ("vm", "vm_id"),
    "sessions_user_name_fkey": ("user", "user_name"),
    "affinity_group_vms_vm_id_fkey": ("vm", "vm_id"),
    "affinity_group_hosts_host_id_fkey": ("host", "host_id"),
}


def field_names(cls: type) -> list[str]:
    """The dataclass's field names, which are its table's column names."""
    return [f.name for f in dataclasses.fields(cls)]


def select_list(cls: type, alias: str) -> sql.Composed:
    """``a.col AS a_col, ...`` for every field of ``cls``, read from table alias ``alias``."""
    return sql.SQL(", ").join(
        sql.SQL("{}.{} AS {}").format(
            sql.Identifier(alias), sql.Identifier(name), sql.Identifier(f"{alias}_{name}")
        )
        for name in field_names(cls)
    )


def from_row(
    cls: type[T],
    row: Mapping[str, Any],
    alias: str = "",
    convert: Mapping[str, Callable[[Any], Any]] | None = None,
) -> T:
    """Build a ``cls`` from a row, reading ``<alias>_<field>`` columns when ``alias`` is given.

    :param convert: per-field functions applied to non-None values (e.g. a str to its enum).
    """
    convert = convert or {}
    prefix = f"{alias}_" if alias else ""
    values = {}
    for name in field_names(cls):
        value = row[prefix + name]
        if value is not None and name in convert:
            value = convert[name](value)
        values[name] = value
    return cls(**values)


def adapt(value: Any) -> Any:
    """A Python value as psycopg2 should receive it: JSON for dicts and lists, enum values."""
    if isinstance(value, dict | list):
        return json_param(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def json_param(value: Any) -> Any:
    """``value`` as a JSON parameter (any JSON value; None stays SQL NULL). Ids, times and
    other non-JSON values become strings."""
    if value is None:
        return None
    return Json(value, dumps=lambda v: json.dumps(v, default=str))


def params_of(obj: Any, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """A dataclass row as named parameters, leaving out ``skip`` and fields that are None
    where the database has a default (``created``, ``updated``, ``time``)."""
    skipped = set(skip)
    out = {}
    for name in field_names(type(obj)):
        value = getattr(obj, name)
        if name in skipped or (value is None and name in ("created", "updated", "time")):
            continue
        out[name] = adapt(value)
    return out


def insert(table: str, params: Mapping[str, Any], *, returning: bool = False) -> sql.Composed:
    """``INSERT INTO table (cols) VALUES (%(col)s, ...)`` for the keys of ``params``."""
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, params)),
        sql.SQL(", ").join(map(sql.Placeholder, params)),
    )
    return statement + sql.SQL(" RETURNING *") if returning else statement


def upsert(table: str, params: Mapping[str, Any], *, key: str) -> sql.Composed:
    """An insert of ``params`` that overwrites the row with the same ``key`` if there is one."""
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(name), sql.Identifier(name))
        for name in params
        if name != key
    )
    return insert(table, params) + sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(key), updates
    )


def assignments(changes: Mapping[str, Any]) -> sql.Composed:
    """``col = %(col)s, ...`` for the keys of ``changes``."""
    return sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
        for name in changes
    )


def check_fields(cls: type, changes: Mapping[str, Any], *, fixed: Iterable[str]) -> None:
    """Refuse changes to fields ``cls`` lacks or that may not change (ids, timestamps).

    :raises TypeError: naming the offending fields.
    """
    allowed = set(field_names(cls)) - set(fixed)
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise TypeError(f"cannot change {', '.join(unknown)} of {cls.__name__}")


@contextmanager
def translated(
    *, name: str | None = None, params: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Turn psycopg2's integrity and data errors raised inside into typed store errors.

    :param name: the name being written, for :class:`DuplicateName`.
    :param params: the values written, to name the missing row in :class:`NotFound`.
    """
    try:
        yield
    except psycopg2.errors.UniqueViolation as e:
        raise _duplicate(e, name) from e
    except psycopg2.errors.ForeignKeyViolation as e:
        raise _missing(e, params or {}) from e
    except (psycopg2.IntegrityError, psycopg2.DataError) as e:
        raise InvalidValue(describe(e)) from e


def _duplicate(error: psycopg2.Error, name: str | None) -> StoreError:
    kind = NAME_CONSTRAINTS.get(error.diag.constraint_name or "")
    if kind is not None and name is not None:
        return DuplicateName(kind, name)
    return Conflict(describe(error))


def _missing(error: psycopg2.Error, params: Mapping[str, Any]) -> StoreError:
    reference = REFERENCES.get(error.diag.constraint_name or "")
    if reference is not None:
        kind, column = reference
        return NotFound(kind, params.get(column))
    return Conflict(describe(error))


def describe(error: psycopg2.Error) -> str:
    """PostgreSQL's message and detail, on one line."""
    parts = [error.diag.message_primary or str(error).strip(), error.diag.message_detail]
    return ": ".join(p for p in parts if p)
