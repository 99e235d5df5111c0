"""Test harness: a real agent (the production service tree) in this process, and helpers to
wait for its events over a real WebSocket connection.

Every result is checked against the schema by the agent itself (``validate_results``), and every
event it publishes is checked by an observer; violations fail the test at teardown.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from vdsmlike import client as agent_client
from vdsmlike.config import AgentConfig, finish
from vdsmlike.service import make_service

TEST_NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>2</sockets><cores>2</cores><threads>1</threads>
       <active>4</active><mhz>2400</mhz><model>x86_64</model></cpu>
  <memory>16777216</memory>
</node>
"""


def node_uri(tmp_path) -> str:
    """A private libvirt test-driver host (16 GiB, 4 CPUs) described by a file in tmp_path."""
    path = tmp_path / "node.xml"
    path.write_text(TEST_NODE_XML)
    return f"test://{path}"


class RunningAgent:
    """An agent service tree started in this process, and one client connected to it."""

    def __init__(self, top: Any, url: str, client: agent_client.AgentClient) -> None:
        self.top = top
        self.url = url
        self.client = client
        self.events: list[tuple[str, dict]] = []
        self.violations: list[str] = []
        client.on_event(lambda event_id, params: self.events.append((event_id, params)))
        top.bus.add_observer(self._check_event)

    def _check_event(self, event_id: str, params: dict) -> None:
        try:
            self.top.schema.check_event(event_id, params)
        except AssertionError as e:
            self.violations.append(f"{event_id}: {e}")

    def call(self, method: str, params: Any = None) -> Deferred:
        """Call a verb over the WebSocket connection."""
        return self.client.call(method, params)

    def statuses(self, vm_id: str) -> list[str]:
        """Every status this client was told about for a VM, in order."""
        return [
            params[vm_id]["status"]
            for event_id, params in self.events
            if event_id == f"|virt|VM_status|{vm_id}"
        ]

    async def wait_for_status(self, vm_id: str, status: str, timeout: float = 20.0) -> None:
        """Wait until an event reports the VM in ``status``."""
        await wait_until(lambda: status in self.statuses(vm_id), timeout, f"{vm_id} {status}")

    async def stop(self) -> None:
        """Close the client, stop the agent, and fail on any schema violation seen."""
        await self.client.close()
        await self.top.stopService()
        assert not self.violations, self.violations


async def wait_until(predicate, timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` on the reactor until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.02, lambda: None)


async def eventually(fetch, accept, timeout: float = 10.0, interval: float = 0.1):
    """Call the async ``fetch`` until ``accept(value)``; :returns: that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"last value {value!r} never accepted")
        await deferLater(reactor, interval, lambda: None)


async def start_agent(tmp_path, *, libvirt_uri: str, **overrides: Any) -> RunningAgent:
    """Start the production service tree on 127.0.0.1:0 and connect a subscribed client."""
    settings = dict(
        listen_host="127.0.0.1",
        listen_port=0,
        state_dir=str(tmp_path / "state"),
        libvirt_uri=libvirt_uri,
        validate_results=True,
        guest_wait_timeout=0.3,
        vm_sample_interval=0.5,
        host_sample_interval=0.5,
        ping_interval=0,
    )
    settings.update(overrides)
    config = finish(replace(AgentConfig(), **settings))
    top = make_service(config, reactor)
    top.startService()
    url = await top.listener.url
    await top.core.ready
    client = await agent_client.connect(reactor, url, token=config.token)
    agent = RunningAgent(top, url, client)
    await client.subscribe(["*"])
    return agent
