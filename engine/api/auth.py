"""Logins, session tokens and the rate limit on wrong passwords.

- :class:`LoginThrottle` (pure, clock-driven) counts failed logins per client address and per
  user name: after ``max_failures`` failures within ``window`` seconds, further logins from that
  address or as that user are refused without checking the password (error 429, with the
  seconds until one failure ages out), so guessing costs at least ``window / max_failures``
  seconds a try and a flood costs no scrypt hashing.
- :class:`Authenticator` logs users in against the store (``verify_password``,
  ``create_session``), checks tokens (``lookup_session``) and logs out (``expire_session``).
  Logins are audit events (``USER_LOGIN``, ``USER_LOGIN_FAILED``).
- :class:`ConnectionSession` is one connection's state: which session it is in, and why not
  when it is not; :meth:`ConnectionSession.require` guards every verb but the open ones.

The token travels in ``Auth.login``'s answer and comes back in ``Auth.resume`` or the WebSocket
handshake (``?token=`` or ``Authorization: Bearer``); it is never a cookie, so a page on another
site cannot use an administrator's session through the browser.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from engine.interfaces import IStore
from engine.store.auditlog import AuditEvent, AuditType, audit_event
from engine.store.rows import Session

from . import wire
from .errors import LoginFailed, NotAuthenticated, TooManyLogins

#: The verbs an unauthenticated connection may call.
OPEN_VERBS = frozenset({"Auth.login", "Auth.resume", "Engine.ping"})


@dataclass(frozen=True)
class AuthSettings:
    """
    How logins behave.

    :ivar session_ttl: seconds a session lasts from its login (8 hours).
    :ivar max_failures: failed logins allowed per address and per user within ``window``.
    :ivar window: seconds a failed login counts against its address and user.
    :ivar max_tracked: addresses and users remembered at most (the oldest are forgotten first
        when more fail at once, which only a flood from many addresses causes).
    """

    session_ttl: float = 8 * 3600.0
    max_failures: int = 5
    window: float = 60.0
    max_tracked: int = 10_000


class LoginThrottle:
    """
    Failed logins per key (``("address", a)``, ``("user", u)``) in a sliding window.

    :param clock: the time source (``IReactorTime``).
    :param max_failures: failures within the window that close a key.
    :param window: seconds a failure counts.
    :param max_tracked: keys remembered at most.
    """

    def __init__(
        self, clock: IReactorTime, *, max_failures: int, window: float, max_tracked: int = 10_000
    ) -> None:
        self._clock = clock
        self._max = max_failures
        self._window = window
        self._max_tracked = max_tracked
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after(self, keys: Iterable[tuple[str, str]]) -> float | None:
        """
        :returns: seconds until a login under all ``keys`` may be tried, or None if it may now.
        """
        now = self._clock.seconds()
        waits = []
        for key in keys:
            times = self._recent(key, now)
            if len(times) >= self._max:
                waits.append(times[-self._max] + self._window - now)
        return max(waits) if waits else None

    def failed(self, keys: Iterable[tuple[str, str]]) -> None:
        """Count a failed login against every key."""
        now = self._clock.seconds()
        for key in keys:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
        while len(self._failures) > self._max_tracked:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget the failures of every key (a right password was given)."""
        for key in keys:
            self._failures.pop(key, None)

    def tracked(self) -> int:
        """:returns: how many keys have failures remembered."""
        return len(self._failures)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        """:returns: the key's failure times within the window (older ones are dropped)."""
        times = self._failures.pop(key, None) or deque()
        while times and times[0] <= now - self._window:
            times.popleft()
        if times:
            self._failures[key] = times  # re-inserted: the dict stays oldest-used first
        return times


