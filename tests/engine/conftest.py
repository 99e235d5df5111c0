"""Fixtures the engine's tests share: a real PostgreSQL for the session, a fresh database and a
started store per test.

``pg`` skips (or fails under ``CI=true``) when PostgreSQL's server binaries are missing, and so
does every fixture built on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted
from engine_harness import engine_agents, engine_run  # noqa: F401 - fixtures
from pg_harness import (
    PgHarness,
    as_deferred,
    open_store,
    start_harness,
    stop_harness,
    unavailable,
)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgHarness]:
    """The session's private PostgreSQL cluster, with a migrated template database."""
    try:
        harness = pytest_twisted.blockon(as_deferred(start_harness()))
    except RuntimeError as e:
        unavailable(str(e))
    yield harness
    pytest_twisted.blockon(as_deferred(stop_harness(harness)))


@pytest_twisted.async_yield_fixture
async def pg_dsn(pg):
    """The DSN of a fresh database at the current schema version, dropped after the test."""
    name = await pg.new_database()
    yield pg.dsn(name)
    await pg.drop_database(name)


@pytest_twisted.async_yield_fixture
async def store(pg_dsn):
    """A started :class:`~engine.store.postgres.PostgresStore` on a fresh database."""
    opened = await open_store(pg_dsn)
    yield opened
    opened.close()
