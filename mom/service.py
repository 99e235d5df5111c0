"""The MOM policy thread inside the agent, and its Twisted service.

:class:`PolicyEngine` holds one cycle's logic: collect the host (``/proc``, KSM sysfs) and the
guests (the agent's own VM statistics), evaluate the policy over fresh Entities, and turn the
controls into agent calls (:mod:`mom.controllers`). :class:`MomService` runs it on **one** thread
with MOM's intervals, as early VDSM embedded MOM. The thread reaches the agent only through
``blockingCallFromThread`` on an :class:`mom.interfaces.IMomAgent`, so every agent call runs on
the reactor thread.

Failure semantics, as MOM's: a failed evaluation skips every controller for that cycle; a
collection error is logged and the cycle goes on with the previous samples. Unlike MOM, a
controller that fails is logged and the other actions still run, and the thread never dies of
it (MOM's thread dies and MOM exits).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from . import controllers
from .collectors import guest as guest_fields
from .collectors.host import DEFAULT_KSM_ROOT, CollectionError, HostCpu, HostKsm, HostMemory
from .controllers import Action
from .interfaces import IMomAgent
from .monitor import Monitor, merge
from .policy import PolicyStore

#: Our default policy set (VDSM's behaviour, our text).
DEFAULT_POLICY_DIR = os.path.join(os.path.dirname(__file__), "policies")
#: The policy Host.setMOMPolicyParameters rewrites.
PARAMETERS_POLICY = "01-parameters"


@dataclass(frozen=True)
class MomConfig:
    """
    MOM's settings; the defaults are VDSM's deployment (15 s everywhere, all four controllers).

    :ivar policy_dir: ``*.policy`` files loaded at start; ``None`` for none.
    """

    enabled: bool = True
    policy_interval: float = 15.0
    host_interval: float = 15.0
    guest_interval: float = 15.0
    history: int = 10
    policy_dir: str | None = DEFAULT_POLICY_DIR
    controllers: tuple[str, ...] = ("Balloon", "KSM", "CpuTune", "IoTune")
    ksm_root: str = DEFAULT_KSM_ROOT
    proc_root: str = "/proc"


@dataclass
class CycleResult:
    """What one policy cycle did: whether the policy ran, the actions, and what failed."""

    evaluated: bool
    actions: list[Action] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PolicyEngine:
    """One MOM: monitors, the policy store and the controllers. Call it from one thread."""

    log = Logger()

    def __init__(
        self,
        agent: IMomAgent,
        call: Callable[[Callable[[], Deferred]], Any],
        config: MomConfig,
        *,
        store: PolicyStore | None = None,
    ) -> None:
        """
        :param agent: the agent the controls go to and the VM statistics come from.
        :param call: runs a Deferred-returning function on the reactor and waits for its result
            (``lambda f: blockingCallFromThread(reactor, f)``), raising its failure.
        """
        self._agent, self._call, self._config = agent, call, config
        self.store = store if store is not None else PolicyStore()
        self._controllers = [(n, controllers.controller(n)) for n in config.controllers]
        self._collectors = [
            HostMemory(config.proc_root),
            HostKsm(config.ksm_root),
            HostCpu(config.proc_root),
        ]
        fields = frozenset().union(*(c.fields for c in self._collectors))
        optional = frozenset().union(*(c.optional for c in self._collectors))
        self.host = Monitor(fields, optional, properties={}, history=config.history)
        self.host.properties["interval"] = config.policy_interval
        self.guests: dict[str, Monitor] = {}
        self._lock = threading.Lock()

    # -- collection ---------------------------------------------------------------------------

    def collect_host(self) -> None:
        """Take a host sample; a collector error is logged and the sample is dropped."""
        try:
            row = merge(c.collect() for c in self._collectors)
        except CollectionError as e:
            self.log.warn("mom: host collection failed: {error}", error=e)
            return
        with self._lock:
            if not self.host.add(row):
                self.log.warn("mom: host sample lacks {fields}", fields=sorted(self.host.missing))

    def collect_guests(self) -> None:
        """Take a sample of every Up VM from the agent's statistics; forget VMs that left."""
        try:
            vms = guest_fields.up_guests(self._call(self._agent.vm_stats))
            policies = self._call(self._agent.io_tune_policies) if vms else {}
        except Exception as e:
            self.log.warn("mom: cannot read the VMs' statistics: {error}", error=e)
            return
        with self._lock:
            seen = set()
            for vm in vms:
                props = guest_fields.guest_properties(vm)
                seen.add(props["uuid"])
                monitor = self.guests.get(props["uuid"])
                if monitor is None:
                    monitor = self.guests[props["uuid"]] = Monitor(
                        guest_fields.GUEST_FIELDS,
                        guest_fields.GUEST_OPTIONAL,
                        properties=props,
                        history=self._config.history,
                    )
                monitor.add(guest_fields.guest_fields(vm, (policies or {}).get(props["uuid"])))
            for gone in set(self.guests) - seen:
                del self.guests[gone]

    # -- the policy -----------------------------------------------------------------------------

    def cycle(self) -> CycleResult:
        """
        Evaluate the policy over the latest samples and carry out the controls.

        :returns: what happened; never raises.
        """
        with self._lock:
            host = self.host.interrogate()
            guests = [e for e in (m.interrogate() for m in self.guests.values()) if e is not None]
        if host is None:
            return CycleResult(False, errors=["no host sample yet"])
        if not self.store.evaluate(host, guests):
            return CycleResult(False, errors=["policy evaluation failed"])
        result = CycleResult(True)
        for name, decide in self._controllers:
            try:
                result.actions.extend(decide(host, guests))
            except Exception as e:
                self.log.failure("mom: controller {name} failed", name=name)
                result.errors.append(f"{name}: {e}")
        for action in result.actions:
            self._apply(action, result)
        return result

    def _apply(self, action: Action, result: CycleResult) -> None:
        agent = self._agent
        calls: dict[str, Callable[[], Deferred]] = {
            "balloon": lambda: agent.set_balloon_target(action.vm_id, action.value),
            "ksm": lambda: agent.set_ksm_tune(action.value),
            "cpu_tune": lambda: agent.set_cpu_tune(action.vm_id, *action.value),
            "io_tune": lambda: agent.set_io_tune(action.vm_id, action.value),
        }
        try:
            self._call(calls[action.kind])
        except Exception as e:
            self.log.warn("mom: {action} failed: {error}", action=action, error=e)
            result.errors.append(f"{action.kind} {action.vm_id or 'host'}: {e}")

    # -- what the agent reports -----------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """:returns: MOM's ``getStatistics``: the latest host row and each guest's, by name."""
        with self._lock:
            guests = {
                str(m.properties.get("name")): m.latest
                for m in self.guests.values()
                if m.latest is not None
            }
            return {"host": self.host.latest or {}, "guests": guests}

    def active_guests(self) -> list[str]:
        """:returns: the names of the guests with a usable sample (MOM's ``getActiveGuests``)."""
        with self._lock:
            return sorted(str(m.properties.get("name")) for m in self.guests.values() if m.ready)


