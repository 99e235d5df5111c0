"""A real WebSocket server on 127.0.0.1 and a raw client, for transport and client tests."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.task import deferLater

from vdsmlike.rpc.dispatcher import Dispatcher
from vdsmlike.rpc.events import EventBus
from vdsmlike.rpc.websocket import AgentServerFactory

from .helpers import fake_bind


def default_handlers(reactor: Any) -> dict[str, Any]:
    """Fake verbs: ping, echo, add, and a slow one answering after a delay."""
    return {
        "Host.ping2": lambda: None,
        "Test.echo": lambda value=None: value,
        "Test.add": lambda a, b: a + b,
        "Test.slow": lambda seconds, value: deferLater(reactor, seconds, lambda: value),
    }


class Server:
    """A listening AgentServerFactory; ``protocols`` holds the server side of each connection."""

    def __init__(self, reactor: Any, handlers: dict[str, Any] | None = None, **options: Any):
        self.reactor = reactor
        self.bus = EventBus()
        is_ready = options.pop("is_ready", lambda: True)
        self.dispatcher = Dispatcher(
            handlers or default_handlers(reactor), fake_bind, is_ready=is_ready
        )
        self.factory = AgentServerFactory(
            "ws://127.0.0.1/jsonrpc",
            self.dispatcher,
            self.bus,
            auto_ping_interval=0,
            reactor=reactor,
            **options,
        )
        self.protocols: list[Any] = []
        build = self.factory.buildProtocol

        def remember(addr):
            protocol = build(addr)
            self.protocols.append(protocol)
            return protocol

        self.factory.buildProtocol = remember
        self.port: Any = None
        self.url = ""

    async def start(self) -> Server:
        endpoint = serverFromString(self.reactor, "tcp:0:interface=127.0.0.1")
        self.port = await endpoint.listen(self.factory)
        self.url = f"ws://127.0.0.1:{self.port.getHost().port}/jsonrpc"
        return self

    async def stop(self) -> None:
        for protocol in self.protocols:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        await self.port.stopListening()


class RawClient(WebSocketClientProtocol):
    """Sends raw text; every message received goes to ``messages`` (decoded JSON)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: DeferredQueue = DeferredQueue()
        self.close_code: Deferred = Deferred()

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(reason))
        if not self.close_code.called:
            self.close_code.callback(code)

    def send_json(self, message: Any, *, binary: bool = False) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self.sendMessage(text.encode("utf-8"), isBinary=binary)

    async def next(self) -> Any:
        return await self.messages.get()


async def raw_connect(reactor: Any, url: str) -> RawClient:
    """Open a RawClient; fails with ConnectionError if the handshake is refused."""
    factory = WebSocketClientFactory(url, reactor=reactor)
    factory.protocol = RawClient
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, factory.host, factory.port).connect(factory)
    return await factory.opened


def request(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    """A JSON-RPC request object."""
    return {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": id}


async def until(reactor: Any, predicate: Any, timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"condition not met in {timeout} s")
