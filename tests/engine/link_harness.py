"""Test harness for `engine.hostlink`: agents in memory, in this process and in child processes.

- `FakeAgent` + `MemoryEndpoint`: the agent's real WebSocket server (``AgentServerFactory``) with
  scripted verbs, joined to the link through ``twisted.test.iosim`` and driven by a ``Clock``:
  fully deterministic, no sockets.
- `InProcessAgent`: the production agent service tree on libvirt's test driver, listening on
  127.0.0.1; it can be stopped like a crashed process (its connections cut) and restarted on
  the same port.
- `ChildAgent`: a real agent daemon in a child process (for SIGSTOP, SIGCONT, SIGKILL).
- `JunkServer`: a plain TCP server on 127.0.0.1 that writes junk, or nothing at all.
- `Recorder`: a link listener that keeps the events; `LoggedFailures`: collects logged tracebacks.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import replace
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.test import iosim
from zope.interface import implementer

from engine.hostlink import LinkEvent, LinkEventKind
from vdsmlike.agentproc import AgentProcess
from vdsmlike.api.errors import InvalidParams
from vdsmlike.config import AgentConfig, finish
from vdsmlike.rpc.dispatcher import Dispatcher
from vdsmlike.rpc.events import EventBus
from vdsmlike.rpc.websocket import AgentServerFactory
from vdsmlike.service import make_service

AGENT_URL = "ws://127.0.0.1:54321/jsonrpc"

TEST_NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>2</sockets><cores>2</cores><threads>1</threads>
       <active>4</active><mhz>2400</mhz><model>x86_64</model></cpu>
  <memory>16777216</memory>
</node>
"""


class Recorder:
    """A link listener: keeps every `LinkEvent` it is given."""

    def __init__(self) -> None:
        self.events: list[LinkEvent] = []

    def __call__(self, event: LinkEvent) -> None:
        self.events.append(event)

    def kinds(self, *, agent_events: bool = False) -> list[str]:
        """The kinds seen, in order (agent events left out unless asked for)."""
        return [
            str(e.kind) for e in self.events if agent_events or e.kind is not LinkEventKind.EVENT
        ]

    def of(self, kind: LinkEventKind) -> list[LinkEvent]:
        """The events of one kind, in order."""
        return [e for e in self.events if e.kind is kind]

    def count(self, kind: LinkEventKind) -> int:
        """How many events of one kind were seen."""
        return len(self.of(kind))


class LoggedFailures:
    """Collects every log event that carries a traceback, while installed."""

    def __init__(self) -> None:
        self.failures: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("isError"):
            self.failures.append(event)

    def __enter__(self) -> LoggedFailures:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def texts(self) -> list[str]:
        """The tracebacks, as text."""
        return [(e.get("log_failure") or e["failure"]).getTraceback() for e in self.failures]


# -- in memory -------------------------------------------------------------------------------


def _bind(verb: str, params: Any) -> dict[str, Any]:
    if isinstance(params, dict):
        return dict(params)
    if params:
        raise InvalidParams(f"{verb}: positional params are not supported here")
    return {}


CAPS = {"cpuCores": "4", "memSize": "16384", "software_version": "0.1", "uuid": "fake-host"}