class MomService(Service):
    """Runs a :class:`PolicyEngine` on one thread with MOM's intervals."""

    log = Logger()
    name = "mom"

    def __init__(
        self, engine: PolicyEngine, config: MomConfig, *, monotonic: Callable[[], float] = None
    ) -> None:
        self.engine = engine
        self._config = config
        self._monotonic = monotonic or time.monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0
        self.last: CycleResult | None = None

    def startService(self) -> None:
        super().startService()
        if self._config.policy_dir:
            loaded = self.engine.store.load_dir(self._config.policy_dir)
            self.log.info(
                "mom: policies from {dir}: {loaded}", dir=self._config.policy_dir, loaded=loaded
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mom-policy", daemon=True)
        self._thread.start()

    def stopService(self) -> Deferred | None:
        super().stopService()
        self._stop.set()
        thread, self._thread = self._thread, None
        return threads.deferToThread(thread.join) if thread is not None else None

    @property
    def alive(self) -> bool:
        """Whether the policy thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        """:returns: what ``Host.getStats`` merges: ``momStatus`` and MOM's host statistics."""
        return {
            "momStatus": "active" if self.alive else "inactive",
            **self.engine.statistics()["host"],
        }

    def _run(self) -> None:
        config = self._config
        now = self._monotonic()
        due = {"host": now, "guests": now, "policy": now + config.policy_interval}
        steps: Sequence[tuple[str, float, Callable[[], None]]] = (
            ("host", config.host_interval, self.engine.collect_host),
            ("guests", config.guest_interval, self.engine.collect_guests),
            ("policy", config.policy_interval, self._cycle),
        )
        while not self._stop.is_set():
            for name, interval, step in steps:
                if self._monotonic() >= due[name] and not self._stop.is_set():
                    try:
                        step()
                    except Exception:
                        self.log.failure("mom: {step} crashed; the thread goes on", step=name)
                    due[name] = self._monotonic() + interval
            self._stop.wait(max(0.0, min(due.values()) - self._monotonic()))

    def _cycle(self) -> None:
        self.last = self.engine.cycle()
        self.cycles += 1
