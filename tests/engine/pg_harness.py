"""Test harness: one private PostgreSQL cluster per test session, a fresh database per test.

The cluster is the engine's own :class:`~engine.store.cluster.PostgresCluster` (no fsync), in a
short directory under ``/dev/shm`` (memory: ten times faster than disk here; ``/tmp`` when there
is none) that the ``postgres`` user can reach when tests run as root. A
database called ``vl_template`` is migrated once; each test's database is a copy of it
(``CREATE DATABASE ... TEMPLATE``, a few milliseconds), dropped after the test.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from engine.store.base import StoreSettings
from engine.store.cluster import PostgresCluster, find_server_binaries
from engine.store.migrations import migrate
from engine.store.passwords import ScryptParams
from engine.store.pool import ReconnectingPool
from engine.store.postgres import PostgresStore
from engine.store.rows import HostStatic, VmStatic

TEMPLATE = "vl_template"

#: Cheap password hashing for tests (the production cost is 2**14).
TEST_SETTINGS = StoreSettings(scrypt=ScryptParams(n=2**10))

_numbers = itertools.count(1)


def _tests_conftest() -> ModuleType:
    """tests/conftest.py, loaded by path: pytest drops each ``conftest`` from ``sys.modules``
    before importing the next, so ``import conftest`` cannot be trusted."""
    name = "_vdsmlike_tests_conftest"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "conftest.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


#: Skip for a reason, or fail under ``CI=true`` (tests/conftest.py's ``unavailable``).
unavailable = _tests_conftest().unavailable


class PgHarness:
    """The session's PostgreSQL cluster, and databases made in it for tests."""

    def __init__(self, cluster: PostgresCluster, base: Path) -> None:
        self.cluster = cluster
        self.base = base

    async def new_database(self, *, migrated: bool = True) -> str:
        """Create a database: a copy of the migrated template, or empty (``migrated=False``).

        :returns: its name.
        """
        name = f"t{os.getpid()}_{next(_numbers)}"
        await self.cluster.create_database(name, template=TEMPLATE if migrated else "template0")
        return name

    def dsn(self, name: str) -> str:
        """The connection string of database ``name``."""
        return self.cluster.dsn(name)

    async def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting whoever is still connected."""
        await self.cluster.drop_database(name)


async def start_harness() -> PgHarness:
    """Start a cluster in a fresh directory and migrate the template database.

    :raises RuntimeError: PostgreSQL's server binaries are not installed.
    """
    if find_server_binaries() is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    base = scratch_dir("vl-pg-")
    cluster = PostgresCluster(base, reactor=reactor, durable=False)
    await cluster.start()
    await cluster.create_database(TEMPLATE)
    pool = ReconnectingPool(cluster.dsn(TEMPLATE), reactor=reactor, size=1)
    await pool.start()
    try:
        await migrate(pool)
    finally:
        pool.close()
    return PgHarness(cluster, base)


def scratch_dir(prefix: str) -> Path:
    """A new directory in memory if possible, that the ``postgres`` user can enter."""
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)  # the server runs as "postgres" when the tests run as root
    return path


async def stop_harness(harness: PgHarness) -> None:
    """Stop the cluster and remove its directory."""
    try:
        await harness.cluster.stop()
    finally:
        shutil.rmtree(harness.base, ignore_errors=True)


async def open_store(dsn: str, **kwargs: Any) -> PostgresStore:
    """A started :class:`PostgresStore` on ``dsn`` with cheap password hashing (``kwargs`` go
    to the constructor)."""
    kwargs.setdefault("settings", TEST_SETTINGS)
    store = PostgresStore(dsn, reactor=reactor, **kwargs)
    await store.start()
    return store


def as_deferred(coroutine: Any) -> Deferred:
    """A coroutine as a Deferred (for ``pytest_twisted.blockon``)."""
    return Deferred.fromCoroutine(coroutine)


def new_host(name: str, **fields: Any) -> HostStatic:
    """A host definition with a fresh id (``fields`` override the defaults)."""
    fields.setdefault("address", f"{name}.example.test")
    return HostStatic(id=uuid.uuid4(), name=name, **fields)


def new_vm(name: str, **fields: Any) -> VmStatic:
    """A VM definition with a fresh id, 256 MiB and one vCPU unless ``fields`` say otherwise."""
    fields.setdefault("mem_mib", 256)
    return VmStatic(id=uuid.uuid4(), name=name, **fields)


def fake_clock(start: float = 1_800_000_000.0) -> Clock:
    """A ``Clock`` at a realistic time (2027), for stores whose time a test drives."""
    clock = Clock()
    clock.advance(start)
    return clock