class FakeAgent:
    """
    The agent's WebSocket server (real ``AgentServerFactory``, real dispatcher) over scripted
    verbs: ``Host.ping2``, ``Host.getCapabilities``, ``Test.echo`` and ``Test.hang`` (answers
    when the test fires the Deferred it left in ``hung``).

    :ivar caps_error: raised by ``Host.getCapabilities`` when set (e.g. `Recovering`).
    :ivar ping_hangs: when true, ``Host.ping2`` never answers (until the test fires it).
    :ivar before_caps: when set, called by ``Host.getCapabilities`` before it answers.
    """

    def __init__(self, clock: Clock, *, token: str | None = None) -> None:
        self.caps_error: Exception | None = None
        self.ping_hangs = False
        self.before_caps: Any = None
        self.pings = 0
        self.hung: list[Deferred[Any]] = []
        self.bus = EventBus(monotonic=clock.seconds)
        handlers = {
            "Host.ping2": self._ping,
            "Host.getCapabilities": self._caps,
            "Test.echo": lambda value=None: value,
            "Test.hang": self._hang,
        }
        self.factory = AgentServerFactory(
            AGENT_URL,
            Dispatcher(handlers, _bind),
            self.bus,
            token=token,
            auto_ping_interval=0,
            reactor=clock,
        )

    def _ping(self) -> Any:
        self.pings += 1
        return self._hang() if self.ping_hangs else True

    def _caps(self) -> dict[str, Any]:
        if self.before_caps is not None:
            self.before_caps()
        if self.caps_error is not None:
            raise self.caps_error
        return dict(CAPS)

    def _hang(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.hung.append(d)
        return d

    def answer_hung(self, value: Any = True) -> None:
        """Answer every call left hanging so far."""
        hung, self.hung = self.hung, []
        for d in hung:
            d.callback(value)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects a client factory to a `FakeAgent` in memory, one iosim pump per connection.

    :ivar refuse: when true, ``connect`` fails with ``ConnectionRefusedError``.
    :ivar attempts: the times at which ``connect`` was called.
    """

    def __init__(self, agent: FakeAgent, clock: Clock) -> None:
        self.agent = agent
        self.clock = clock
        self.refuse = False
        self.attempts: list[float] = []
        self.pumps: list[iosim.IOPump] = []
        self.servers: list[Any] = []

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        self.attempts.append(self.clock.seconds())
        if self.refuse:
            return fail(ConnectionRefusedError("127.0.0.1", 54321))
        port = 40000 + len(self.pumps)
        client = protocolFactory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 54321))
        server = self.agent.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
        server_io = iosim.FakeTransport(server, isServer=True)
        client_io = iosim.FakeTransport(client, isServer=False)
        pump = iosim.connect(server, server_io, client, client_io, greet=False, clock=self.clock)
        self.pumps.append(pump)
        self.servers.append(server)
        return succeed(client)

    def flush(self) -> None:
        """Move bytes and run due calls until nothing moves."""
        for _ in range(100):
            moved = [pump.flush() for pump in self.pumps]
            self.clock.advance(0)
            if not any(moved):
                return
        raise AssertionError("connections never settle")

    def cut(self) -> None:
        """Drop the newest connection from the agent's side (as a dying agent does)."""
        self.pumps[-1].serverIO.loseConnection()
        self.flush()


def advance(endpoint: MemoryEndpoint, seconds: float, step: float = 0.25) -> None:
    """Let ``seconds`` pass on the endpoint's clock in small steps, moving bytes as they come."""
    end = endpoint.clock.seconds() + seconds
    while endpoint.clock.seconds() < end - 1e-9:
        endpoint.clock.advance(min(step, end - endpoint.clock.seconds()))
        endpoint.flush()


# -- real agents -----------------------------------------------------------------------------


def node_uri(tmp_path: Any) -> str:
    """A private libvirt test-driver host (16 GiB, 4 CPUs) described by a file in tmp_path."""
    path = tmp_path / "node.xml"
    path.write_text(TEST_NODE_XML)
    return f"test://{path}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InProcessAgent:
    """
    The production agent service tree in this process, on 127.0.0.1.

    `stop` behaves like the agent process dying: the listener closes and every open connection
    is cut. `start` again listens on the same port.
    """

    def __init__(self, tmp_path: Any, reactor: Any, *, token: str | None = None) -> None:
        self._tmp_path = tmp_path
        self._reactor = reactor
        self._token = token
        self._uri = node_uri(tmp_path)
        self.port = 0
        self.url = ""
        self.top: Any = None
        self._connections: list[Any] = []

    async def start(self) -> str:
        """Start the service tree; :returns: its URL (the same port after a restart)."""
        config = finish(
            replace(
                AgentConfig(),
                listen_host="127.0.0.1",
                listen_port=self.port,
                state_dir=str(self._tmp_path / "state"),
                libvirt_uri=self._uri,
                token=self._token,
                guest_wait_timeout=0.3,
                vm_sample_interval=0.5,
                host_sample_interval=0.5,
                ping_interval=0,
            )
        )
        self.top = make_service(config, self._reactor)
        self._track(self.top.listener._factory)  # the tree exposes no factory of its own
        self.top.startService()
        self.url = await self.top.listener.url
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        await self.top.core.ready
        return self.url

    def _track(self, factory: Any) -> None:
        build = factory.buildProtocol

        def remember(addr: Any) -> Any:
            protocol = build(addr)
            self._connections.append(protocol)
            return protocol

        factory.buildProtocol = remember

    async def stop(self) -> None:
        """Stop listening and cut every connection, as if the process died."""
        for protocol in self._connections:
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        self._connections.clear()
        await self.top.stopService()


class ChildAgent(AgentProcess):
    """A real agent daemon in a child process, on libvirt's test driver."""

    def __init__(self, tmp_path: Any, *, token: str | None = None) -> None:
        workdir = tmp_path / f"child-{uuid.uuid4().hex[:6]}"
        workdir.mkdir()
        super().__init__(str(workdir), libvirt_uri=node_uri(tmp_path), token=token)

    def signal(self, signum: int) -> None:
        """Send a signal to the agent process."""
        os.kill(self.pid, signum)

    def alive(self) -> bool:
        """Whether the agent process is still running (or stopped by a signal)."""
        return self._proc is not None and self._proc.poll() is None

    def reap(self) -> None:
        """Wait for a killed child so it leaves no zombie."""
        if self._proc is not None:
            self._proc.wait(timeout=10)


class _Junk(Protocol):
    def connectionMade(self) -> None:
        if self.factory.junk:
            self.transport.write(self.factory.junk)
            self.transport.loseConnection()


class JunkServer:
    """A plain TCP server on 127.0.0.1 writing ``junk`` and hanging up (or silent if empty)."""

    def __init__(self, reactor: Any, junk: bytes) -> None:
        self._reactor = reactor
        self.factory = Factory.forProtocol(_Junk)
        self.factory.junk = junk
        self.port: Any = None

    def start(self) -> str:
        """Listen; :returns: a ws:// URL pointing at it."""
        self.port = self._reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        return f"ws://127.0.0.1:{self.port.getHost().port}/jsonrpc"

    async def stop(self) -> None:
        """Stop listening."""
        await self.port.stopListening()


async def wait_for(reactor: Any, predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` every 20 ms on the real reactor; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await deferLater(reactor, 0.02, lambda: None)
