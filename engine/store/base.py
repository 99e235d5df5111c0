"""What every group of store queries shares: the open transaction, its time, its settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg2 import sql

from .errors import NotFound
from .mapping import adapt, assignments, translated
from .passwords import ScryptParams
from .pool import SqlTransaction


@dataclass(frozen=True)
class StoreSettings:
    """Tunables of a store.

    :ivar history_retention: how long statistics samples stay in the history tables.
    :ivar scrypt: cost of password hashes written from now on.
    """

    history_retention: timedelta = timedelta(hours=6)
    scrypt: ScryptParams = ScryptParams()


class QueryBase:
    """Base of the query groups mixed into :class:`~engine.store.transaction.StoreTransaction`.

    :param sql: the open transaction.
    :param now: the store clock's time when the transaction began; every timestamp the
        transaction writes is this one, as PostgreSQL's ``now()`` would be.
    :param in_thread: runs a blocking function (password hashing) off the reactor thread.
    """

    def __init__(
        self,
        sql: SqlTransaction,
        *,
        now: datetime,
        settings: StoreSettings,
        in_thread: Callable[..., Awaitable[Any]],
    ) -> None:
        self._sql = sql
        self.now = now
        self._settings = settings
        self._in_thread = in_thread

    @property
    def sql(self) -> SqlTransaction:
        """The raw transaction, for statements the store has no method for (tests, repairs)."""
        return self._sql

    async def _update(
        self,
        kind: str,
        table: str,
        key: str,
        value: UUID,
        changes: dict[str, Any],
        *,
        name: str | None = None,
    ) -> None:
        """Set ``changes`` (and ``updated``) on the row of ``table`` whose ``key`` is ``value``.

        :raises NotFound: no such row (``kind`` names it).
        """
        params = {column: adapt(v) for column, v in changes.items()}
        params["updated"] = self.now
        statement = sql.SQL("UPDATE {} SET {} WHERE {} = %(_key)s").format(
            sql.Identifier(table), assignments(params), sql.Identifier(key)
        )
        with translated(name=name, params=params):
            count = await self._sql.execute(statement, {**params, "_key": value})
        if count == 0:
            raise NotFound(kind, value)
