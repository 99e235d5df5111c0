"""Store queries about users and their login sessions.

Passwords are stored as salted scrypt hashes and session tokens as SHA-256 hashes
(:mod:`engine.store.passwords`); hashing runs in a thread, off the reactor.
"""

from __future__ import annotations

from datetime import timedelta

from .base import QueryBase
from .errors import NotFound
from .mapping import from_row, translated
from .passwords import ScryptParams, hash_password, new_token, token_hash, verify_password
from .rows import Session, User


def _dummy_hash(params: ScryptParams) -> str:
    """A hash no password matches, verified against when the user does not exist, so a wrong
    name costs as long as a wrong password and does not reveal which names exist."""
    return f"scrypt${params.n}${params.r}${params.p}${'A' * 22}==${'A' * 43}="


class AccountQueries(QueryBase):
    """Users (admin accounts) and sessions (logged-in API clients)."""

    async def create_user(self, name: str, password: str) -> User:
        """Create an account.

        :raises DuplicateName: the name is taken.
        :raises InvalidValue: an empty name.
        """
        encoded = await self._in_thread(hash_password, password, self._settings.scrypt)
        params = {"name": name, "hash": encoded, "now": self.now}
        with translated(name=name, params=params):
            row = await self._sql.fetch_one(
                "INSERT INTO users (name, password_hash, created) VALUES (%(name)s, %(hash)s,"
                " %(now)s) RETURNING name, created",
                params,
            )
        assert row is not None
        return from_row(User, row)

    async def verify_password(self, name: str, password: str) -> User | None:
        """The user, if ``password`` is theirs; None for a wrong password or an unknown name
        alike."""
        row = await self._sql.fetch_one(
            "SELECT name, created, password_hash FROM users WHERE name = %(name)s",
            {"name": name},
        )
        encoded = row["password_hash"] if row else _dummy_hash(self._settings.scrypt)
        matches = await self._in_thread(verify_password, password, encoded)
        return from_row(User, row) if row and matches else None

    async def set_password(self, name: str, password: str) -> None:
        """Replace a user's password (their sessions stay valid).

        :raises NotFound: no such user.
        """
        encoded = await self._in_thread(hash_password, password, self._settings.scrypt)
        count = await self._sql.execute(
            "UPDATE users SET password_hash = %(hash)s WHERE name = %(name)s",
            {"hash": encoded, "name": name},
        )
        if count == 0:
            raise NotFound("user", name)

    async def create_session(self, user_name: str, *, ttl: float) -> tuple[str, Session]:
        """Open a session for ``user_name`` lasting ``ttl`` seconds.

        :returns: ``(token, session)``: the token goes to the client and is never stored.
        :raises NotFound: no such user.
        """
        token = new_token()
        params = {
            "hash": token_hash(token),
            "user_name": user_name,
            "created": self.now,
            "expires": self.now + timedelta(seconds=ttl),
        }
        with translated(params=params):
            row = await self._sql.fetch_one(
                "INSERT INTO sessions (token_hash, user_name, created, expires)"
                " VALUES (%(hash)s, %(user_name)s, %(created)s, %(expires)s)"
                " RETURNING user_name, created, expires",
                params,
            )
        assert row is not None
        return token, from_row(Session, row)

    async def lookup_session(self, token: str) -> Session | None:
        """The session this token opened, or None if unknown, expired or ended."""
        row = await self._sql.fetch_one(
            "SELECT user_name, created, expires FROM sessions"
            " WHERE token_hash = %(hash)s AND expires > %(now)s",
            {"hash": token_hash(token), "now": self.now},
        )
        return from_row(Session, row) if row else None

    async def expire_session(self, token: str) -> None:
        """End the session (log out); ending an unknown session succeeds."""
        await self._sql.execute(
            "DELETE FROM sessions WHERE token_hash = %(hash)s", {"hash": token_hash(token)}
        )

    async def purge_sessions(self) -> int:
        """Delete every expired session.

        :returns: how many were deleted.
        """
        return await self._sql.execute(
            "DELETE FROM sessions WHERE expires <= %(now)s", {"now": self.now}
        )
