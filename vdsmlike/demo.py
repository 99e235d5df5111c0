"""The demo: a whole cluster on this machine — the engine with its embedded PostgreSQL, two
agents with embedded QEMU as two hosts, and a few tiny real guests placed by the scheduler.

``python -m vdsmlike.demo [--state-dir DIR] [--guest-dir DIR] [--listen HOST:PORT] [--guests N]``;
the README's main command runs it after installing everything. Every daemon is a real child
process, started as an administrator would start it; the demo then drives the engine through
its admin API, like any other client. Ctrl-C stops the guests, the agents and the engine.

Each run starts afresh: the state dir is emptied first (it holds only what a previous demo
left there).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.logger import Logger

from . import client as rpc_client
from .agentproc import AgentProcess, EngineProcess, kill_guests_under
from .logs import start_logging

log = Logger()
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Short, because QEMU's monitor sockets live under the embedded roots (108-byte limit).
DEFAULT_STATE_DIR = "/var/tmp/vdsmlike-demo"
GUEST_MEMORY_MIB = 192


@dataclass
class DemoSettings:
    """What the command line chose."""

    state_dir: str
    guest_dir: str
    listen: str
    guests: int


@dataclass
class Demo:
    """The running demo: its daemons, its API connection, and what it created."""

    settings: DemoSettings
    engine: EngineProcess
    agents: list[AgentProcess]
    api: Any = None
    vm_ids: list[str] = field(default_factory=list)


def choose_listen(wanted: str) -> str:
    """``wanted`` when its port is free, else the same host with port 0 (any free port)."""
    host, _, port = wanted.rpartition(":")
    if port == "0":
        return wanted
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            return f"{host}:0"
    return wanted


def api_url(engine_url: str) -> str:
    """The admin API's WebSocket URL from the engine's ``http://`` URL."""
    return "ws" + engine_url[len("http") :].rstrip("/") + "/api"


def guest_spec(name: str, guest_dir: str) -> dict[str, Any]:
    """The engine's VM spec booting the test guest's kernel and initramfs."""
    return {
        "name": name,
        "memory_mib": GUEST_MEMORY_MIB,
        "vcpus": 1,
        "kernel": os.path.join(guest_dir, "vmlinuz"),
        "initrd": os.path.join(guest_dir, "initrd.img"),
        "cmdline": "console=ttyS0 quiet",
        "custom": {"demo": "true"},
        "ha": name.endswith("1"),
    }


async def wait_for(reactor: Any, what: str, check: Any, timeout: float = 120.0) -> Any:
    """Call ``check()`` (a Deferred of a value or None) until it gives a value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.25, lambda: None)


def make_demo(settings: DemoSettings) -> Demo:
    """The demo's daemons (not started): the engine and two agents, each with a fresh token."""
    state = settings.state_dir
    engine = EngineProcess(
        os.path.join(state, "engine"), listen=choose_listen(settings.listen), detach=True
    )
    agents = [
        AgentProcess(
            os.path.join(state, name),
            libvirt_uri=f"qemu:///embed?root={os.path.join(state, name, 'root')}",
            token=secrets.token_urlsafe(24),
            detach=True,
            vm_sample_interval=2.0,
            host_sample_interval=2.0,
            guest_wait_timeout=10.0,
        )
        for name in ("host1", "host2")
    ]
    return Demo(settings, engine, agents)


async def start_cluster(reactor: Any, demo: Demo) -> None:
    """Start the engine and the agents, add the hosts, define and start the guests."""
    engine, agents = demo.engine, demo.agents
    for daemon in [engine, *agents]:
        os.makedirs(daemon.workdir, exist_ok=True)
    print("starting the engine (with its own PostgreSQL) and two agents ...", flush=True)
    engine_url, *agent_urls = await gatherResults(
        [Deferred.fromCoroutine(engine.start(reactor, timeout=120))]
        + [Deferred.fromCoroutine(a.start(reactor, timeout=60)) for a in agents],
        consumeErrors=True,
    )
    demo.api = await rpc_client.connect(reactor, api_url(engine_url))
    await demo.api.call("Auth.login", {"user": "admin", "password": engine.admin_password()})
    for agent, url in zip(agents, agent_urls, strict=True):
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        name = os.path.basename(agent.workdir)
        host = await demo.api.call(
            "Hosts.add", {"name": name, "address": "127.0.0.1", "port": port, "token": agent.token}
        )
        await wait_for(reactor, f"{name} Up", lambda h=host: _status_is(demo, "Hosts", h, "Up"))
        print(f"  host {name} is Up ({url})", flush=True)
    for n in range(1, demo.settings.guests + 1):
        vm = await demo.api.call("VMs.add", guest_spec(f"demo-{n}", demo.settings.guest_dir))
        demo.vm_ids.append(vm["id"])
        await demo.api.call("VMs.start", {"id": vm["id"]})
    for vm_id in demo.vm_ids:
        await wait_for(reactor, "the guests Up", lambda v=vm_id: _status_is(demo, "VMs", v, "Up"))


async def _status_is(demo: Demo, kind: str, entity: dict, status: str) -> dict | None:
    got = await demo.api.call(
        f"{kind}.get", {"id": entity if isinstance(entity, str) else entity["id"]}
    )
    return got if got["status"] == status else None


