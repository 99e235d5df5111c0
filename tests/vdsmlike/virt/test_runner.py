"""ThreadPoolRunner (per-key serialized thread pool) and SynchronousRunner."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from contracts.hypervisor import failure_of
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from zope.interface.verify import verifyObject

from vdsmlike.interfaces import IBlockingRunner
from vdsmlike.virt.runner import RunnerStopped, SynchronousRunner, ThreadPoolRunner


@pytest_twisted.async_yield_fixture
async def runner() -> AsyncIterator[ThreadPoolRunner]:
    runner = ThreadPoolRunner(reactor, max_threads=4, name="test-runner")
    runner.start()
    yield runner
    await runner.stop()


def test_provides_interface() -> None:
    """Both runners provide IBlockingRunner."""
    assert verifyObject(IBlockingRunner, ThreadPoolRunner(reactor))
    assert verifyObject(IBlockingRunner, SynchronousRunner())


@pytest_twisted.ensureDeferred
async def test_same_key_serialized(runner: ThreadPoolRunner) -> None:
    """Calls with one key run one at a time, in submission order."""
    log: list[tuple[str, int]] = []

    def work(n: int) -> int:
        log.append(("start", n))
        time.sleep(0.01)
        log.append(("end", n))
        return n

    results = await gatherResults([runner.run("vm", work, n) for n in range(6)])
    assert results == list(range(6))
    assert log == [(edge, n) for n in range(6) for edge in ("start", "end")]


@pytest_twisted.ensureDeferred
async def test_different_keys_concurrent(runner: ThreadPoolRunner) -> None:
    """Calls with different keys (or key None) run at the same time."""
    barrier = threading.Barrier(3, timeout=5)
    await gatherResults([runner.run(key, barrier.wait) for key in ("a", "b", None)])


@pytest_twisted.ensureDeferred
async def test_failure_does_not_break_chain(runner: ThreadPoolRunner) -> None:
    """A call that raises fails its Deferred; the next call with that key still runs."""

    def boom() -> None:
        raise ValueError("boom")

    failed = runner.run("vm", boom)
    after = runner.run("vm", lambda: "next")
    await failure_of(failed, ValueError)
    assert await after == "next"


@pytest_twisted.ensureDeferred
async def test_idle_keys_forgotten(runner: ThreadPoolRunner) -> None:
    """Once their calls finished, keys leave no state behind."""
    await gatherResults([runner.run(f"vm-{n}", lambda: None) for n in range(1000)])
    assert runner.pending_keys == 0


@pytest_twisted.ensureDeferred
async def test_results_in_reactor_thread(runner: ThreadPoolRunner) -> None:
    """fn runs on a worker thread and its Deferred fires in the reactor thread."""
    worker = await runner.run("vm", threading.current_thread)
    assert worker is not threading.current_thread()
    assert threading.current_thread() is threading.main_thread()


@pytest_twisted.ensureDeferred
async def test_run_after_stop() -> None:
    """A stopped runner refuses work with RunnerStopped."""
    runner = ThreadPoolRunner(reactor)
    runner.start()
    await runner.stop()
    await failure_of(runner.run("vm", lambda: None), RunnerStopped)


def test_synchronous_runner() -> None:
    """SynchronousRunner calls inline and returns fired Deferreds, failures included."""
    runner = SynchronousRunner()
    results: list[object] = []
    runner.run("vm", lambda x: x * 2, 21).addCallback(results.append)
    runner.run("vm", lambda: 1 / 0).addErrback(lambda f: results.append(f.type))
    assert results == [42, ZeroDivisionError]


@pytest.mark.parametrize("key", [None, "vm"])
def test_not_started(key: object) -> None:
    """A runner that was never started refuses work."""
    errors: list[object] = []
    ThreadPoolRunner(reactor).run(key, lambda: None).addErrback(lambda f: errors.append(f.type))
    assert errors == [RunnerStopped]
