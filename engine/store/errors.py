"""Typed store failures: every error the store raises, in one module.

Callers catch these, never psycopg2's: a unique violation on a name becomes
:class:`DuplicateName`, a missing row :class:`NotFound`, a dead server :class:`StoreUnavailable`.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store failure."""


class NotFound(StoreError):
    """No row of this kind has this key."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"no {kind} {key!s}")
        self.kind = kind
        self.key = key


class DuplicateName(StoreError):
    """Another row of this kind already has this name."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"a {kind} named {name!r} already exists")
        self.kind = kind
        self.name = name


class Conflict(StoreError):
    """The write contradicts the data already stored (a reference to a missing row, a bad value)."""


class InvalidValue(StoreError):
    """A value the schema refuses (negative memory, an unknown state, an empty name)."""


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached, or the connection died where a retry would be unsafe."""


class MigrationError(StoreError):
    """The migration files or the database's recorded schema version are inconsistent."""


class MigrationFailed(MigrationError):
    """One migration's SQL failed; its transaction was rolled back, so it left no trace."""

    def __init__(self, version: int, name: str, cause: BaseException) -> None:
        super().__init__(f"migration {version:04d}_{name} failed and was rolled back: {cause}")
        self.version = version
        self.name = name
        self.cause = cause


class SchemaTooNew(MigrationError):
    """The database was migrated by a newer engine than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database is at schema version {found}, newer than this engine's {known}"
        )
        self.found = found
        self.known = known


class ClusterError(StoreError):
    """The private PostgreSQL cluster could not be initialised, started or stopped."""
