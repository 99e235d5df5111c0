"""Test harness for the engine's core: the production service tree on the test database, with
fast intervals, and real agents (in this process on libvirt's test driver, or child processes).

- `RunningEngine`: ``engine.service.make_service`` with ``--db`` pointing at the test's
  database, listening on 127.0.0.1:0; stop and start it again on the same database to test
  convergence after a restart.
- `agent_in` / `Agents`: in-process agents (`link_harness.InProcessAgent`), each with its own
  libvirt test-driver host (16 GiB, 4 CPUs), stopped after the test.
- `eventually`: poll an async fetch until a predicate accepts its value.
"""

from __future__ import annotations

import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest_twisted
from link_harness import InProcessAgent, LoggedFailures
from twisted.internet import reactor
from twisted.internet.task import deferLater

from engine.config import EngineConfig
from engine.core import Engine
from engine.service import make_service
from engine.store.rows import JobStatus

#: Intervals and timeouts that make tests take seconds, not minutes.
FAST = dict(
    host_stats_interval=0.3,
    vm_stats_interval=0.3,
    heartbeat_interval=0.2,
    heartbeat_timeout=0.5,
    misses_to_suspect=2,
    grace_period=2.0,
    install_timeout=3.0,
    connect_timeout=2.0,
    call_timeout=5.0,
    reconnect_initial_delay=0.05,
    reconnect_max_delay=0.4,
    auto_ping_interval=0.0,
    start_timeout=10.0,
    stop_timeout=10.0,
    shutdown_timeout=10.0,
    pause_timeout=10.0,
    migrate_timeout=10.0,
    pool_size=3,
)


def fast_config(state_dir: Path, dsn: str | None, **overrides: Any) -> EngineConfig:
    """A configuration for tests: 127.0.0.1:0, the given database, fast intervals."""
    settings: dict[str, Any] = dict(FAST, listen_host="127.0.0.1", listen_port=0,
                                    state_dir=str(state_dir), db=dsn)
    settings.update(overrides)
    return replace(EngineConfig(), **settings)


class RunningEngine:
    """The engine's service tree, started; ``out`` holds what it printed (the password)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.out = io.StringIO()
        self.top: Any = None
        self.url = ""

    @property
    def engine(self) -> Engine:
        """The engine (``IEngine``)."""
        return self.top.engine

    async def start(self) -> RunningEngine:
        """Start the tree and wait until the engine has started and listens."""
        self.top = make_service(self.config, reactor, out=self.out)
        self.top.startService()
        self.url = await self.top.url
        return self

    async def stop(self) -> None:
        """Stop the tree (the hosts' VMs keep running)."""
        if self.top is not None and self.top.running:
            await self.top.stopService()

    async def restart(self) -> RunningEngine:
        """Stop, then start a new tree on the same database and state dir."""
        await self.stop()
        return await self.start()


async def start_engine(tmp_path: Path, dsn: str, **overrides: Any) -> RunningEngine:
    """:returns: a started engine on ``dsn`` with its state dir in ``tmp_path``."""
    state = tmp_path / "engine-state"
    state.mkdir(exist_ok=True)
    return await RunningEngine(fast_config(state, dsn, **overrides)).start()


class Agents:
    """In-process agents, each a host of its own; all stopped at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self.started: list[InProcessAgent] = []

    async def start(self, name: str = "", **options: Any) -> InProcessAgent:
        """Start one more agent; :returns: it (``url``, ``port``, ``top``)."""
        path = self._tmp / f"agent-{name or len(self.started)}"
        path.mkdir(exist_ok=True)
        agent = InProcessAgent(path, reactor, **options)
        await agent.start()
        self.started.append(agent)
        return agent

    async def stop(self) -> None:
        """Stop every agent still running."""
        for agent in self.started:
            if agent.top is not None and agent.top.running:
                await agent.stop()


async def sleep(seconds: float) -> None:
    """Let the reactor run for ``seconds``."""
    await deferLater(reactor, seconds, lambda: None)


async def eventually(fetch: Any, accept: Any, timeout: float = 10.0, interval: float = 0.05,
                     what: str = "") -> Any:
    """Call the async ``fetch`` until ``accept(value)`` is true; :returns: that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} never met; last value: {value!r}")
        await sleep(interval)


async def host_status(engine: Engine, host_id: Any, status: str, timeout: float = 10.0) -> Any:
    """Wait until the store has the host in ``status``; :returns: the ``Host``."""
    return await eventually(lambda: engine.get_host(host_id),
                            lambda h: h.dynamic.status == status, timeout,
                            what=f"host {host_id} {status}")


async def vm_status(engine: Engine, vm_id: Any, status: str, timeout: float = 10.0) -> Any:
    """Wait until the store has the VM in ``status``; :returns: the ``Vm``."""
    return await eventually(lambda: engine.get_vm(vm_id),
                            lambda v: v.dynamic.status == status, timeout,
                            what=f"VM {vm_id} {status}")


async def job_done(engine: Engine, job_id: Any, timeout: float = 15.0) -> Any:
    """Wait until a job is final; :returns: the ``Job``."""
    return await eventually(lambda: engine.get_job(job_id),
                            lambda j: j.status in (JobStatus.SUCCEEDED, JobStatus.FAILED),
                            timeout, what=f"job {job_id} final")


async def add_up_host(engine: Engine, name: str, agent: InProcessAgent) -> Any:
    """Add the agent as host ``name`` and wait until it is Up; :returns: the ``Host``."""
    host = await engine.add_host(name, "127.0.0.1", port=agent.port)
    return await host_status(engine, host.id, "Up")


async def events_of(engine: Engine, event_type: str, **filters: Any) -> list[Any]:
    """:returns: the audit events of one type (newest first)."""
    return await engine.list_events(event_type=event_type, limit=1000, **filters)


# -- fixtures (imported by conftest.py) --------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def engine_agents(tmp_path):
    """Starts in-process agents on demand (``await agents.start()``); stops them after."""
    started = Agents(tmp_path)
    yield started
    await started.stop()


@pytest_twisted.async_yield_fixture
async def engine_run(tmp_path, pg_dsn):
    """A started engine on a fresh database (``engine_run.engine`` is the ``IEngine``); the
    test fails if anything logged a traceback meanwhile."""
    with LoggedFailures() as logged:
        engine = await start_engine(tmp_path, pg_dsn)
        yield engine
        await engine.stop()
    assert not logged.failures, "\n".join(logged.texts())
