"""Schema migrations on real PostgreSQL: from empty, from version 1, failures, concurrency."""

from __future__ import annotations

import shutil
import uuid

import pytest
import pytest_twisted
from pg_harness import new_host, open_store
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from engine.store.errors import MigrationError, MigrationFailed, SchemaTooNew
from engine.store.migrations import MIGRATIONS_DIR, load_migrations, migrate, schema_version
from engine.store.pool import ReconnectingPool

TABLES = {
    "host_static", "host_dynamic", "host_statistics", "host_statistics_history",
    "vm_static", "vm_dynamic", "vm_statistics", "vm_statistics_history",
    "audit_log", "jobs", "users", "sessions", "schema_version", "host_power_management",
}
#: Every packaged migration's number, and the latest.
ALL = [m.version for m in load_migrations()]
LATEST = ALL[-1]


@pytest_twisted.async_yield_fixture
async def empty_pool(pg):
    """A one-connection pool on a fresh, empty database (no schema at all)."""
    name = await pg.new_database(migrated=False)
    pool = ReconnectingPool(pg.dsn(name), reactor=reactor, size=1)
    await pool.start()
    yield pool
    pool.close()
    await pg.drop_database(name)


async def tables(pool: ReconnectingPool) -> set[str]:
    """The names of the tables in the public schema."""
    rows = await pool.run(lambda tx: tx.fetch_all(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    ))
    return {row["tablename"] for row in rows}


def test_packaged_migrations_are_numbered():
    """The packaged files load in order, numbered from 1 without gaps."""
    found = load_migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert (found[0].name, found[1].name) == ("initial", "statistics_history")


def test_bad_file_sets(tmp_path):
    """A gap in the numbers or a badly named file is refused before touching any database."""
    shutil.copy(MIGRATIONS_DIR / "0001_initial.sql", tmp_path)
    (tmp_path / "0003_later.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="expected number 2"):
        load_migrations(tmp_path)
    (tmp_path / "0003_later.sql").unlink()
    (tmp_path / "2_bad-name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        load_migrations(tmp_path)


@pytest_twisted.ensureDeferred
async def test_from_empty(empty_pool):
    """An empty database gets every migration, each recorded in ``schema_version``."""
    assert await schema_version(empty_pool) == 0
    assert await migrate(empty_pool) == ALL
    assert await schema_version(empty_pool) == LATEST
    assert TABLES <= await tables(empty_pool)
    rows = await empty_pool.run(lambda tx: tx.fetch_all(
        "SELECT version, name FROM schema_version ORDER BY version"
    ))
    assert rows == [{"version": m.version, "name": m.name} for m in load_migrations()]
    assert rows[:2] == [{"version": 1, "name": "initial"},
                        {"version": 2, "name": "statistics_history"}]
    assert await migrate(empty_pool) == []  # up to date: nothing to do


@pytest_twisted.ensureDeferred
async def test_upgrade_from_version_1(pg, empty_pool):
    """A version-1 database with data is upgraded to version 2, keeping its data and seeding
    the new history tables from the latest statistics; the store then works on it."""
    assert await migrate(empty_pool, load_migrations()[:1]) == [1]
    assert "host_statistics_history" not in await tables(empty_pool)
    host = new_host("old-host")

    async def version_1_data(tx):
        await tx.execute(
            "INSERT INTO host_static (id, name, address) VALUES (%s, %s, %s)",
            (host.id, host.name, host.address),
        )
        await tx.execute("INSERT INTO host_dynamic (host_id, status) VALUES (%s, 'Up')", (host.id,))
        await tx.execute(
            "INSERT INTO host_statistics (host_id, cpu_user) VALUES (%s, 42.0)", (host.id,)
        )

    await empty_pool.run(version_1_data)
    assert await migrate(empty_pool) == ALL[1:]
    history = await empty_pool.run(lambda tx: tx.fetch_all(
        "SELECT host_id, cpu_user FROM host_statistics_history"
    ))
    assert history == [{"host_id": host.id, "cpu_user": 42.0}]
    store = await open_store(empty_pool.dsn)
    try:
        found = await store.get_host_by_name("old-host")
        assert found.dynamic.status == "Up" and found.statistics.cpu_user == 42.0
        assert [s.cpu_user for s in await store.host_statistics_history(host.id)] == [42.0]
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_failed_migration_leaves_database_unchanged(empty_pool, tmp_path):
    """A migration failing halfway is rolled back whole: the database stays at the previous
    version without any of its changes, and the error names the migration."""
    shutil.copy(MIGRATIONS_DIR / "0001_initial.sql", tmp_path)
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\n"
        "ALTER TABLE host_static ADD COLUMN colour text;\n"
        "INSERT INTO half_done VALUES (1 / 0);\n"
    )
    await migrate(empty_pool, load_migrations(tmp_path)[:1])
    before = await tables(empty_pool)
    with pytest.raises(MigrationFailed) as caught:
        await migrate(empty_pool, load_migrations(tmp_path))
    assert (caught.value.version, caught.value.name) == (2, "broken")
    assert "division by zero" in str(caught.value)
    assert await schema_version(empty_pool) == 1
    assert await tables(empty_pool) == before
    columns = await empty_pool.run(lambda tx: tx.fetch_all(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'host_static'"
    ))
    assert "colour" not in {c["column_name"] for c in columns}
    assert await migrate(empty_pool) == ALL[1:]  # the fixed release upgrades normally


@pytest_twisted.ensureDeferred
async def test_database_newer_than_engine(empty_pool):
    """An engine that knows fewer migrations than the database has refuses to run on it."""
    await migrate(empty_pool)
    with pytest.raises(SchemaTooNew) as caught:
        await migrate(empty_pool, load_migrations()[:1])
    assert (caught.value.found, caught.value.known) == (LATEST, 1)


@pytest_twisted.ensureDeferred
async def test_concurrent_engines_migrate_once(pg, empty_pool):
    """Two engines migrating one empty database at once apply each migration exactly once."""
    other = ReconnectingPool(empty_pool.dsn, reactor=reactor, size=1)
    await other.start()
    try:
        results = await gatherResults([
            Deferred.fromCoroutine(migrate(empty_pool)),
            Deferred.fromCoroutine(migrate(other)),
        ])
    finally:
        other.close()
    assert sorted(results[0] + results[1]) == ALL
    assert await schema_version(empty_pool) == LATEST


@pytest_twisted.ensureDeferred
async def test_store_start_migrates(pg, empty_pool):
    """Starting a store on an empty database brings it to the current version."""
    store = await open_store(empty_pool.dsn)
    try:
        assert await schema_version(store.pool) == len(load_migrations())
        host = await store.add_host(new_host("h1"))
        assert isinstance(host.id, uuid.UUID)
    finally:
        store.close()
