"""The admin API's WebSocket transport (autobahn, Twisted flavour), on the agent's JSON-RPC parts.

The agent's pure codec (:mod:`vdsmlike.rpc.jsonrpc`), dispatcher (batches, notifications,
concurrent calls answered as they finish, -32700/-32600/-32601/-32602/-32603) and event bus
(fnmatch subscriptions) serve here unchanged. What is the engine's:

- Authentication per connection: a :class:`~engine.api.auth.ConnectionSession` guards every
  verb but ``Auth.login``, ``Auth.resume`` and ``Engine.ping``, checked after the verb is
  found and before its params are bound (so an unauthenticated caller learns nothing but
  that it must log in). A token in the handshake (``?token=`` or ``Authorization: Bearer``) is
  looked up before the connection opens; a refused one leaves the connection open but
  unauthenticated, and every verb says why (a browser cannot read a refused handshake).
- Live changes: the factory subscribes once to ``IEngine.subscribe`` and publishes each change
  on the bus as a notification (``|engine|<kind>|<id>``, ``schema/engine.yml`` ``events:``),
  encoded once whatever the number of connections. A session's end (expiry, logout) ends the
  connection's subscriptions and is announced to it with ``|engine|session|<reason>``.

No business logic here: verbs are :mod:`engine.api.verbs`' and :mod:`engine.api.auth`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from engine.interfaces import IEngine, IStore
from engine.store.auditlog import AuditEvent, AuditType
from vdsmlike.rpc import jsonrpc
from vdsmlike.rpc.dispatcher import Dispatcher
from vdsmlike.rpc.events import EventBus
from vdsmlike.rpc.websocket import JsonRpcServerProtocol

from . import wire
from .auth import OPEN_VERBS, Authenticator, AuthSettings, ConnectionSession
from .errors import NotAuthenticated, translating
from .schema import EngineSchema
from .verbs import shared_handlers

KiB = 1024
DEFAULT_MAX_MESSAGE_SIZE = 1024 * KiB
HARD_CAP_FACTOR = 4

#: Audit event types that announce a removal, and the kind of object removed (its id is the
#: event's ``vm_id`` / ``host_id``, or the ``removed_vm_id`` / ``removed_host_id`` detail).
_REMOVALS = {AuditType.VM_REMOVED.name: "vm", AuditType.HOST_REMOVED.name: "host"}

_END_EXPLANATIONS = {
    NotAuthenticated.SESSION_EXPIRED: ("expired", "the session expired; log in again"),
    NotAuthenticated.LOGGED_OUT: ("logged_out", "the session was logged out; log in again"),
}


def offered_token(request: ConnectionRequest) -> str | None:
    """:returns: the token a handshake carries (``?token=`` first, then a Bearer header)."""
    tokens = request.params.get("token") or []
    if tokens and tokens[0]:
        return str(tokens[0])
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class EngineServerProtocol(JsonRpcServerProtocol):
    """One admin connection: its session, its subscriptions, its calls in flight."""

    factory: EngineServerFactory

    #: The verbs that act on the connection itself, and the methods serving them.
    CONNECTION_VERBS = {
        "Auth.login": "login",
        "Auth.resume": "resume",
        "Auth.logout": "logout",
        "Engine.subscribe": "subscribe",
        "Engine.unsubscribe": "unsubscribe",
        "VMs.consoleWatch": "console_watch",
        "VMs.consoleUnwatch": "console_unwatch",
    }

    def __init__(self) -> None:
        super().__init__()
        self.address = "unknown"
        self.session: ConnectionSession | None = None
        self._closed = False
        self._expiry: IDelayedCall | None = None
        self._dispatcher: Dispatcher | None = None
        self._consoles: dict[str, Any] = {}  # VM id -> engine.consolerelay.ConsoleWatch
        self._console_tickets: dict[str, object] = {}  # the latest consoleWatch of each VM
        self._verbs = {
            name: translating(name, getattr(self, method))
            for name, method in self.CONNECTION_VERBS.items()
        }

    # -- autobahn's callbacks ---------------------------------------------------------------

    def onConnect(  # type: ignore[override]  # autobahn awaits a Deferred (txaio.as_future)
        self, request: ConnectionRequest
    ) -> Deferred[None] | None:
        """Set the connection up; with a token in the handshake, look it up before opening."""
        peer = self.transport.getPeer() if self.transport is not None else None
        self.address = getattr(peer, "host", None) or str(request.peer)
        self.session = ConnectionSession(self.factory.clock)
        self._dispatcher = Dispatcher(
            self.factory.handlers, self._bind, check_result=self.factory.check_result
        )
        token = offered_token(request)
        if token is None:
            return None
        return Deferred.fromCoroutine(self._resume_from_handshake(token))

    @property
    def dispatcher(self) -> Dispatcher:
        """This connection's dispatcher (it binds params through the connection's session)."""
        assert self._dispatcher is not None, "a message before the handshake"
        return self._dispatcher

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Forget the subscriptions and the session timer; calls in flight finish unheard."""
        self._live, self._closed = False, True
        self.factory.bus.drop(self)
        self._stop_consoles()
        self._cancel_expiry()
        if self.session is not None and self.session.token is not None:
            self.factory.forget(self.session.token, self)

    # -- the connection's verbs -------------------------------------------------------------

    async def login(self, user: str, password: str) -> dict[str, Any]:
        """``Auth.login``: check the password, open a session, use it on this connection."""
        token, session = await self.factory.authenticator.login(user, password, self.address)
        self._enter(token, session)
        return {"token": token, **wire.session(session)}

    async def resume(self, token: str) -> dict[str, Any]:
        """``Auth.resume``: use the session of ``token`` on this connection."""
        session = await self.factory.authenticator.resume(token)
        self._enter(token, session)
        return wire.session(session)

    async def logout(self) -> bool:
        """``Auth.logout``: end the session everywhere; every connection in it is told."""
        assert self.session is not None and self.session.token is not None
        token = self.session.token
        await self.factory.authenticator.logout(token)
        self.factory.end_sessions(token, NotAuthenticated.LOGGED_OUT)
        return True

    def subscribe(self, patterns: list[str]) -> dict[str, list[str]]:
        """``Engine.subscribe``: add notification patterns for this connection."""
        return {"patterns": self.factory.bus.subscribe(self, patterns)}

    def unsubscribe(self, patterns: list[str]) -> dict[str, list[str]]:
        """``Engine.unsubscribe``: remove notification patterns from this connection."""
        return {"patterns": self.factory.bus.unsubscribe(self, patterns)}

    async def console_watch(self, id: str, offset: int | None) -> dict[str, int]:
        """``VMs.consoleWatch``: stream a VM's console to this connection as
        ``|engine|console|<vmId>`` notifications, from ``offset`` or the log's end."""
        vm_id = wire.parse_id(id)
        self.console_unwatch(str(vm_id))
        ticket = self._console_tickets[str(vm_id)] = object()
        watch = await self.factory.engine.watch_console(vm_id, self._send_console, offset=offset)
        try:
            assert self.session is not None
            self.session.require()  # the session may have ended meanwhile
        except Exception:
            watch.stop()
            raise
        if self._closed or self._console_tickets.get(str(vm_id)) is not ticket:
            watch.stop()  # closed, unwatched or watched again while this one started
        else:
            self._consoles[str(vm_id)] = watch
        return {"offset": watch.start}

    def console_unwatch(self, id: str) -> bool:
        """``VMs.consoleUnwatch``: stop streaming a VM's console to this connection."""
        key = str(wire.parse_id(id))
        self._console_tickets.pop(key, None)
        watch = self._consoles.pop(key, None)
        if watch is not None:
            watch.stop()
        return True

    def _send_console(self, news: dict[str, Any]) -> None:
        params = {**news, "notify_time": self.factory.bus.next_time()}
        self._send_text(jsonrpc.encode_notification(f"|engine|console|{news['vm']}", params))

    def _stop_consoles(self) -> None:
        self._console_tickets.clear()
        watches, self._consoles = list(self._consoles.values()), {}
        for watch in watches:
            watch.stop()

    # -- sessions ---------------------------------------------------------------------------

    async def _resume_from_handshake(self, token: str) -> None:
        """Enter the handshake token's session, or remember why not; never fails."""
        assert self.session is not None
        try:
            session = await self.factory.authenticator.resume(token)
        except NotAuthenticated:
            self.session.leave(
                NotAuthenticated.INVALID_TOKEN,
                "the token given when connecting is unknown or expired; log in again",
            )
        except Exception:
            self.log.failure("{peer}: cannot check the handshake token", peer=self.peer)
            self.session.leave(
                NotAuthenticated.INVALID_TOKEN,
                "the token given when connecting could not be checked; log in again",
            )
        else:
            self._enter(token, session)

    def _enter(self, token: str, session: Any) -> None:
        """Use ``session`` on this connection until it expires (not if it closed meanwhile)."""
        assert self.session is not None
        if self._closed:
            return
        if self.session.token is not None:
            self.factory.forget(self.session.token, self)
        self._cancel_expiry()
        self.session.enter(token, session)
        self.factory.remember(token, self)
        self._expiry = self.factory.clock.callLater(self.session.seconds_left(), self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self.end_session(NotAuthenticated.SESSION_EXPIRED)

    def end_session(self, reason: str) -> None:
        """
        End this connection's session: subscriptions end, verbs answer 401 with ``reason``,
        and the client is sent ``|engine|session|<expired or logged_out>``.
        """
        assert self.session is not None
        self._cancel_expiry()
        self.factory.bus.drop(self)
        self._stop_consoles()
        if self.session.token is not None:
            self.factory.forget(self.session.token, self)
        name, explanation = _END_EXPLANATIONS[reason]
        self.session.leave(reason, explanation)
        params = {"reason": name, "notify_time": self.factory.bus.next_time()}
        self._send_text(jsonrpc.encode_notification(f"|engine|session|{name}", params))

    def _cancel_expiry(self) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    # -- plumbing ---------------------------------------------------------------------------

    def _bind(self, verb: str, params: Any) -> dict[str, Any]:
        """The dispatcher's binder: refuse an unauthenticated call, then bind its params."""
        if verb not in OPEN_VERBS:
            assert self.session is not None
            self.session.require()
        return self.factory.schema.bind_params(verb, params)


class EngineServerFactory(WebSocketServerFactory):
    """
    Builds admin connections sharing the verbs, the authenticator and the notification bus.

    :param engine: the engine's operations; the factory subscribes to its changes at once
        (:meth:`close` unsubscribes).
    :param store: for accounts, sessions, login audit events and statistics history.
    :param schema: the compiled ``schema/engine.yml``.
    :param clock: the time source of sessions, rate limits and ``Engine.ping``.
    :param auth: session lifetime and login rate limits.
    :param max_message_size: larger messages are answered with -32600; autobahn closes the
        connection (1009) beyond 4 times this.
    :param auto_ping_interval: seconds between WebSocket pings (0 = off).
    :param auto_ping_timeout: seconds without a pong before the connection is dropped.
    :param validate: check every result and notification against the schema (tests); a
        mismatching result is answered with -32603.
    :param reactor: the reactor (autobahn uses the global one when None).
    """

    protocol = EngineServerProtocol  # type: ignore[assignment]
    log = Logger()

    def __init__(
        self,
        engine: IEngine,
        store: IStore,
        *,
        schema: EngineSchema,
        clock: IReactorTime,
        auth: AuthSettings | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        auto_ping_interval: float = 30.0,
        auto_ping_timeout: float = 60.0,
        validate: bool = False,
        reactor: Any = None,
    ) -> None:
        super().__init__(reactor=reactor)
        self.engine = engine
        self.schema = schema.schema
        self.clock = clock
        self.max_message_size = max_message_size
        self.bus = EventBus(strict=validate)
        self.handlers = shared_handlers(engine, store, clock, schema.version)
        self.check_result: Callable[[str, Any], None] | None = (
            self.schema.check_result if validate else None
        )
        self.authenticator = Authenticator(
            store, clock=clock, settings=auth or AuthSettings(), on_event=self.publish_event
        )
        self._sessions: dict[str, set[EngineServerProtocol]] = {}
        self.setProtocolOptions(
            maxMessagePayloadSize=HARD_CAP_FACTOR * max_message_size,
            failByDrop=False,
            webStatus=False,  # a plain HTTP GET gets 426, not autobahn's status page
            autoPingInterval=auto_ping_interval,
            autoPingTimeout=auto_ping_timeout if auto_ping_interval else 0,
        )
        if validate:
            self.bus.add_observer(self.schema.check_event)
        self._unsubscribe: Callable[[], Any] | None = engine.subscribe(self.on_change)

    def close(self) -> None:
        """Stop listening to the engine's changes (the engine is stopping)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- live changes -----------------------------------------------------------------------

    def on_change(self, kind: str, payload: Any) -> None:
        """
        ``IEngine.subscribe``'s listener: publish one change to the subscribed connections.

        :param kind: ``"event"``, ``"host"``, ``"vm"`` or ``"job"``.
        :param payload: the row (``AuditEvent``, ``Host``, ``Vm``, ``Job``).
        """
        try:
            if kind == "event":
                self.publish_event(payload)
            elif kind == "host":
                self.bus.publish(f"|engine|host|{payload.id}", {"host": wire.host(payload)})
            elif kind == "vm":
                self.bus.publish(f"|engine|vm|{payload.id}", {"vm": wire.vm(payload)})
            elif kind == "job":
                self.bus.publish(f"|engine|job|{payload.id}", {"job": wire.job(payload)})
            else:
                self.log.warn("unknown change kind {kind!r} from the engine", kind=kind)
        except Exception:
            self.log.failure("cannot publish a {kind} change", kind=kind)

    def publish_event(self, event: AuditEvent) -> None:
        """Publish an audit event, then the removal it announces, if it announces one."""
        self.bus.publish(f"|engine|event|{event.id}", {"event": wire.event(event)})
        removed = _REMOVALS.get(event.type)
        if removed is None:
            return
        subject = event.vm_id if removed == "vm" else event.host_id
        subject = subject or event.details.get(f"removed_{removed}_id")
        if subject is not None:
            self.bus.publish(f"|engine|removed|{subject}", {"kind": removed, "id": str(subject)})

    # -- sessions across connections --------------------------------------------------------

    def remember(self, token: str, protocol: EngineServerProtocol) -> None:
        """Note that ``protocol`` is in the session of ``token``."""
        self._sessions.setdefault(token, set()).add(protocol)

    def forget(self, token: str, protocol: EngineServerProtocol) -> None:
        """Note that ``protocol`` left the session of ``token``."""
        members = self._sessions.get(token)
        if members is not None:
            members.discard(protocol)
            if not members:
                del self._sessions[token]

    def end_sessions(self, token: str, reason: str) -> None:
        """End the session of ``token`` on every connection in it."""
        for protocol in list(self._sessions.get(token, ())):
            protocol.end_session(reason)
