"""Running a scenario: the virtual clock, the world, and the real cluster manager between them.

Time moves in whole seconds from 0 to the scenario's ``until``. Each second, in this order:

1. the scenario's commands for that second: world changes go to the :class:`~.world.World`,
   admin requests to the manager (a refusal is logged as ``REFUSED``);
2. the world runs what is due (fences, starts, migrations finishing; heartbeats timing out);
3. on every ``heartbeat_interval``, the engine's links ping every host;
4. the manager observes the facts the world produced and ``tick``\\ s; its events go to the log
   and the world carries out its commands;
5. the invariant "a VM runs on at most one host" is checked.

``engine restart`` snapshots what the store holds (:meth:`ClusterManager.snapshot`), stops the
engine for ``engine_downtime`` seconds (facts and outcomes meanwhile are lost, as they would be),
and rebuilds it with :meth:`ClusterManager.from_snapshot`.

The code deciding is the engine's own: :class:`~engine.decide.cluster.ClusterManager`, the host
state machine and the scheduler with its real plugins.
"""

from __future__ import annotations

from engine.decide import affinity
from engine.decide.affinity import AffinityGroup
from engine.decide.balancing import make_decorator, make_planner
from engine.decide.cluster import ClusterManager, RequestRefused
from engine.decide.clustersnapshot import ClusterSnapshot
from engine.decide.commands import Event, event
from engine.store.auditlog import AuditType as T

from .log import SimLog
from .scenario import Scenario, Step
from .world import World


class Simulation:
    """One run of one scenario; :meth:`run` returns the log."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.log = SimLog()
        self.world = World(scenario, self.log)
        #: The affinity groups as the engine's store holds them (a scenario may change them).
        self.groups: list[AffinityGroup] = list(scenario.groups)
        self.manager: ClusterManager | None = self._manager(0, self.world.initial_snapshot(), False)
        self._stored: ClusterSnapshot | None = None
        self._back_at: int | None = None

    def _manager(self, now: int, snapshot: ClusterSnapshot, restarted: bool) -> ClusterManager:
        scenario = self.scenario
        planner = None
        if scenario.policy.balancer is not None:
            planner = make_planner(groups=lambda: self.groups, settings=scenario.balancing)
        return ClusterManager.from_snapshot(
            now,
            snapshot,
            scenario.settings,
            policy=scenario.policy,
            restarted=restarted,
            planner=planner,
            decorate=make_decorator(lambda: self.groups),
        )

    def run(self) -> list[str]:
        """:returns: the log lines of the whole run."""
        steps = list(self.scenario.steps)
        timing = self.scenario.settings.timing
        for now in range(self.scenario.until + 1):
            while steps and steps[0].at == now:
                self._command(now, steps.pop(0))
            self.world.advance(now)
            if now % timing.heartbeat_interval == 0:
                self.world.heartbeat(now, timing.heartbeat_timeout)
            self._engine(now)
            self.world.violations(now)
        return self.log.lines

    def _engine(self, now: int) -> None:
        seen = self.world.take_facts()
        if self.manager is None:
            if self._back_at is None or now < self._back_at:
                return  # the engine is down: nobody hears these facts
            assert self._stored is not None
            self.manager = self._manager(now, self._stored, True)
            self.log.sim(now, "engine", "engine started again")
        self.manager.observe(now, seen)
        for command in self.manager.tick(now):
            if isinstance(command, Event):
                self.log.event(now, command)
            else:
                self.world.execute(now, command)

    def _command(self, now: int, step: Step) -> None:
        self.log.command(now, step.text)
        words = step.words
        if words[0] == "engine":
            self._restart(now)
        elif words[0] == "host" and words[2] in ("maintenance", "activate"):
            self._request(now, step)
        elif words[0] == "vm" and words[2] in ("start", "stop"):
            self._request(now, step)
        elif words[0] == "group":
            self._group(now, step)
        elif words[0] != "delay":
            self.world.apply(now, step)

    def _request(self, now: int, step: Step) -> None:
        manager = self.manager
        if manager is None:
            self.log.refused(now, step.text, "the engine is down")
            return
        words = step.words
        try:
            if words[2] == "maintenance":
                manager.request_maintenance(now, words[1], move_back=len(words) > 3)
            elif words[2] == "activate":
                manager.activate(now, words[1])
            elif words[2] == "start":
                manager.start_vm(now, words[1])
            else:
                manager.stop_vm(now, words[1])
        except RequestRefused as e:
            self.log.refused(now, step.text, e.reason)

    def _group(self, now: int, step: Step) -> None:
        """An admin defines or removes an affinity group: checked as the engine's API does."""
        words = step.words
        name = words[1]
        others = [g for g in self.groups if g.name != name]
        if words[2] == "remove":
            if len(others) == len(self.groups):
                self.log.refused(now, step.text, f"no affinity group {name!r}")
                return
            self.groups = others
            self.log.event(now, event(T.AFFINITY_GROUP_REMOVED, group=name))
            return
        group = AffinityGroup(
            name,
            frozenset(words[4].split(",")),
            "positive" if words[2] == "together" else "negative",
            hard=words[3] == "hard",
        )
        hosts = [h.name for h in self.scenario.hosts]
        problems = affinity.check_groups([*others, group], hosts=hosts)
        if problems:
            self.log.refused(now, step.text, "; ".join(problems))
            return
        changed = len(others) < len(self.groups)
        kind = T.AFFINITY_GROUP_CHANGED if changed else T.AFFINITY_GROUP_ADDED
        self.groups = [*others, group]
        self.log.event(now, event(kind, group=name, summary=affinity.describe_group(group)))

    def _restart(self, now: int) -> None:
        if self.manager is None:
            return
        self._stored = self.manager.snapshot()
        self.manager = None
        self._back_at = now + self.scenario.times.engine_downtime
        self.world.engine_restarted()
        self.log.sim(now, "engine", f"engine stopped; back at {self._back_at}")


def run(scenario: Scenario) -> list[str]:
    """:returns: the log of ``scenario``, one line per entry."""
    return Simulation(scenario).run()