def login_keys(address: str, user: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """:returns: the throttle keys of a login from ``address`` as ``user``."""
    return (("address", address), ("user", user))


class Authenticator:
    """
    Logs users in and checks their tokens, against the store.

    :param store: the ``IStore`` holding users and sessions.
    :param clock: the time source of the throttle and of session expiry checks.
    :param settings: the session lifetime and the rate limit.
    :param on_event: called with each audit event recorded (to publish it live).
    """

    log = Logger()

    def __init__(
        self,
        store: IStore,
        *,
        clock: IReactorTime,
        settings: AuthSettings,
        on_event: Callable[[AuditEvent], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._on_event = on_event
        self.throttle = LoginThrottle(
            clock,
            max_failures=settings.max_failures,
            window=settings.window,
            max_tracked=settings.max_tracked,
        )

    def now(self) -> datetime:
        """:returns: the clock's time as an aware UTC datetime."""
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    async def login(self, user: str, password: str, address: str) -> tuple[str, Session]:
        """
        Check a password and open a session.

        :returns: ``(token, session)``.
        :raises TooManyLogins: too many recent failures from ``address`` or as ``user``; the
            password was not checked.
        :raises LoginFailed: a wrong password or an unknown user (not told apart).
        """
        keys = login_keys(address, user)
        wait = self.throttle.retry_after(keys)
        if wait is not None:
            self.log.warn(
                "login as {user!r} from {address} refused: too many failures",
                user=user,
                address=address,
            )
            raise TooManyLogins(
                f"try again in {wait:.0f} s", data={"retry_after": round(max(wait, 0.0), 3)}
            )
        account = await self._store.verify_password(user, password)
        if account is None:
            self.throttle.failed(keys)
            self.log.warn("failed login as {user!r} from {address}", user=user, address=address)
            await self._record(audit_event(AuditType.USER_LOGIN_FAILED, user=user, address=address))
            raise LoginFailed("wrong user name or password")
        self.throttle.succeeded(keys)
        token, session = await self._store.create_session(
            account.name, ttl=self._settings.session_ttl
        )
        self.log.info("{user!r} logged in from {address}", user=account.name, address=address)
        await self._record(audit_event(AuditType.USER_LOGIN, user=account.name, address=address))
        return token, session

    async def resume(self, token: str) -> Session:
        """
        The session a token opened.

        :raises NotAuthenticated: the token is unknown, expired or logged out.
        """
        session = await self._store.lookup_session(token)
        if session is None or session.expires <= self.now():
            raise NotAuthenticated(
                "the session token is unknown or expired; log in again",
                reason=NotAuthenticated.INVALID_TOKEN,
            )
        return session

    async def logout(self, token: str) -> None:
        """End the session (its token stops working everywhere)."""
        await self._store.expire_session(token)

    async def _record(self, event: Any) -> None:
        """Record an audit event; a failure to do so is logged, never raised."""
        try:
            recorded = await self._store.add_event(event)
        except Exception:
            self.log.failure("cannot record audit event {type}", type=event.type)
            return
        if self._on_event is not None:
            try:
                self._on_event(recorded)
            except Exception:
                self.log.failure("cannot publish audit event {type}", type=event.type)


class ConnectionSession:
    """
    One connection's authentication: the session it is in, or why it is in none.

    :param clock: the time source for expiry checks.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.token: str | None = None
        self.session: Session | None = None
        self._why_not = (NotAuthenticated.LOGIN_REQUIRED, "log in first (Auth.login)")

    @property
    def user(self) -> str | None:
        """The logged-in user's name, or None."""
        return self.session.user_name if self.session else None

    def enter(self, token: str, session: Session) -> None:
        """Start using ``session`` (after a login or a resumed token)."""
        self.token, self.session = token, session

    def leave(self, reason: str, explanation: str) -> None:
        """End the session on this connection; later verbs are refused with ``reason``."""
        self.token, self.session = None, None
        self._why_not = (reason, explanation)

    def seconds_left(self) -> float:
        """:returns: seconds until the session expires (0 if there is none)."""
        if self.session is None:
            return 0.0
        return max(self.session.expires.timestamp() - self._clock.seconds(), 0.0)

    def require(self) -> None:
        """
        Refuse a verb unless the connection is in a live session.

        :raises NotAuthenticated: not logged in, the handshake's token was refused, or the
            session expired or was logged out; ``data.reason`` tells which.
        """
        if self.session is not None and self.seconds_left() <= 0:
            # The connection's expiry timer, due now, ends the session; until then, refuse.
            expired = wire.time(self.session.expires)
            raise NotAuthenticated(
                f"the session expired at {expired}; log in again",
                reason=NotAuthenticated.SESSION_EXPIRED,
            )
        if self.session is None:
            reason, explanation = self._why_not
            raise NotAuthenticated(explanation, reason=reason)
