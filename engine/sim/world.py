"""The simulated world: hosts with power, network and agents, their VMs, fence devices, timers.

The world is what the engine cannot see directly. It answers the engine's link heartbeats (or
lets them time out), lists each host's VMs with every answer, carries out the cluster manager's
commands with durations (a VM start takes ``vm_start`` seconds, a power fence ``power_fence``
...), and reports outcomes back as :mod:`engine.decide.facts`, but only along paths that
work: a fact that travels through a host's agent is lost while the host is powered off, cut off
or its agent is down, and the outcome of a command an engine incarnation gave is lost if that
engine has restarted since.

Physical truth lives here: each host's set of VM processes. Two hosts may both hold a process of
one VM (that is exactly what a wrong restart would do), and :meth:`World.violations` reports it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.decide import commands as c
from engine.decide import facts as f
from engine.decide.clustersnapshot import ClusterSnapshot, StoredHost, StoredVm
from engine.decide.clusterstate import ExitReason
from engine.decide.hoststate import HostEvent
from engine.store.rows import VmStatus

from .log import SimLog
from .scenario import Scenario, Step

#: What a host's agent lists for each kind of VM process.
_LISTED = {
    "starting": VmStatus.WAIT_FOR_LAUNCH,
    "up": VmStatus.UP,
    "migrating": VmStatus.MIGRATING_FROM,
}


@dataclass
class SimHost:
    """
    One simulated host.

    :ivar agent: its agent is meant to run (it runs once booted, from ``up_at``).
    :ivar booted_at: its OS answers from then on (while powered).
    :ivar incarnation: grows with each boot and agent restart (a link to an old one is dead).
    :ivar vms: VM name → its process here: ``starting``, ``up`` or ``migrating`` (leaving).
    :ivar fence: its power management: ``ok``, ``fails`` or ``unknown``.
    :ivar soft: ``ok`` or ``fails``: soft fencing refused even when reachable.
    :ivar load: its own CPU load, percent (its VMs' loads add to it: :meth:`World.cpu_load`).
    """

    name: str
    pm: bool
    power: bool = True
    network: bool = True
    agent: bool = True
    up_at: float = 0.0
    booted_at: float = 0.0
    incarnation: int = 1
    vms: dict[str, str] = field(default_factory=dict)
    fence: str = "ok"
    soft: str = "ok"
    starts_fail: bool = False
    load: float = 0.0

    def booted(self, now: float) -> bool:
        """:returns: whether it is powered and done booting (its OS answers)."""
        return self.power and now >= self.booted_at

    def agent_running(self, now: float) -> bool:
        """:returns: whether its agent runs now."""
        return self.booted(now) and self.agent and now >= self.up_at

    def reachable(self, now: float) -> bool:
        """:returns: whether the engine can talk to its agent now."""
        return self.network and self.agent_running(now)


class World:
    """
    The simulated hardware of one scenario.

    :ivar epoch: the engine incarnation commands come from (outcomes of older ones are lost).
    """

    def __init__(self, scenario: Scenario, log: SimLog) -> None:
        self.scenario = scenario
        self.times = scenario.times
        self.log = log
        self.hosts: dict[str, SimHost] = {}
        for spec in scenario.hosts:
            host = SimHost(spec.name, spec.pm, spec.power, spec.network, spec.agent, load=spec.load)
            self.hosts[spec.name] = host
        self.cpus = {spec.name: max(spec.cpus, 1) for spec in scenario.hosts}
        self.vcpus = {vm.name: vm.cpus for vm in scenario.vms}
        #: VM name → its CPU usage, percent of its own vCPUs.
        self.vm_load = {vm.name: vm.load for vm in scenario.vms}
        for vm in scenario.vms:
            if vm.host is not None and self.hosts[vm.host].power:
                self.hosts[vm.host].vms[vm.name] = "up"
        self.link: dict[str, int | None] = {
            h.name: h.incarnation if h.reachable(0) else None for h in self.hosts.values()
        }
        self.unmigratable: set[str] = set()
        self.epoch = 0
        self._facts: list[f.Fact] = []
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0
        self._violating: set[str] = set()

    # -- the engine's view at the start ----------------------------------------------------------

    def initial_snapshot(self) -> ClusterSnapshot:
        """:returns: what the engine's store holds at time 0."""
        hosts = tuple(
            StoredHost(h.name, h.name, h.status, h.cpus, h.memory, h.reserved, h.pm)
            for h in self.scenario.hosts
        )
        vms = tuple(
            StoredVm(
                v.name,
                v.name,
                v.memory,
                v.cpus,
                v.ha,
                v.priority,
                v.pinned,
                str(VmStatus.UP if v.host else VmStatus.DOWN),
                v.host,
            )
            for v in self.scenario.vms
        )
        return ClusterSnapshot(hosts, vms)

    # -- time ----------------------------------------------------------------------------------

    def after(self, now: float, delay: float, action: Callable[[float], None]) -> None:
        """Run ``action(t)`` ``delay`` seconds from ``now`` (ties keep their order)."""
        self._seq += 1
        heapq.heappush(self._timers, (now + delay, self._seq, action))

    def advance(self, now: float) -> None:
        """Run every action that is due by ``now``."""
        while self._timers and self._timers[0][0] <= now:
            _, _, action = heapq.heappop(self._timers)
            action(now)

    def take_facts(self) -> list[f.Fact]:
        """:returns: the facts produced since the last call (the engine's inbox)."""
        out, self._facts = self._facts, []
        return out

    def _tell(
        self, fact: f.Fact, now: float, *, via: SimHost | None = None, epoch: int | None = None
    ) -> None:
        if via is not None and not via.reachable(now):
            return  # the agent that would say it cannot be reached
        if epoch is not None and epoch != self.epoch:
            return  # the engine that waited for it has restarted
        self._facts.append(fact)

    def engine_restarted(self) -> None:
        """The engine restarted: its links are new and it forgot what it was waiting for."""
        self.epoch += 1
        self.link = dict.fromkeys(self.hosts)

    # -- liveness ----------------------------------------------------------------------------------

    def heartbeat(self, now: float, timeout: float) -> None:
        """The engine pings every host (or tries to connect); answers carry the VM list."""
        for host in sorted(self.hosts.values(), key=lambda h: h.name):
            self._ping(host, now, timeout)

    def _ping(self, host: SimHost, now: float, timeout: float) -> None:
        name = host.name
        if host.reachable(now):
            if self.link[name] == host.incarnation:
                self._facts.append(f.HostSeen(name, HostEvent.HEARTBEAT_OK))
            else:
                self.link[name] = host.incarnation
                self._facts.append(f.HostSeen(name, HostEvent.CONNECTED))
            listed = {vm: _LISTED[p] for vm, p in sorted(host.vms.items())}
            self._facts.append(f.HostVms(name, listed))
            self._facts.append(f.HostLoad(name, self.cpu_load(host)))
            for vm, process in sorted(host.vms.items()):
                if process != "starting":
                    self._facts.append(f.VmLoad(name, vm, self.vm_load.get(vm, 0.0)))
        elif host.booted(now) and host.network and self.link[name] is None:
            self._facts.append(f.HostSeen(name, HostEvent.CONNECT_FAILED, "connection refused"))
        else:
            linked = self.link[name] is not None
            event = HostEvent.HEARTBEAT_MISSED if linked else HostEvent.CONNECT_FAILED
            detail = "" if linked else "connection timed out"
            epoch = self.epoch
            self.after(
                now, timeout, lambda t: self._tell(f.HostSeen(name, event, detail), t, epoch=epoch)
            )

    def cpu_load(self, host: SimHost) -> float:
        """:returns: the host's CPU load: its own plus each running VM's share, at most 100."""
        shares = sum(
            self.vm_load.get(vm, 0.0) * self.vcpus.get(vm, 1) / self.cpus[host.name]
            for vm, process in host.vms.items()
            if process != "starting"
        )
        return round(min(100.0, host.load + shares), 1)

    # -- physical effects ------------------------------------------------------------------------

    def power_off(self, now: float, host: SimHost, why: str) -> None:
        """Cut ``host``'s power: its VMs die."""
        host.power = False
        killed = sorted(host.vms)
        host.vms.clear()
        self.log.sim(
            now, host.name, f"{why}" + (f"; VMs killed: {', '.join(killed)}" if killed else "")
        )

    def power_on(self, now: float, host: SimHost, why: str) -> None:
        """Switch ``host`` on: it boots, its agent runs ``boot`` seconds later."""
        if host.power:
            return
        host.power = True
        host.agent = True  # a boot starts the agent's service
        host.incarnation += 1
        host.up_at = host.booted_at = now + self.times.boot
        self.log.sim(now, host.name, f"{why}; booting, agent up at {host.up_at:g}")

    def violations(self, now: float) -> None:
        """Log each VM that has processes on more than one powered host (once per episode)."""
        where: dict[str, list[str]] = {}
        for host in sorted(self.hosts.values(), key=lambda h: h.name):
            if host.power:
                for vm in host.vms:
                    where.setdefault(vm, []).append(host.name)
        doubled = {vm for vm, hosts in where.items() if len(hosts) > 1}
        for vm in sorted(doubled - self._violating):
            self.log.violation(now, vm, where[vm])
        self._violating = doubled

    # -- scenario commands -----------------------------------------------------------------------

    def apply(self, now: float, step: Step) -> None:
        """Carry out a command about the world (admin requests are the runner's)."""
        words = step.words
        if words[0] == "host":
            self._host_command(now, self.hosts[words[1]], words[2], words[3])
        elif words[0] == "fence":
            host = self.hosts[words[1]]
            if words[2] == "soft":
                host.soft = words[3]
            else:
                host.fence = words[2]
        elif words[0] == "vm" and words[2] in ("crash", "shutdown"):
            self._vm_exit(now, words[1], words[2])
        elif words[0] == "vm" and words[2] == "migration":
            (self.unmigratable.add if words[3] == "fails" else self.unmigratable.discard)(words[1])
        elif words[0] == "load" and words[1] == "vm":
            self.vm_load[words[2]] = float(words[4])
        elif words[0] == "load":
            self.hosts[words[1]].load = float(words[3])

    def _host_command(self, now: float, host: SimHost, what: str, value: str) -> None:
        if what == "power":
            if value == "off":
                self.power_off(now, host, "power cut")
            else:
                self.power_on(now, host, "power restored")
        elif what == "network":
            host.network = value == "on"
        elif what == "agent":
            self._agent(now, host, value == "on")
        elif what == "starts":
            host.starts_fail = value == "fail"

    def _agent(self, now: float, host: SimHost, on: bool) -> None:
        if on == host.agent:
            return
        if not on and host.reachable(now) and self.link[host.name] is not None:
            self.link[host.name] = None  # the kernel resets the engine's connection at once
            self._facts.append(
                f.HostSeen(host.name, HostEvent.LINK_LOST, "connection reset by peer")
            )
        host.agent = on
        if on:
            host.incarnation += 1
            host.up_at = now + self.times.agent_restart

    def _vm_exit(self, now: float, vm: str, how: str) -> None:
        for host in sorted(self.hosts.values(), key=lambda h: h.name):
            if host.vms.get(vm) != "up":
                continue
            del host.vms[vm]
            if how == "crash":
                exit, detail = ExitReason.CRASHED, "QEMU process died"
            else:
                exit, detail = ExitReason.USER, "the guest powered itself off"
            self.log.sim(now, f"{host.name}/{vm}", detail)
            self._tell(f.VmSeen(host.name, vm, VmStatus.DOWN, exit, detail), now, via=host)

    # -- the engine's commands -------------------------------------------------------------------

    def execute(self, now: float, command: c.Command) -> None:
        """Carry out one of the cluster manager's commands (records and events need nothing)."""
        if isinstance(command, c.FenceHost):
            if command.method == c.SOFT:
                self._soft_fence(now, command)
            else:
                self._power_fence(now, command)
        elif isinstance(command, c.ConfirmPowerStatus):
            self._power_status(now, self.hosts[command.host])
        elif isinstance(command, c.StartVm):
            self._start(now, command.vm, self.hosts[command.host])
        elif isinstance(command, c.StopVm):
            self._stop(now, command.vm, self.hosts[command.host])
        elif isinstance(command, c.MigrateVm):
            self._migrate(now, command.vm, self.hosts[command.src], self.hosts[command.dst])
        elif isinstance(command, c.PowerHost):
            host = self.hosts[command.host]
            if command.action == c.POWER_OFF_HOST:
                self.power_off(now, host, "powered off by power saving")
            else:
                self.power_on(now, host, "powered on by power saving")

    def _soft_fence(self, now: float, command: c.FenceHost) -> None:
        host, epoch = self.hosts[command.host], self.epoch

        def done(t: float) -> None:
            if host.booted(t) and host.network and host.soft == "ok":
                host.agent, host.incarnation = True, host.incarnation + 1
                host.up_at = t + self.times.agent_restart
                self.link[host.name] = None
                self.log.sim(t, host.name, "agent restarted by soft fencing")
                outcome = f.FenceDone(host.name, c.SOFT, f.RESTARTED, "agent restarted")
            elif host.booted(t) and host.network:
                outcome = f.FenceDone(host.name, c.SOFT, f.FAILED, "the agent restart failed")
            else:
                outcome = f.FenceDone(host.name, c.SOFT, f.FAILED, "host unreachable: timed out")
            self._tell(outcome, t, epoch=epoch)

        self.after(now, self.times.soft_fence, done)

    def _power_fence(self, now: float, command: c.FenceHost) -> None:
        host, epoch = self.hosts[command.host], self.epoch

        def done(t: float) -> None:
            if not host.pm:
                outcome = f.FenceDone(host.name, c.POWER, f.FAILED, "no power management")
            elif host.fence == "ok":
                if host.power:
                    self.power_off(t, host, "powered off by its fence device")
                detail = "fence device: chassis power is off"
                outcome = f.FenceDone(host.name, c.POWER, f.FENCED, detail)
                if command.power_on_after:
                    self.power_on(t, host, "powered on again by its fence device")
            elif host.fence == "fails":
                outcome = f.FenceDone(host.name, c.POWER, f.FAILED, "fence device does not answer")
            else:
                detail = "fence device cannot tell the power status"
                outcome = f.FenceDone(host.name, c.POWER, f.STATUS_UNKNOWN, detail)
            self._tell(outcome, t, epoch=epoch)

        self.after(now, self.times.power_fence, done)

    def _power_status(self, now: float, host: SimHost) -> None:
        epoch = self.epoch

        def done(t: float) -> None:
            if host.pm and host.fence == "ok":
                status = f.POWER_ON if host.power else f.POWER_OFF
                seen = f.PowerSeen(host.name, status)
            elif host.pm and host.fence == "fails":
                seen = f.PowerSeen(host.name, f.POWER_UNKNOWN, "fence device does not answer")
            else:
                seen = f.PowerSeen(host.name, f.POWER_UNKNOWN, "power status unavailable")
            self._tell(seen, t, epoch=epoch)

        self.after(now, self.times.power_status, done)

    def _start(self, now: float, vm: str, host: SimHost) -> None:
        epoch = self.epoch
        if not host.reachable(now):
            self._tell(
                f.JobDone("start", vm, host.name, False, "host unreachable"), now, epoch=epoch
            )
            return
        if host.starts_fail:
            failed = f.JobDone("start", vm, host.name, False, "QEMU refused to start")
            self.after(
                now, self.times.vm_start, lambda t: self._tell(failed, t, via=host, epoch=epoch)
            )
            return
        host.vms[vm] = "starting"

        def done(t: float) -> None:
            if host.vms.get(vm) != "starting":
                return  # the host died meanwhile
            host.vms[vm] = "up"
            self.log.sim(t, f"{host.name}/{vm}", "VM started")
            self._tell(f.JobDone("start", vm, host.name, True), t, via=host, epoch=epoch)
            self._tell(f.VmSeen(host.name, vm, VmStatus.UP), t, via=host)

        self.after(now, self.times.vm_start, done)

    def _stop(self, now: float, vm: str, host: SimHost) -> None:
        if host.reachable(now) and host.vms.pop(vm, None) is not None:
            self.log.sim(now, f"{host.name}/{vm}", "VM stopped")
            self._tell(f.VmSeen(host.name, vm, VmStatus.DOWN, ExitReason.ADMIN), now, via=host)

    def _migrate(self, now: float, vm: str, src: SimHost, dst: SimHost) -> None:
        epoch = self.epoch
        if not (src.reachable(now) and dst.reachable(now)) or src.vms.get(vm) != "up":
            failed = f.JobDone("migrate", vm, dst.name, False, "cannot reach both hosts")
            self._tell(failed, now, epoch=epoch)
            return
        src.vms[vm] = "migrating"

        def done(t: float) -> None:
            if src.vms.get(vm) != "migrating":
                lost = f.JobDone("migrate", vm, dst.name, False, "the source host was lost")
                self._tell(lost, t, epoch=epoch)
                return
            if vm in self.unmigratable or not dst.agent_running(t):
                src.vms[vm] = "up"
                why = "it did not converge" if vm in self.unmigratable else "destination lost"
                self.log.sim(t, f"{src.name}/{vm}", f"migration to {dst.name} failed: {why}")
                failed = f.JobDone("migrate", vm, dst.name, False, why)
                self._tell(failed, t, via=src, epoch=epoch)
                return
            del src.vms[vm]
            dst.vms[vm] = "up"
            self.log.sim(t, f"{dst.name}/{vm}", f"VM migrated from {src.name}")
            self._tell(f.JobDone("migrate", vm, dst.name, True), t, via=dst, epoch=epoch)
            self._tell(f.VmSeen(dst.name, vm, VmStatus.UP), t, via=dst)

        self.after(now, self.times.migration, done)