async def describe(demo: Demo) -> str:
    """What to tell the user once everything is Up."""
    engine_url = demo.engine.url()
    password_file = os.path.join(demo.engine.state_dir, "admin-password")
    vms = [await demo.api.call("VMs.get", {"id": vm_id}) for vm_id in demo.vm_ids]
    hosts = {h["id"]: h["name"] for h in await demo.api.call("Hosts.list", {})}
    placed = "\n".join(
        f"  {vm['name']:8} {vm['id']}  Up on {hosts.get(vm['run_on_host_id'], '?')}" for vm in vms
    )
    client = f"vdsmlike-client --url {api_url(engine_url)} --user admin --password-file"
    first = vms[0]
    serial = os.path.join(
        _agent_of(demo, hosts.get(first["run_on_host_id"])).state_dir,
        "serial",
        f"{first['id']}.log",
    )
    return f"""
vdsmlike demo cluster is running.

  engine      {engine_url}        (web console; admin API at {api_url(engine_url)})
  user        admin
  password    {demo.engine.admin_password()}   (also in {password_file})
  hosts       host1, host2 (agents with embedded QEMU, TCG guests)

The scheduler placed {len(vms)} real guests ({GUEST_MEMORY_MIB} MiB each; demo-1 is HA):
{placed}

Try, in another shell:
  . {TOP}/.venv/bin/activate
  alias vl='{client} {password_file}'
  vl Hosts.list
  vl VMs.list
  vl VMs.stop id={demo.vm_ids[-1]}       # then VMs.start it again
  vl VMs.add name=big memory_mib=1000000
  vl VMs.start id=<its id>                # refused: the scheduler says why, per host
  vl Events.list limit=20
  vl --events '|engine|*'                 # every change, live
  tail -f {serial}   # {first["name"]}'s serial console

Logs: {demo.engine.log_path}, {demo.agents[0].log_path}, {demo.agents[1].log_path}
Ctrl-C stops the guests, the agents and the engine.""".rstrip()


def _agent_of(demo: Demo, host_name: str | None) -> AgentProcess:
    """The agent process of the host named ``host_name`` (the first one if unknown)."""
    by_name = {os.path.basename(a.workdir): a for a in demo.agents}
    return by_name.get(host_name or "", demo.agents[0])


async def stop_cluster(reactor: Any, demo: Demo) -> None:
    """Stop the guests through the engine, then the agents, then the engine (and PostgreSQL)."""
    if demo.api is not None:
        try:
            for vm_id in demo.vm_ids:
                await demo.api.call("VMs.stop", {"id": vm_id}, timeout=30)
            for vm_id in demo.vm_ids:
                await wait_for(
                    reactor,
                    "the guests Down",
                    lambda v=vm_id: _status_is(demo, "VMs", v, "Down"),
                    timeout=30,
                )
        except Exception as e:  # the engine may be gone; the agents' guests are killed below
            log.warn("stopping the guests through the engine: {error}", error=e)
        await demo.api.close()
    for agent in demo.agents:
        if agent.running():
            await agent.stop(reactor)
    if demo.engine.running():
        await demo.engine.stop(reactor, timeout=60)
    _kill_leftover_guests(demo.settings.state_dir)


def _kill_leftover_guests(state_dir: str) -> None:
    """SIGKILL any QEMU still running from an embedded root of ours (only after a failure)."""
    for pid in kill_guests_under(state_dir):
        log.warn("killed a leftover guest (pid {pid})", pid=pid)


async def run_demo(reactor: Any, settings: DemoSettings) -> None:
    """Start everything, say what to try, and stop it all when the reactor stops."""
    _kill_leftover_guests(settings.state_dir)
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    demo = make_demo(settings)

    async def cleanup() -> None:
        print("\nstopping the guests, the agents and the engine ...", flush=True)
        await stop_cluster(reactor, demo)
        print("stopped.", flush=True)

    reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(cleanup()))
    await start_cluster(reactor, demo)
    print(await describe(demo), flush=True)


def parse_args(argv: list[str] | None) -> DemoSettings:
    """The command line."""
    p = argparse.ArgumentParser(prog="vdsmlike-demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"emptied, then holds every daemon's state (default {DEFAULT_STATE_DIR})",
    )
    p.add_argument("--guest-dir", default=os.path.join(TOP, "contrib", "guest-image", "out"))
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        help="the engine's address (another free port when this one is taken)",
    )
    p.add_argument("--guests", type=int, default=3)
    args = p.parse_args(argv)
    return DemoSettings(
        os.path.abspath(args.state_dir),
        os.path.abspath(args.guest_dir),
        args.listen,
        max(args.guests, 1),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C. :returns: the exit code."""
    settings = parse_args(argv)
    for needed in ("vmlinuz", "initrd.img"):
        if not os.path.exists(os.path.join(settings.guest_dir, needed)):
            print(
                f"vdsmlike-demo: no guest image in {settings.guest_dir} "
                "(contrib/bootstrap.sh install builds it)",
                file=sys.stderr,
            )
            return 2
    start_logging("warn")
    from twisted.internet import reactor

    status = {"code": 0}
    d = Deferred.fromCoroutine(run_demo(reactor, settings))

    def failed(failure: Any) -> None:
        print(f"vdsmlike-demo: {failure.getErrorMessage()}", file=sys.stderr)
        status["code"] = 1
        reactor.stop()

    d.addErrback(failed)
    reactor.run()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
