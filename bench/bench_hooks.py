"""Hook benchmark: the cost of the ``before_vm_start`` hook point around a VM create, in one run.

Each row runs the same operation — build a domain from ``VM.create``-like params
(:func:`vdsmlike.vm.domxml.build_domain`), run ``before_vm_start`` over its XML, create the domain
on a :class:`~vdsmlike.virt.memory.MemoryHypervisor` with the hooked XML, destroy it — with
different hooks installed:

- ``operation alone``: :class:`hooks.runner.NullHookRunner` (no hook runner work at all);
- ``0 hooks``: the real :class:`hooks.runner.HookRunner` over an empty hooks dir;
- ``1 script`` / ``10 scripts``: trivial ``#!/bin/sh`` scripts that ``exit 0`` (real processes);
- ``10 plugins``: trivial in-process plugins that return the DOM they were given (so the runner
  parses and re-serializes the XML).

Each row runs for ``--seconds`` (at least 3 runs, at most ``--max-runs``); the table shows ms per
operation (mean, p50, p95) and the ratio of the mean to ``operation alone``.

``python -m bench.bench_hooks [--seconds S] [--max-runs N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from stevedore.extension import Extension
from twisted.internet.task import react

from hooks.plugins import PluginSet
from hooks.runner import HookRunner, NullHookRunner
from vdsmlike.virt.memory import MemoryHypervisor
from vdsmlike.vm.domxml import build_domain

VM_ID = "2f1d7d5e-8c1b-4c8e-9a52-7f5b0c3d4e61"
PARAMS = {"vmId": VM_ID, "vmName": "bench", "memSize": 256, "smp": "1"}
TRIVIAL_SCRIPT = "#!/bin/sh\nexit 0\n"


class TrivialPlugin:
    """A plugin at ``before_vm_start`` that hands the DOM back unchanged."""

    points = frozenset({"before_vm_start"})

    def __call__(self, point: str, payload: Any, context: Any) -> Any:
        return payload


def script_runner(reactor: Any, root: str, count: int) -> Any | None:
    """:returns: a ScriptHookRunner over ``count`` trivial scripts, or None if unavailable."""
    try:
        from hooks.scripts import ScriptHookRunner
    except ImportError:
        return None
    hooks_dir = os.path.join(root, f"hooks{count}")
    point_dir = os.path.join(hooks_dir, "before_vm_start")
    os.makedirs(point_dir)
    for i in range(count):
        path = os.path.join(point_dir, f"{i:02d}_noop")
        with open(path, "w") as script:
            script.write(TRIVIAL_SCRIPT)
        os.chmod(path, 0o755)
    return ScriptHookRunner(hooks_dir, reactor=reactor, runtime_dir=os.path.join(root, "run"))


def runners(reactor: Any, root: str) -> list[tuple[str, Any]]:
    """:returns: ``(row label, hook runner or None)`` for every row, baseline first."""
    plugins = PluginSet.from_extensions(
        [Extension(f"noop{i}", None, TrivialPlugin, TrivialPlugin()) for i in range(10)]
    )
    empty = script_runner(reactor, root, 0)
    rows: list[tuple[str, Any]] = [("operation alone", NullHookRunner())]
    rows.append(("0 hooks", empty and HookRunner(empty, PluginSet())))
    for count, label in ((1, "1 script"), (10, "10 scripts")):
        scripts = script_runner(reactor, root, count)
        rows.append((label, scripts and HookRunner(scripts, PluginSet())))
    rows.append(("10 plugins", empty and HookRunner(empty, plugins)))
    return rows


async def operation(runner: Any, hypervisor: MemoryHypervisor) -> None:
    """One VM create with its ``before_vm_start`` hooks, then destroy."""
    xml = build_domain(PARAMS)
    result = await runner.run("before_vm_start", xml, vm_id=VM_ID, custom={"bench": "1"})
    await hypervisor.create(result.payload, bool(result.launch_flags))
    await hypervisor.destroy(VM_ID, False)


async def measure(run_once: Callable, seconds: float, max_runs: int) -> list[float]:
    """:returns: per-run durations in ms: at least 3 runs, for ``seconds`` or ``max_runs``."""
    await run_once()  # warm-up
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 3 or (time.perf_counter() < deadline and len(samples) < max_runs):
        start = time.perf_counter()
        await run_once()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def row(label: str, samples: list[float] | None, baseline: float | None) -> str:
    """:returns: one table line."""
    if samples is None:
        return f"{label:<16} {'n/a (hooks.scripts missing)':>40}"
    mean = statistics.fmean(samples)
    p50 = statistics.median(samples)
    p95 = sorted(samples)[int(0.95 * (len(samples) - 1))]
    ratio = mean / baseline if baseline else 1.0
    return f"{label:<16} {len(samples):>6} {mean:>10.3f} {p50:>10.3f} {p95:>10.3f} {ratio:>9.1f}x"


async def bench(reactor: Any, seconds: float, max_runs: int) -> None:
    """Measure every row and print the table."""
    hypervisor = MemoryHypervisor(reactor)
    await hypervisor.open()
    print(f"{'row':<16} {'runs':>6} {'mean ms':>10} {'p50 ms':>10} {'p95 ms':>10} {'ratio':>10}")
    print("-" * 67)
    baseline = None
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as root:
        for label, runner in runners(reactor, root):
            if runner is None:
                print(row(label, None, baseline), flush=True)
                continue
            samples = await measure(lambda r=runner: operation(r, hypervisor), seconds, max_runs)
            baseline = baseline or statistics.fmean(samples)
            print(row(label, samples, baseline), flush=True)
    await hypervisor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row")
    parser.add_argument("--max-runs", type=int, default=2000, help="runs per row at most")
    args = parser.parse_args()
    react(lambda reactor: _deferred(bench(reactor, args.seconds, args.max_runs)))


def _deferred(coro: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coro)


if __name__ == "__main__":
    main()
