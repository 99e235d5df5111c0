"""RPC benchmark: ``Host.ping2`` round trips over one WebSocket connection, vs. a bare echo server.

Two rows, each run for ``--seconds``: sequential (one call in flight) and pipelined (``--depth``
calls in flight). Each row is measured against the target and against a bare autobahn server that
parses the JSON request and answers ``{"jsonrpc":"2.0","id":..,"result":true}``, in the same run,
from the same client (`vdsmlike.client.AgentClient`). The baseline runs where the target runs:
a subprocess for ``--target agent`` (the default: the real agent on ``test:///default``), this
process for ``--target inproc`` (our factory with a ``Host.ping2`` handler). Loopback only.

``python -m bench.bench_rpc [--target agent|inproc] [--seconds S] [--depth N]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater, react

from vdsmlike.client import AgentClient, connect
from vdsmlike.rpc.dispatcher import Dispatcher
from vdsmlike.rpc.events import EventBus
from vdsmlike.rpc.websocket import AgentServerFactory


class EchoProtocol(WebSocketServerProtocol):
    """The baseline: parse the request, answer ``true`` with its id."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        request = json.loads(payload)
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": True}
        self.sendMessage(json.dumps(reply).encode("utf-8"), isBinary=False)


async def listen(reactor: Any, factory: Any) -> str:
    """Listen on 127.0.0.1, a free port. :returns: the ws:// URL."""
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    return f"ws://127.0.0.1:{port.getHost().port}/jsonrpc"


def echo_factory(reactor: Any) -> WebSocketServerFactory:
    factory = WebSocketServerFactory("ws://127.0.0.1/jsonrpc", reactor=reactor)
    factory.protocol = EchoProtocol
    return factory


def inproc_factory(reactor: Any) -> AgentServerFactory:
    """Our transport and dispatcher with one verb and a pass-through binder."""
    dispatcher = Dispatcher({"Host.ping2": lambda: None}, lambda verb, params: {})
    return AgentServerFactory(
        "ws://127.0.0.1/jsonrpc", dispatcher, EventBus(), auto_ping_interval=0, reactor=reactor
    )


async def sequential(client: AgentClient, seconds: float) -> list[float]:
    """Call ``Host.ping2`` one at a time. :returns: latencies in seconds."""
    latencies = []
    deadline = time.perf_counter() + seconds
    while (start := time.perf_counter()) < deadline:
        await client.call("Host.ping2")
        latencies.append(time.perf_counter() - start)
    return latencies


def pipelined(client: AgentClient, seconds: float, depth: int) -> Deferred[list[float]]:
    """Keep ``depth`` calls in flight. :returns: a Deferred firing with latencies in seconds."""
    latencies: list[float] = []
    done: Deferred[list[float]] = Deferred()
    deadline = time.perf_counter() + seconds
    in_flight = [0]

    def launch() -> None:
        start = time.perf_counter()
        in_flight[0] += 1
        client.call("Host.ping2").addCallbacks(finished, done.errback, (start,))

    def finished(_: Any, start: float) -> None:
        now = time.perf_counter()
        latencies.append(now - start)
        in_flight[0] -= 1
        if now < deadline:
            launch()
        elif in_flight[0] == 0 and not done.called:
            done.callback(latencies)

    for _ in range(depth):
        launch()
    return done


def summarize(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "ops": len(ordered) / seconds,
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


async def measure(reactor: Any, url: str, seconds: float, depth: int) -> dict[str, dict]:
    """Both rows against one server, after a short warm-up."""
    client = await connect(reactor, url, timeout=30)
    await sequential(client, min(0.3, seconds))
    rows = {}
    start = time.perf_counter()
    rows["sequential"] = summarize(await sequential(client, seconds), time.perf_counter() - start)
    start = time.perf_counter()
    lat = await pipelined(client, seconds, depth)
    rows[f"pipelined x{depth}"] = summarize(lat, time.perf_counter() - start)
    await client.close()
    return rows


class Subprocess:
    """A child server process whose URL appears in a file or on its stdout."""

    def __init__(self, argv: list[str], url_file: str | None = None) -> None:
        self.url_file = url_file
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

    async def url(self, reactor: Any, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with status {self.process.returncode}")
            if self.url_file and os.path.exists(self.url_file):
                text = open(self.url_file).read().strip()
                if text:
                    return text
            await deferLater(reactor, 0.05, lambda: None)
        raise RuntimeError("server did not start in time")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def run(reactor: Any, args: argparse.Namespace) -> None:
    children: list[Subprocess] = []
    try:
        if args.target == "inproc":
            target_url = await listen(reactor, inproc_factory(reactor))
            echo_url = await listen(reactor, echo_factory(reactor))
        else:
            tmp = tempfile.mkdtemp(prefix="bench-rpc-")
            agent = Subprocess(
                [
                    sys.executable,
                    "-m",
                    "vdsmlike.cli.agent",
                    "--listen",
                    "127.0.0.1:0",
                    "--state-dir",
                    tmp,
                    "--libvirt-uri",
                    "test:///default",
                ],
                url_file=os.path.join(tmp, "agent.url"),
            )
            echo_file = os.path.join(tmp, "echo.url")
            echo = Subprocess(
                [sys.executable, "-m", "bench.bench_rpc", "--serve-echo", echo_file],
                url_file=echo_file,
            )
            children += [agent, echo]
            target_url, echo_url = await agent.url(reactor), await echo.url(reactor)
        target = await measure(reactor, target_url, args.seconds, args.depth)
        echo_rows = await measure(reactor, echo_url, args.seconds, args.depth)
    finally:
        for child in children:
            child.stop()
    print_table(args.target, target, echo_rows)


def print_table(target_name: str, target: dict, echo: dict) -> None:
    head = (
        f"{'row':<15} {target_name + ' ops/s':>13} {'p50 ms':>8} {'p99 ms':>8}   "
        f"{'echo ops/s':>11} {'p50 ms':>8} {'p99 ms':>8}   {'ops ratio':>9}"
    )
    print(head)
    print("-" * len(head))
    for row, t in target.items():
        e = echo[row]
        print(
            f"{row:<15} {t['ops']:>13.0f} {t['p50']:>8.3f} {t['p99']:>8.3f}   "
            f"{e['ops']:>11.0f} {e['p50']:>8.3f} {e['p99']:>8.3f}   {t['ops'] / e['ops']:>9.2f}"
        )


async def serve_echo(reactor: Any, url_file: str) -> None:
    """Child mode: run the echo server until terminated; its URL goes to ``url_file``."""
    url = await listen(reactor, echo_factory(reactor))
    with open(url_file + ".tmp", "w") as f:
        f.write(url)
    os.replace(url_file + ".tmp", url_file)
    await Deferred()  # until SIGTERM stops the reactor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["agent", "inproc"], default="agent")
    parser.add_argument("--seconds", type=float, default=3.0, help="per row and server")
    parser.add_argument("--depth", type=int, default=64, help="calls in flight when pipelined")
    parser.add_argument("--serve-echo", metavar="URL_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        react(serve_echo, (args.serve_echo,))
    react(run, (args,))


if __name__ == "__main__":
    main()
