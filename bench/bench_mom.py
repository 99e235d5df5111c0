"""MOM benchmarks, each against a baseline measured in the same run.

1. One policy cycle of the embedded MOM with the default policy set (guest collection through
   the agent's own statistics, evaluation, controller decisions and calls) for 10, 100 and 1,000
   guests on the libvirt test driver, vs. the raw libvirt bulk sample of as many domains.
2. Evaluator speed in forms per second, vs. CPython evaluating the same arithmetic compiled.

``python -m bench.bench_mom [--guests 10,100,1000] [--cycles N]``; prints a table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.internet.threads import blockingCallFromThread, deferToThread

from bench.bench_vm import _pct, direct_bulk
from mom.evaluator import Evaluator
from mom.parser import parse
from mom.service import MomConfig, PolicyEngine
from vdsmlike.config import AgentConfig, finish
from vdsmlike.momlink import AgentMomLink
from vdsmlike.service import make_service

NODE = """<node><cpu><nodes>1</nodes><sockets>4</sockets><cores>8</cores><threads>1</threads>
<active>32</active><mhz>2400</mhz><model>x86_64</model></cpu><memory>{kib}</memory></node>"""
FORM = "(+ (* 2 3) (max 1 (- 7 2) (/ 9 3)))"


async def policy_cycles(reactor, guests: int, cycles: int, tmp: str) -> list[float]:
    """Seconds per full MOM cycle with ``guests`` Up VMs on a private test-driver host."""
    node = Path(tmp) / f"node-{guests}.xml"
    node.write_text(NODE.format(kib=(guests + 16) * 65536))
    config = finish(
        replace(
            AgentConfig(),
            listen_port=0,
            state_dir=f"{tmp}/state-{guests}",
            libvirt_uri=f"test://{node}",
            guest_wait_timeout=0,
            vm_sample_interval=3600,
            host_sample_interval=3600,
            mom_enabled=False,
            ping_interval=0,
        )
    )
    top = make_service(config, reactor)
    top.startService()
    await top.core.ready
    try:
        for _ in range(guests):
            vm_id = str(uuid.uuid4())
            params = {"vmId": vm_id, "vmName": "m-" + vm_id[:8], "memSize": 64}
            await top.container.create(vm_id, params)
        await top.vm_monitor.sample()  # one bulk sample, as the agent takes them
        link = AgentMomLink(top.container, top.vm_monitor, top.tuning)
        engine = PolicyEngine(
            link, lambda f: blockingCallFromThread(reactor, f), MomConfig(ksm_root=f"{tmp}/no")
        )
        engine.store.load_dir(MomConfig().policy_dir)
        await deferToThread(engine.collect_host)
        times = []
        for _ in range(cycles):
            start = time.perf_counter()
            await deferToThread(engine.collect_guests)
            result = await deferToThread(engine.cycle)
            times.append(time.perf_counter() - start)
            assert result.evaluated, result.errors
        return times
    finally:
        for vm in list(top.container.vms()):
            await top.container.destroy(vm.vm_id)
        await top.stopService()


def evaluator_rate(forms: int) -> tuple[float, float]:
    """Forms per second of our evaluator and of CPython on the same arithmetic."""
    program = parse("\n".join([FORM] * forms))
    evaluator = Evaluator()
    start = time.perf_counter()
    evaluator.eval_forms(program)
    ours = forms / (time.perf_counter() - start)
    code = compile("(2 * 3) + max(1, 7 - 2, 9 / 3)", "<form>", "eval")
    start = time.perf_counter()
    for _ in range(forms):
        eval(code)  # noqa: S307 - the baseline is exactly CPython's own evaluation
    return ours, forms / (time.perf_counter() - start)


async def main(reactor, args) -> None:
    lines = [f"{'benchmark':<46} {'p50':>9} {'p99':>9} {'baseline':>10} {'ratio':>8}"]
    with tempfile.TemporaryDirectory(prefix="vla-bm-") as tmp:
        for guests in args.guests:
            ours = await policy_cycles(reactor, guests, args.cycles, tmp)
            base = direct_bulk(guests, args.cycles)
            p50, p99, b50 = (x * 1000 for x in (_pct(ours, 0.5), _pct(ours, 0.99), _pct(base, 0.5)))
            name = f"MOM cycle, default policies, {guests} guests"
            lines.append(f"{name:<46} {p50:>9.2f} {p99:>9.2f} {b50:>10.2f} {p50 / b50:>7.1f}x (ms)")
    ours, base = evaluator_rate(args.forms)
    name = f"evaluator, forms/s ({args.forms} forms)"
    lines.append(f"{name:<46} {ours:>9.0f} {'':>9} {base:>10.0f} {base / ours:>7.1f}x slower")
    print("\n".join(lines))


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_mom")
    p.add_argument(
        "--guests", type=lambda s: [int(n) for n in s.split(",")], default=[10, 100, 1000]
    )
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--forms", type=int, default=20000)
    args = p.parse_args(argv)
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args)))


if __name__ == "__main__":
    cli()
