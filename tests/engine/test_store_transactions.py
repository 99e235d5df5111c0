"""PostgresStore on real PostgreSQL: atomic transactions, concurrent writers, and surviving
lost connections and a restart of the cluster."""

from __future__ import annotations

import inspect
import time

import pytest
import pytest_twisted
from pg_harness import new_host, new_vm, open_store
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import deferLater
from zope.interface.verify import verifyClass

from engine.interfaces import IStore
from engine.store.errors import DuplicateName, StoreUnavailable
from engine.store.postgres import PostgresStore

# A row inserted into "tripwire" kills its own backend while COMMIT runs, the first time only
# (sequences ignore rollbacks): the connection dies with the outcome of the COMMIT unknown.
TRIPWIRE = """
CREATE TABLE tripwire (id int);
CREATE SEQUENCE tripwire_shots;
CREATE FUNCTION tripwire_fire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('tripwire_shots') = 1 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(5);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER tripwire_at_commit AFTER INSERT ON tripwire
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tripwire_fire();
"""


async def wait_for(predicate, timeout: float = 10.0) -> None:
    """Poll ``predicate`` (plain or async) on the reactor until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await _value(predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        await deferLater(reactor, 0.01, lambda: None)


async def _value(result):
    return await result if inspect.isawaitable(result) else result


def test_provides_istore():
    """``PostgresStore`` implements every method of ``IStore`` with compatible signatures."""
    assert verifyClass(IStore, PostgresStore)


@pytest_twisted.ensureDeferred
async def test_transaction_is_atomic(store):
    """When one write in a transaction fails, the writes before it are rolled back too."""
    await store.add_vm(new_vm("taken"))
    host = new_host("h1")

    async def add_both(tx):
        await tx.add_host(host)
        await tx.add_vm(new_vm("taken"))

    with pytest.raises(DuplicateName):
        await store.transaction(add_both)
    assert await store.list_hosts() == []


@pytest_twisted.ensureDeferred
async def test_transaction_result_and_visibility(store):
    """Writes in a transaction are visible to its later reads, and its result is returned."""

    async def add_and_count(tx):
        for name in ("a", "b"):
            await tx.add_host(new_host(name))
        return len(await tx.list_hosts())

    assert await store.transaction(add_and_count) == 2
    assert len(await store.list_hosts()) == 2


@pytest_twisted.ensureDeferred
async def test_concurrent_inserts_of_one_name(store):
    """Of many concurrent adds of one name, exactly one wins; the rest get ``DuplicateName``."""
    results = await DeferredList(
        [store.add_host(new_host("same")) for _ in range(8)], consumeErrors=True
    )
    wins = [r for ok, r in results if ok]
    losses = [r for ok, r in results if not ok]
    assert len(wins) == 1
    assert all(f.check(DuplicateName) for f in losses) and len(losses) == 7
    assert [h.id for h in await store.list_hosts()] == [wins[0].id]


@pytest_twisted.ensureDeferred
async def test_racing_transactions_one_name(store):
    """A transaction inserting a name another open transaction holds waits for it, then fails
    with ``DuplicateName`` once the first commits."""
    gate: Deferred = Deferred()
    inserted = []

    async def first(tx):
        await tx.add_vm(new_vm("contested"))
        inserted.append(True)
        await gate
        return "first"

    async def waiting_on_lock():
        rows = await store.transaction(lambda tx: tx.sql.fetch_all(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ))
        return len(rows) == 1

    winner = store.transaction(first)
    await wait_for(lambda: inserted)
    loser = store.add_vm(new_vm("contested"))
    await wait_for(waiting_on_lock)
    gate.callback(None)
    assert await winner == "first"
    with pytest.raises(DuplicateName):
        await loser
    assert [v.name for v in await store.list_vms()] == ["contested"]


@pytest_twisted.ensureDeferred
async def test_store_survives_cluster_restart(pg, store):
    """After PostgreSQL is stopped and started again, the same store keeps working: every
    pooled connection is replaced on its next use."""
    await store.add_host(new_host("before"))
    await pg.cluster.stop()
    await pg.cluster.start()
    names = await gatherResults([store.list_hosts() for _ in range(6)])
    assert all([h.name for h in hosts] == ["before"] for hosts in names)
    await store.add_host(new_host("after"))
    assert [h.name for h in await store.list_hosts()] == ["after", "before"]


@pytest_twisted.ensureDeferred
async def test_unavailable_while_down_then_recovers(pg, store):
    """While PostgreSQL is down, calls fail with ``StoreUnavailable``; once it is back, the
    same store works again."""
    await pg.cluster.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await store.add_host(new_host("lost"))
        with pytest.raises(StoreUnavailable):
            await store.list_hosts()
    finally:
        await pg.cluster.start()
    await store.add_host(new_host("back"))
    assert [h.name for h in await store.list_hosts()] == ["back"]


@pytest_twisted.ensureDeferred
async def test_connection_killed_mid_transaction_is_retried(store):
    """A transaction whose connection dies before COMMIT runs again, once, on a fresh
    connection, and its writes land exactly once."""
    attempts = []

    async def add_then_die_once(tx):
        attempts.append(1)
        await tx.add_host(new_host("h1"))
        if len(attempts) == 1:
            await tx.sql.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return len(attempts)

    assert await store.transaction(add_then_die_once) == 2
    assert [h.name for h in await store.list_hosts()] == ["h1"]


@pytest_twisted.ensureDeferred
async def test_connection_lost_during_commit(store):
    """A write whose connection dies during COMMIT is not retried: the caller gets
    ``StoreUnavailable`` saying the outcome is unknown. An idempotent one is retried."""
    await store.transaction(lambda tx: tx.sql.execute(TRIPWIRE))
    attempts = []

    async def trip(tx):
        attempts.append(1)
        await tx.sql.execute("INSERT INTO tripwire VALUES (1)")

    with pytest.raises(StoreUnavailable, match="outcome unknown"):
        await store.transaction(trip)
    assert len(attempts) == 1
    await store.transaction(trip, idempotent=True)  # the wire is spent: this one commits
    assert len(attempts) == 2
    rows = await store.transaction(lambda tx: tx.sql.fetch_all("SELECT id FROM tripwire"))
    assert rows == [{"id": 1}]


@pytest_twisted.ensureDeferred
async def test_unreachable_server(tmp_path):
    """Starting a store on a server that does not answer fails with ``StoreUnavailable``."""
    store = PostgresStore(f"host={tmp_path} dbname=nothing user=postgres", reactor=reactor)
    with pytest.raises(StoreUnavailable):
        await store.start()
    with pytest.raises(StoreUnavailable):
        await open_store(f"host={tmp_path} dbname=nothing")
