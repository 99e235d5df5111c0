"""Schema migrations: numbered SQL files applied in order, each in its own transaction.

Files live in ``engine/store/migrations/`` as ``NNNN_name.sql`` (``0001_initial.sql``,
``0002_statistics_history.sql``, ...), numbered from 1 without gaps. A file holds plain SQL
statements and no transaction control: :func:`migrate` wraps each file in one transaction with
the ``schema_version`` row that records it, so a failing file leaves no trace and the database
stays at the previous version. An advisory lock serialises engines migrating the same database
at once. Never edit a file once released; add the next one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg2
from twisted.logger import Logger

from .errors import MigrationError, MigrationFailed, SchemaTooNew
from .pool import ReconnectingPool, SqlTransaction

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x766C_6D69  # pg_advisory_xact_lock key for migrations ("vlmi")

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied timestamptz NOT NULL DEFAULT now()
)
"""

log = Logger()


@dataclass(frozen=True)
class Migration:
    """One migration file: its number, its name and its SQL."""

    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNNN_name.sql`` in ``directory``, in order.

    :raises MigrationError: a badly named ``.sql`` file, or numbers not running 1, 2, 3, ...
    """
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}: expected number {expected}"
            )
    return found


async def schema_version(pool: ReconnectingPool) -> int:
    """The database's schema version: the last migration applied, 0 for an empty database."""
    return await pool.run(_current_version, idempotent=True)


async def migrate(pool: ReconnectingPool, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the database up to the last of ``migrations`` (default: the packaged files).

    :returns: the versions applied now, in order (empty when already up to date).
    :raises MigrationFailed: a migration's SQL failed; it was rolled back, and the ones
        before it stay applied.
    :raises SchemaTooNew: the database is at a version this engine does not know.
    """
    if migrations is None:
        migrations = load_migrations()
    known = migrations[-1].version if migrations else 0
    await pool.run(_create_version_table, idempotent=True)
    applied = []
    for migration in migrations:
        if await pool.run(partial(_apply, migration=migration, known=known), idempotent=True):
            log.info("applied migration {version:04d}_{name}", version=migration.version,
                     name=migration.name)
            applied.append(migration.version)
    return applied


async def _create_version_table(tx: SqlTransaction) -> None:
    await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    await tx.execute(_VERSION_TABLE)


async def _current_version(tx: SqlTransaction) -> int:
    exists = await tx.fetch_one("SELECT to_regclass('schema_version') IS NOT NULL AS present")
    if not exists or not exists["present"]:
        return 0
    row = await tx.fetch_one("SELECT coalesce(max(version), 0) AS version FROM schema_version")
    return int(row["version"]) if row else 0


async def _apply(tx: SqlTransaction, *, migration: Migration, known: int) -> bool:
    """Apply ``migration`` unless the database already has it; True when applied."""
    await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    current = await _current_version(tx)
    if current > known:
        raise SchemaTooNew(current, known)
    if migration.version <= current:
        return False
    if migration.version != current + 1:
        raise MigrationError(
            f"database at version {current} cannot take migration {migration.version:04d}"
        )
    try:
        await tx.execute(migration.sql)
    except psycopg2.Error as e:
        raise MigrationFailed(migration.version, migration.name, e) from e
    await tx.execute(
        "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
        (migration.version, migration.name),
    )
    return True
