"""A txpostgres connection pool that survives a PostgreSQL restart, and the transaction handle
the store's queries run on.

Every unit of work is one transaction (:meth:`ReconnectingPool.run`). A connection found dead
before use (the server restarted, an admin killed the backend) is replaced by a fresh one. A
transaction that fails because its connection died is run once more on a fresh connection,
unless the death came while COMMIT was in flight: then whether it committed is unknown, and the
caller gets :class:`~engine.store.errors.StoreUnavailable` rather than a silent double write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg2
import psycopg2.extras
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from txpostgres import txpostgres

from .errors import StoreUnavailable

T = TypeVar("T")


def one_line(error: BaseException) -> str:
    """An error's text with libpq's line breaks and indentation folded into single spaces."""
    return " ".join(str(error).split())


class _Connection(txpostgres.Connection):
    """A txpostgres connection that notes, rather than raises, the server closing it while idle.

    txpostgres watches idle connections for NOTIFY; when the server goes away the read fails
    with nobody waiting, and the reactor would log it as an unhandled error.
    """

    log = Logger()

    def doRead(self) -> None:
        try:
            super().doRead()
        except psycopg2.Error as e:
            self.reactor.removeReader(self)
            self.log.info("idle database connection closed: {error}", error=one_line(e))

    @property
    def dead(self) -> bool:
        """True when the underlying connection is closed or broken (or was never opened)."""
        raw = self._connection
        return raw is None or bool(raw.closed)


class SqlTransaction:
    """One open transaction: run statements and read rows as dicts. Valid only inside
    :meth:`ReconnectingPool.run`'s function; never keep it.
    """

    def __init__(self, cursor: txpostgres.Cursor) -> None:
        self._cursor = cursor

    async def execute(self, sql: Any, params: Any = None) -> int:
        """Run one statement (values only through ``params``).

        :returns: the number of rows it affected.
        """
        await self._cursor.execute(sql, params)
        return self._cursor.rowcount

    async def fetch_all(self, sql: Any, params: Any = None) -> list[dict[str, Any]]:
        """Run a query and return every row as a dict keyed by column name."""
        await self._cursor.execute(sql, params)
        names = [column.name for column in self._cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self._cursor.fetchall()]

    async def fetch_one(self, sql: Any, params: Any = None) -> dict[str, Any] | None:
        """Run a query and return its first row as a dict, or None when it returns none."""
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class _Attempt:
    """Tracks how far one attempt got, to tell a safe retry from an unknown outcome."""

    committing = False


class ReconnectingPool(txpostgres.ConnectionPool):
    """``min`` txpostgres connections to one database; see the module docstring.

    :param dsn: the libpq connection string.
    :param reactor: the reactor the connections register with.
    :param size: how many connections (at most that many transactions run at once).
    """

    connectionFactory = _Connection
    log = Logger()

    def __init__(self, dsn: str, *, reactor: Any, size: int = 3) -> None:
        self.reactor = reactor
        super().__init__(None, dsn, min=size)
        self.dsn = dsn

    def start(self) -> Deferred:
        """Open every connection.

        :returns: a Deferred firing with the pool, or failing with
            :class:`~engine.store.errors.StoreUnavailable` when the server cannot be reached.
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> ReconnectingPool:
        for connection in list(self.connections):
            await self._open(connection)
        return self

    def run(
        self, fn: Callable[[SqlTransaction], Awaitable[T]], *, idempotent: bool = False
    ) -> Deferred:
        """Run ``fn`` in a transaction on a pooled connection: commit if it returns, roll back if
        it raises. ``fn`` may run twice (see the module docstring), so it must have no effect
        outside the transaction.

        :param idempotent: running ``fn`` twice is harmless even if the first COMMIT landed
            (reads, or writes that check what is already there): retry even then.
        :returns: a Deferred firing with what ``fn`` returned, or failing with what it raised,
            or with :class:`~engine.store.errors.StoreUnavailable` when PostgreSQL is gone.
        """
        return self._semaphore.run(
            lambda: Deferred.fromCoroutine(self._checkout(fn, idempotent))
        )

    async def _checkout(self, fn: Callable[[SqlTransaction], Awaitable[T]], idempotent: bool) -> T:
        connection = self.connections.pop()
        try:
            for retry in (False, True):
                connection = await self._alive(connection)
                attempt = _Attempt()
                try:
                    return await self._transact(connection, fn, attempt)
                except Exception as e:
                    if not connection.dead:
                        raise
                    if retry:
                        raise self._unavailable(e) from e
                    if attempt.committing and not idempotent:
                        raise StoreUnavailable(
                            "database connection lost during COMMIT; outcome unknown: "
                            + one_line(e)
                        ) from e
                    self.log.info(
                        "database connection lost ({error}); retrying once", error=one_line(e)
                    )
            raise AssertionError("unreachable")
        finally:
            self.connections.add(connection)

    async def _transact(
        self,
        connection: _Connection,
        fn: Callable[[SqlTransaction], Awaitable[T]],
        attempt: _Attempt,
    ) -> T:
        cursor = connection.cursor()
        await cursor.execute("BEGIN")
        try:
            result = await fn(SqlTransaction(cursor))
        except BaseException:
            await self._rollback(connection, cursor)
            raise
        attempt.committing = True
        await cursor.execute("COMMIT")
        return result

    async def _rollback(self, connection: _Connection, cursor: txpostgres.Cursor) -> None:
        if connection.dead:
            return  # the server rolls back a transaction whose connection is gone
        try:
            await cursor.execute("ROLLBACK")
        except psycopg2.Error as e:
            self.log.warn("ROLLBACK failed ({error}); dropping the connection", error=one_line(e))
            self._discard(connection)

    async def _alive(self, connection: _Connection) -> _Connection:
        """``connection`` if usable, else a freshly opened replacement."""
        if not connection.dead:
            return connection
        fresh = self.connectionFactory(self.reactor, self.cooperator)
        await self._open(fresh)
        self._discard(connection)
        self.log.info("reconnected to the database")
        return fresh

    async def _open(self, connection: _Connection) -> None:
        try:
            await connection.connect(*self.connargs, **self.connkw)
            psycopg2.extras.register_uuid(conn_or_curs=connection._connection)
            await connection.runOperation("SET TIME ZONE 'UTC'")
        except psycopg2.Error as e:
            self._discard(connection)
            raise self._unavailable(e) from e

    def _discard(self, connection: _Connection) -> None:
        """Close ``connection`` for good, freeing the socket of a broken one too."""
        raw = connection._connection
        if raw is None:
            return
        try:
            connection.close()
            raw.close()  # txpostgres skips a broken (closed == 2) connection
        except psycopg2.Error:
            pass

    def _unavailable(self, error: Exception) -> StoreUnavailable:
        if isinstance(error, StoreUnavailable):
            return error
        return StoreUnavailable(f"database unavailable: {one_line(error)}")

    def close(self) -> None:
        """Close every connection; transactions still running fail."""
        for connection in self.connections:
            self._discard(connection)
