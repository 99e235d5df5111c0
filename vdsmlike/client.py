"""``AgentClient``: a JSON-RPC 2.0 client of the agent over WebSocket (autobahn, Twisted flavour).

Use `connect` from Twisted code; use `call_sync` from plain blocking scripts. ``call_sync`` is a
tiny blocking WebSocket client on a plain socket (RFC 6455 framing, no reactor), because a
Twisted reactor cannot be restarted after it stops: a script could call ``react`` only once.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from .rpc import jsonrpc

EventCallback = Callable[[str, dict[str, Any]], None]


class LinkLost(Exception):
    """The connection closed while the call was pending (or before it was made)."""


class HandshakeFailed(Exception):
    """The WebSocket opening handshake failed: wrong path (404), bad token (401), not a server."""


class RemoteError(Exception):
    """
    The agent answered with a JSON-RPC error object.

    :ivar code: the error code (VDSM's, such as 1 or 100, or JSON-RPC's, such as -32601).
    :ivar message: the error message.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _params(params: Any) -> Any:
    return {} if params is None else params


class AgentClient:
    """One open connection to an agent. Build it with `connect`."""

    log = Logger()

    def __init__(self, protocol: _AgentClientProtocol, reactor: Any) -> None:
        self._protocol = protocol
        self._reactor = reactor
        self._ids = itertools.count(1)
        self._pending: dict[int, Deferred[Any]] = {}
        self._event_callbacks: list[EventCallback] = []
        self._close_waiters: list[Deferred[None]] = []
        self.connected = True

    def call(self, method: str, params: Any = None, *, timeout: float | None = None) -> Deferred:
        """
        Call a verb.

        :param params: a dict (named) or list (positional); None sends ``{}``.
        :param timeout: seconds; None waits as long as the connection lives.
        :returns: a Deferred firing with the result. It fails with `RemoteError` for an error
            reply, `LinkLost` if the connection is or gets lost, ``defer.TimeoutError`` on
            timeout (a late reply is then ignored), ``TypeError`` if params are not JSON.
        """
        if not self.connected:
            return fail(LinkLost("not connected"))
        request_id, d = self._expect(timeout)
        try:
            text = jsonrpc.encode_request(method, _params(params), request_id)
        except (TypeError, ValueError):
            self._pending.pop(request_id, None)
            return fail()
        self._send(text)
        return d

    def batch(
        self, calls: Sequence[tuple[str, Any]], *, timeout: float | None = None
    ) -> Deferred[list[Any]]:
        """
        Send several calls as one JSON-RPC batch.

        :param calls: ``(method, params)`` pairs.
        :returns: a Deferred firing with the results in call order; a call answered with an error
            has its `RemoteError` instance in its place. Fails with `LinkLost` or a timeout.
        """
        if not calls:
            return succeed([])
        if not self.connected:
            return fail(LinkLost("not connected"))
        parts, waiting = [], []
        for method, params in calls:
            request_id, d = self._expect(timeout)
            d.addErrback(lambda f: f.trap(RemoteError) and f.value)
            waiting.append((request_id, d))
            try:
                parts.append(jsonrpc.encode_request(method, _params(params), request_id))
            except (TypeError, ValueError):
                for pending_id, _ in waiting:
                    self._pending.pop(pending_id, None)
                return fail()
        self._send("[" + ",".join(parts) + "]")
        gathered = gatherResults([d for _, d in waiting], consumeErrors=True)
        gathered.addErrback(lambda f: f.value.subFailure if f.check(FirstError) else f)
        return gathered

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification: the agent runs it and never answers."""
        if self.connected:
            self._send(jsonrpc.encode_notification(method, _params(params)))

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(event_id, params)`` for every event the agent sends."""
        self._event_callbacks.append(callback)

    def subscribe(
        self, patterns: Iterable[str], *, verb: str = "Host.subscribe"
    ) -> Deferred[dict[str, list[str]]]:
        """
        Ask for events whose ids match shell-style ``patterns`` (``*`` = all).

        :param verb: the agent's ``Host.subscribe``, or the engine's ``Engine.subscribe``.
        :returns: a Deferred firing with ``{"patterns": [...]}``, as `call` fails.
        """
        return self.call(verb, {"patterns": list(patterns)})

    def close(self) -> Deferred[None]:
        """
        Close the connection; pending calls fail with `LinkLost`.

        :returns: a Deferred firing with None once the connection is closed.
        """
        d = self.when_closed()
        if self.connected:
            self._protocol.sendClose(1000)
        return d

    def when_closed(self) -> Deferred[None]:
        """:returns: a Deferred firing with None when the connection is gone (now, if it is)."""
        if not self.connected:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._close_waiters.append(d)
        return d

    def _expect(self, timeout: float | None) -> tuple[int, Deferred[Any]]:
        request_id = next(self._ids)

        def forget(_: Deferred[Any]) -> None:
            self._pending.pop(request_id, None)

        d: Deferred[Any] = Deferred(forget)
        self._pending[request_id] = d
        if timeout is not None:
            d.addTimeout(timeout, self._reactor)
        return request_id, d

    def _send(self, text: str) -> None:
        self._protocol.sendMessage(text.encode("utf-8"), isBinary=False)

    def received(self, payload: bytes) -> None:
        """Handle one message from the agent (called by the protocol)."""
        try:
            message = jsonrpc.loads(payload)
        except ValueError as e:
            self.log.warn("agent sent invalid JSON: {error}", error=e)
            return
        for item in message if isinstance(message, list) else [message]:
            if not isinstance(item, dict):
                self.log.warn("agent sent a non-object: {item!r}", item=item)
            elif "method" in item and "id" not in item:
                self._dispatch_event(item.get("method"), item.get("params"))
            else:
                self._resolve(item)

    def _resolve(self, response: dict[str, Any]) -> None:
        request_id = response.get("id")
        d = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if d is None:
            self.log.warn("unexpected reply: {response!r}", response=response)
        elif isinstance(response.get("error"), dict):
            error = response["error"]
            d.errback(RemoteError(error.get("code"), error.get("message"), error.get("data")))
        else:
            d.callback(response.get("result"))

    def _dispatch_event(self, event_id: Any, params: Any) -> None:
        for callback in list(self._event_callbacks):
            try:
                callback(event_id, params)
            except Exception:
                self.log.failure("event callback failed on {event_id}", event_id=event_id)

    def lost(self, reason: str) -> None:
        """Fail every pending call with `LinkLost` (called by the protocol)."""
        self.connected = False
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(LinkLost(reason))
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)


