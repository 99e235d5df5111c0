"""Several simulated hosts in one process: N agent service trees on libvirt's test driver.

``python -m bench.multiagent --count N --dir DIR [--vm-interval S] [--host-interval S]`` starts
N production agents (``vdsmlike.service.make_service``), each on 127.0.0.1:0 with its own
``test:///<DIR>/aK/node.xml`` host (16 GiB, 4 CPUs) and a guest wait of 0 s (Up as soon as
launched), writes their URLs one per line to ``DIR/urls.txt`` once all listen, and runs until
SIGTERM. Used by ``bench_engine`` to simulate 100 hosts in a handful of processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from twisted.internet.defer import Deferred, gatherResults

from vdsmlike.config import AgentConfig, finish
from vdsmlike.service import make_service

NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>2</sockets><cores>2</cores><threads>1</threads>
       <active>4</active><mhz>2400</mhz><model>x86_64</model></cpu>
  <memory>16777216</memory>
</node>
"""


def agent_config(directory: str, *, vm_interval: float, host_interval: float) -> AgentConfig:
    """One simulated host's configuration in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    node = os.path.join(directory, "node.xml")
    with open(node, "w", encoding="utf-8") as f:
        f.write(NODE_XML)
    return finish(replace(
        AgentConfig(), listen_host="127.0.0.1", listen_port=0,
        state_dir=os.path.join(directory, "state"), libvirt_uri=f"test://{node}",
        guest_wait_timeout=0.0, vm_sample_interval=vm_interval,
        host_sample_interval=host_interval, ping_interval=0,
    ))


def main(argv: list[str] | None = None) -> int:
    """Start the agents and run until SIGTERM. :returns: the exit code."""
    p = argparse.ArgumentParser(prog="multiagent")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--vm-interval", type=float, default=5.0)
    p.add_argument("--host-interval", type=float, default=5.0)
    args = p.parse_args(argv)
    from twisted.internet import reactor

    tops = [make_service(agent_config(os.path.join(args.dir, f"a{i}"),
                                      vm_interval=args.vm_interval,
                                      host_interval=args.host_interval), reactor)
            for i in range(args.count)]

    def write(urls: list[str]) -> None:
        path = os.path.join(args.dir, "urls.txt")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(urls) + "\n")
        os.rename(path + ".tmp", path)

    def start() -> None:
        for top in tops:
            top.startService()
        ready: list[Deferred] = [top.listener.url for top in tops]
        ready += [top.core.ready.addCallback(lambda _: None) for top in tops]
        gatherResults(ready).addCallback(lambda urls: write(urls[: len(tops)]))

    def stop() -> Deferred:
        return gatherResults([top.stopService() for top in tops])

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
