"""The JSON-RPC WebSocket transport (autobahn, Twisted flavour): no business logic here.

The factory holds what connections share (the dispatcher, the event bus, the token, limits);
a protocol instance holds one connection's state (its subscriptions, its in-flight calls) and
hands message text to the dispatcher. ``Host.subscribe`` and ``Host.unsubscribe`` are
per-connection verbs, so they live here.
"""

from __future__ import annotations

import hmac
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.logger import Logger

from ..api.errors import InvalidParams, InvalidRequest
from . import jsonrpc
from .dispatcher import Dispatcher
from .events import EventBus

MiB = 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE = 16 * MiB
HARD_CAP_FACTOR = 4


def _check_patterns(patterns: Any) -> list[str]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise InvalidParams("patterns must be a list of strings")
    return patterns


class JsonRpcServerProtocol(WebSocketServerProtocol):
    """
    The JSON-RPC plumbing of one server connection, shared by the agent and the engine: a size
    limit per message, dispatch with the connection's own verbs, replies and events sent only
    while the client is there.

    Subclasses provide :attr:`dispatcher` and ``_verbs`` (verbs served by the connection), and
    their factory a ``max_message_size``.
    """

    log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self._live = False
        self._verbs: dict[str, Any] = {}

    @property
    def live(self) -> bool:
        """Whether replies and events are still being sent (false once the client is gone)."""
        return self._live

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher this connection's messages go to."""
        raise NotImplementedError

    def onOpen(self) -> None:
        self._live = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Answer a request message; oversized ones get -32600 and the connection stays up."""
        limit = self.factory.max_message_size
        if len(payload) > limit:
            error = InvalidRequest(f"Request too large: {len(payload)} bytes (limit {limit})")
            self.log.warn("{peer}: {error}", peer=self.peer, error=error.detail)
            self._send_text(jsonrpc.encode_error(None, error))
            return
        self.in_flight += 1
        d = self.dispatcher.handle_text(payload, extra_handlers=self._verbs)
        d.addCallback(self._reply)
        d.addErrback(lambda f: self.log.failure("dispatcher failed", f))

    def _reply(self, text: str | None) -> None:
        self.in_flight -= 1
        if text is not None:
            self._send_text(text)

    def _send_text(self, text: str) -> None:
        """Send text if the connection is still open; replies to a gone client are dropped."""
        if self._live and self.state == self.STATE_OPEN:
            self.sendMessage(text.encode("utf-8"), isBinary=False)

    def send_event(self, text: str) -> None:
        """Receive an event from the bus (`EventSubscriber`)."""
        self._send_text(text)


class AgentServerProtocol(JsonRpcServerProtocol):
    """One client connection: authenticates the handshake, dispatches messages, relays events."""

    factory: AgentServerFactory

    def __init__(self) -> None:
        super().__init__()
        self._verbs = {"Host.subscribe": self.subscribe, "Host.unsubscribe": self.unsubscribe}

    @property
    def dispatcher(self) -> Dispatcher:
        """The agent's one dispatcher."""
        return self.factory.dispatcher

    def onConnect(self, request: ConnectionRequest) -> None:
        """Deny a wrong path (404) or a missing or wrong token (401)."""
        self.factory.check_request(request)

    def subscribe(self, patterns: list[str]) -> dict[str, list[str]]:
        """``Host.subscribe``: add event patterns for this connection."""
        current = self.factory.bus.subscribe(self, _check_patterns(patterns))
        return {"patterns": current}

    def unsubscribe(self, patterns: list[str]) -> dict[str, list[str]]:
        """``Host.unsubscribe``: remove event patterns from this connection."""
        remaining = self.factory.bus.unsubscribe(self, _check_patterns(patterns))
        return {"patterns": remaining}

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Forget the subscriptions; calls still running finish, their replies are dropped."""
        self._live = False
        self.factory.bus.drop(self)
        if self.in_flight:
            self.log.info(
                "{peer} left with {count} calls in flight", peer=self.peer, count=self.in_flight
            )


class AgentServerFactory(WebSocketServerFactory):
    """
    Builds `AgentServerProtocol` connections sharing one dispatcher and one event bus.

    :param url: the advertised WebSocket URL (``ws://host:port/jsonrpc``).
    :param token: if set, the handshake must carry ``Authorization: Bearer <token>`` or the query
        ``?token=<token>``; otherwise it is denied with HTTP 401.
    :param max_message_size: larger messages are answered with -32600; autobahn closes the
        connection (1009) beyond 4 times this.
    :param path: the only HTTP path served; others get 404.
    :param auto_ping_interval: seconds between WebSocket pings (0 = off, as in unit tests).
    :param auto_ping_timeout: seconds without a pong before the connection is dropped.
    :param reactor: the reactor (autobahn uses the global one when None).
    """

    protocol = AgentServerProtocol  # type: ignore[assignment]
    log = Logger()

    def __init__(
        self,
        url: str,
        dispatcher: Dispatcher,
        bus: EventBus,
        *,
        token: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        path: str = "/jsonrpc",
        auto_ping_interval: float = 30.0,
        auto_ping_timeout: float = 60.0,
        reactor: Any = None,
    ) -> None:
        super().__init__(url, reactor=reactor)
        self.dispatcher = dispatcher
        self.bus = bus
        self.max_message_size = max_message_size
        self.path = path
        self._token = token.encode("utf-8") if token else None
        self.setProtocolOptions(
            maxMessagePayloadSize=HARD_CAP_FACTOR * max_message_size,
            failByDrop=False,  # send the close frame (1009 and the like) before dropping
            autoPingInterval=auto_ping_interval,
            autoPingTimeout=auto_ping_timeout if auto_ping_interval else 0,
        )

    def check_request(self, request: ConnectionRequest) -> None:
        """
        Accept or deny a handshake.

        :raises ConnectionDeny: 404 for another path, 401 without the right token.
        """
        if request.path != self.path:
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "Not Found")
        if self._token is not None and not self._token_ok(request):
            self.log.warn("{peer}: handshake without a valid token", peer=request.peer)
            raise ConnectionDeny(401, "Unauthorized")

    def _token_ok(self, request: ConnectionRequest) -> bool:
        assert self._token is not None
        offered: list[str] = list(request.params.get("token", []))
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip())
        return any(hmac.compare_digest(o.encode("utf-8"), self._token) for o in offered)


def listen_description(host: str, port: int) -> str:
    """
    Build a ``serverFromString`` description for a TCP listener.

    :param host: an interface address (IPv6 with or without brackets); ``""`` means all.
    :returns: e.g. ``tcp:port=54321:interface=127.0.0.1`` or ``tcp:port=0:interface=\\:\\:1``.
    """
    host = host.strip("[]")
    if not host:
        return f"tcp:port={port}"
    escaped = host.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return f"tcp:port={port}:interface={escaped}"