class _AgentClientProtocol(WebSocketClientProtocol):
    """Relays autobahn's callbacks to its `AgentClient`; ``opened`` fires after the handshake."""

    def __init__(self) -> None:
        super().__init__()
        self.client: AgentClient | None = None
        self.opened: Deferred[AgentClient] = Deferred(self._cancel_open)

    def _cancel_open(self, _: Deferred[AgentClient]) -> None:
        if self.transport is not None:
            self.dropConnection(abort=True)

    def onOpen(self) -> None:
        self.client = AgentClient(self, self.factory.reactor)
        self.opened.callback(self.client)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.client is not None:
            self.client.received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.client is not None:
            self.client.lost(reason or f"connection closed (code {code})")
        elif not self.opened.called:
            self.opened.errback(HandshakeFailed(reason or "connection closed during handshake"))


def connect(
    reactor: Any,
    url: str,
    *,
    token: str | None = None,
    timeout: float = 30,
    auto_ping_interval: float = 0,
) -> Deferred[AgentClient]:
    """
    Open a connection to an agent.

    :param url: ``ws://host:port/jsonrpc`` (or ``wss://``).
    :param token: sent as ``Authorization: Bearer <token>``.
    :param timeout: seconds for TCP connect plus the WebSocket handshake.
    :returns: a Deferred firing with an `AgentClient`; it fails with `HandshakeFailed` (HTTP
        401/404 and the like), a ``ConnectError`` subclass, or ``defer.TimeoutError``.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    factory = WebSocketClientFactory(url, headers=headers, reactor=reactor)
    factory.protocol = _AgentClientProtocol
    factory.setProtocolOptions(
        autoPingInterval=auto_ping_interval,
        autoPingTimeout=2 * auto_ping_interval,
        openHandshakeTimeout=timeout,
    )
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, factory.host, factory.port, timeout=timeout
    )
    if factory.isSecure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(factory.host), endpoint)
    d: Deferred[Any] = endpoint.connect(factory)
    d.addCallback(lambda protocol: protocol.opened)
    d.addTimeout(timeout, reactor)
    return d


# A blocking client for scripts (no reactor).

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def call_sync(
    url: str, method: str, params: Any = None, token: str | None = None, timeout: float = 30
) -> Any:
    """
    Call one verb and wait for its result, blocking, without a reactor.

    Never call this from the reactor thread.

    :returns: the result.
    :raises RemoteError: for an error reply.
    :raises HandshakeFailed: if the server refuses the WebSocket handshake.
    :raises LinkLost: if the server closes the connection before answering.
    :raises TimeoutError: if ``timeout`` seconds pass; ``OSError`` if it cannot connect.
    """
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock = socket.create_connection((host, port), timeout=timeout)
    if parts.scheme == "wss":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    with sock, sock.makefile("rb") as reader:
        _handshake(sock, reader, f"{host}:{port}", resource, token)
        text = jsonrpc.encode_request(method, _params(params), 1)
        _send_frame(sock, _TEXT, text.encode("utf-8"))
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            reply = jsonrpc.loads(_read_message(sock, reader))
            if isinstance(reply, dict) and reply.get("id") == 1 and "method" not in reply:
                break
        _send_frame(sock, _CLOSE, struct.pack("!H", 1000))
    if isinstance(reply.get("error"), dict):
        error = reply["error"]
        raise RemoteError(error.get("code"), error.get("message"), error.get("data"))
    return reply.get("result")


def _handshake(
    sock: socket.socket, reader: Any, host: str, resource: str, token: str | None
) -> None:
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {resource} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    status = reader.readline().decode("latin-1").strip()
    headers = {}
    while (line := reader.readline().decode("latin-1").strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status.split(" ", 2)[1:2] != ["101"]:
        raise HandshakeFailed(f"WebSocket connection upgrade failed: {status or 'no answer'}")
    expected = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        raise HandshakeFailed("bad Sec-WebSocket-Accept from server")


def _send_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    """Send one final, masked frame (clients must mask)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    stream = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    sock.sendall(header + mask + masked)


def _read_exactly(reader: Any, n: int) -> bytes:
    data = reader.read(n)
    if len(data) != n:
        raise LinkLost("connection closed by the server")
    return data


def _read_message(sock: socket.socket, reader: Any) -> bytes:
    """Read one data message, answering pings and joining fragments."""
    fragments: list[bytes] = []
    while True:
        b0, b1 = _read_exactly(reader, 2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", _read_exactly(reader, 2))
        elif n == 127:
            (n,) = struct.unpack("!Q", _read_exactly(reader, 8))
        payload = _read_exactly(reader, n)  # servers never mask
        if opcode == _PING:
            _send_frame(sock, _PONG, payload)
        elif opcode == _CLOSE:
            raise LinkLost("server closed the WebSocket")
        elif opcode != _PONG:
            fragments.append(payload)
            if b0 & 0x80:
                return b"".join(fragments)


def describe_error(error: BaseException) -> str:
    """:returns: a one-line description of why a call or a connect failed (for the CLI)."""
    if isinstance(error, RemoteError):
        return f"error {error.code}: {error.message}"
    return f"{type(error).__name__}: {error}"
