"""The demo: an agent with embedded QEMU on this machine, running two tiny real guests.

``python -m vdsmlike.demo [--state-dir DIR] [--guest-dir DIR]``; the README's main command runs
it after installing everything. Ctrl-C destroys the demo guests and stops the agent.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from dataclasses import replace

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from . import client as agent_client
from .config import AgentConfig, finish
from .logs import start_logging

log = Logger()
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def guest_params(guest_dir: str, name: str) -> dict:
    """Legacy ``VM.create`` params booting the test guest kernel and initramfs."""
    return {
        "vmId": str(uuid.uuid4()),
        "vmName": name,
        "memSize": 192,
        "smp": 1,
        "kernel": os.path.join(guest_dir, "vmlinuz"),
        "initrd": os.path.join(guest_dir, "initrd.img"),
        "kernelArgs": "console=ttyS0 quiet",
        "custom": {"demo": "true"},
    }


async def run_demo(reactor, config: AgentConfig, guest_dir: str) -> None:
    """Start the agent, create the guests, and print what to try."""
    from .service import make_service

    top = make_service(config, reactor)
    top.startService()
    url = await top.listener.url
    await top.core.ready
    client = await agent_client.connect(reactor, url)
    created = []
    for name in ("demo-1", "demo-2"):
        params = guest_params(guest_dir, name)
        await client.call("VM.create", {"vmParams": params})
        created.append(params["vmId"])
    serial = os.path.join(config.serial_dir, f"{created[0]}.log")
    print(
        f"""
vdsmlike agent is running at {url}
Two real guests are booting under QEMU (TCG): {", ".join(created)}

Try, in another shell (. .venv/bin/activate first):
  vdsmlike-client --url {url} Host.getVMList onlyUUID=false
  vdsmlike-client --url {url} Host.getAllVmStats
  vdsmlike-client --url {url} VM.pause vmID={created[0]}
  vdsmlike-client --url {url} --events
  tail -f {serial}        # the guest's serial console

Ctrl-C destroys the demo guests and stops the agent.""",
        flush=True,
    )
    stopped: Deferred = Deferred()

    async def cleanup() -> None:
        for vm_id in created:
            try:
                await client.call("VM.destroy", [vm_id])
            except Exception as e:  # the guest may be gone already; say so and go on
                log.warn("destroying {vm_id}: {error}", vm_id=vm_id, error=e)
        await client.close()
        await top.stopService()

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(cleanup()))
    await stopped


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C."""
    p = argparse.ArgumentParser(prog="vdsmlike-demo")
    p.add_argument("--state-dir", default=os.path.join(TOP, "var", "demo"))
    p.add_argument("--guest-dir", default=os.path.join(TOP, "contrib", "guest-image", "out"))
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args(argv)
    from .config import parse_listen

    host, port = parse_listen(args.listen)
    config = finish(
        replace(
            AgentConfig(),
            listen_host=host,
            listen_port=port,
            state_dir=os.path.abspath(args.state_dir),
            vm_sample_interval=5.0,
            host_sample_interval=5.0,
            guest_wait_timeout=10.0,
        )
    )
    start_logging()
    from twisted.internet import reactor

    d = Deferred.fromCoroutine(run_demo(reactor, config, os.path.abspath(args.guest_dir)))

    def failed(failure):
        log.failure("demo failed", failure)
        reactor.stop()

    d.addErrback(failed)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
