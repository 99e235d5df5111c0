"""The private PostgreSQL cluster: initdb, start, stop, adoption, clear failures, and the
services that start the cluster and the store with the engine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import pytest_twisted
from pg_harness import TEST_SETTINGS, new_host, scratch_dir, unavailable
from twisted.application.service import MultiService
from twisted.internet import reactor

from engine.store.cluster import PostgresCluster, PostgresClusterService, find_server_binaries
from engine.store.errors import ClusterError
from engine.store.postgres import PostgresStore
from engine.store.service import StoreService


@pytest_twisted.async_yield_fixture
async def state_dir():
    """A fresh state dir the ``postgres`` user can reach; any server left in it is stopped."""
    if find_server_binaries() is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    path = scratch_dir("vl-pgc-")
    yield path
    await PostgresCluster(path, reactor=reactor).stop()
    shutil.rmtree(path, ignore_errors=True)


def cluster_in(path: Path, **kwargs) -> PostgresCluster:
    """A throwaway (no fsync) cluster in ``path``."""
    return PostgresCluster(path, reactor=reactor, durable=False, **kwargs)


@pytest_twisted.ensureDeferred
async def test_first_start_initialises_and_data_survives_restart(state_dir):
    """The first start runs initdb; after a stop, a new cluster object on the same directory
    starts without initdb and finds the data."""
    first = cluster_in(state_dir)
    assert not first.initialised
    await first.start()
    assert first.initialised and await first.running()
    assert await first.ensure_database("engine") is True
    assert await first.ensure_database("engine") is False
    store = PostgresStore(first.dsn("engine"), reactor=reactor, settings=TEST_SETTINGS)
    await store.start()
    await store.add_host(new_host("kept"))
    store.close()
    await first.stop()
    assert not await first.running()
    await first.stop()  # stopping a stopped cluster succeeds

    second = cluster_in(state_dir)
    assert second.initialised
    await second.start()
    store = PostgresStore(second.dsn("engine"), reactor=reactor, settings=TEST_SETTINGS)
    await store.start()
    try:
        assert [h.name for h in await store.list_hosts()] == ["kept"]
    finally:
        store.close()
        await second.stop()


@pytest_twisted.ensureDeferred
async def test_layout_and_ownership(state_dir):
    """The cluster lives in <state>/postgres, a 0700 directory owned by the server user, and
    listens on a Unix socket there only."""
    cluster = cluster_in(state_dir)
    await cluster.start()
    try:
        base = state_dir / "postgres"
        assert (base / "data" / "PG_VERSION").is_file()
        assert (base / "run" / ".s.PGSQL.5432").exists()
        assert base.stat().st_mode & 0o777 == 0o700
        if os.geteuid() == 0:
            import pwd

            assert base.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        assert "host=" + str(base / "run") in cluster.dsn("x")
    finally:
        await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_adopts_a_running_server(state_dir):
    """Starting on a data dir whose server is still running (an engine that died) adopts it."""
    await cluster_in(state_dir).start()
    again = cluster_in(state_dir)
    await again.start()
    assert await again.running()
    await again.stop()
    assert not await cluster_in(state_dir).running()


@pytest_twisted.ensureDeferred
async def test_failed_start_shows_server_log(state_dir):
    """A server that refuses to start fails with ``ClusterError`` quoting its log."""
    cluster = cluster_in(state_dir, settings={"shared_buffers": "lots"})
    with pytest.raises(ClusterError, match="shared_buffers"):
        await cluster.start()
    assert not await cluster.running()


@pytest_twisted.ensureDeferred
async def test_clear_errors_before_initdb(state_dir, tmp_path):
    """Missing binaries and an over-long socket path fail with ``ClusterError`` at once."""
    with pytest.raises(ClusterError, match="not found"):
        await cluster_in(state_dir, bin_dir=tmp_path).start()
    deep = state_dir / ("d" * 90)
    deep.mkdir()
    with pytest.raises(ClusterError, match="longer than"):
        await cluster_in(deep).start()


@pytest_twisted.ensureDeferred
async def test_unreachable_state_dir(state_dir):
    """As root, a state dir the server user cannot reach fails with ``ClusterError``
    naming the blocking directory."""
    if os.geteuid() != 0:
        pytest.skip("only root switches to the postgres user")
    private = state_dir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ClusterError, match="cannot reach"):
        await cluster_in(private / "engine").start()


@pytest_twisted.ensureDeferred
async def test_services_start_and_stop_with_the_engine(state_dir):
    """The cluster service starts PostgreSQL and creates the database; the store service then
    connects and migrates; stopping the tree closes the store and stops PostgreSQL."""
    cluster_service = PostgresClusterService(cluster_in(state_dir), database="engine")
    store = PostgresStore(cluster_service.dsn, reactor=reactor, settings=TEST_SETTINGS)
    store_service = StoreService(store, wait_for=cluster_service.when_ready)
    top = MultiService()
    cluster_service.setServiceParent(top)
    store_service.setServiceParent(top)
    top.startService()
    try:
        assert await store_service.when_ready() is store
        assert await cluster_service.when_ready() == cluster_service.dsn
        await store.add_host(new_host("h1"))
        assert [h.name for h in await store.list_hosts()] == ["h1"]
    finally:
        await top.stopService()
    assert not await cluster_service.cluster.running()


@pytest_twisted.ensureDeferred
async def test_service_start_failure(state_dir):
    """When PostgreSQL cannot start, both services report the ``ClusterError`` to whoever
    waits, and the tree still stops cleanly."""
    cluster_service = PostgresClusterService(cluster_in(state_dir, settings={"port": "x"}))
    store = PostgresStore(cluster_service.dsn, reactor=reactor)
    store_service = StoreService(store, wait_for=cluster_service.when_ready)
    top = MultiService()
    cluster_service.setServiceParent(top)
    store_service.setServiceParent(top)
    top.startService()
    with pytest.raises(ClusterError):
        await store_service.when_ready()
    with pytest.raises(ClusterError):
        await cluster_service.when_ready()
    await top.stopService()
