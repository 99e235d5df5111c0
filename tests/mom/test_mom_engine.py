"""The policy engine's cycle with a scripted agent: controls become agent calls, a failed
evaluation skips the controllers, a failing agent call is logged and the others still run."""

from __future__ import annotations

from twisted.internet.defer import fail, succeed
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mom.interfaces import IMomAgent
from mom.service import MomConfig, PolicyEngine

UP = {
    "status": "Up",
    "vmName": "web",
    "memUsage": "30",
    "memoryStats": {"mem_total": "1000", "mem_unused": "700", "mem_free": "700"},
    "balloonInfo": {"balloon_max": "1000", "balloon_min": "0", "balloon_cur": "1000"},
    "vcpuCount": "1",
    "vcpuQuota": "-1",
    "vcpuPeriod": "100000",
    "vcpuUserLimit": "100",
}


@implementer(IMomAgent)
class FakeMomAgent:
    """A scripted agent: fixed VM stats, records calls, fails the VMs it is told to."""

    def __init__(self, vm_ids, failing=()):
        self.vms = [{**UP, "vmId": v, "vmName": v} for v in vm_ids]
        self.failing = set(failing)
        self.calls = []

    def vm_stats(self):
        return succeed(self.vms)

    def io_tune_policies(self):
        return succeed({})

    def set_balloon_target(self, vm_id, kib):
        self.calls.append(("balloon", vm_id, kib))
        return fail(RuntimeError("libvirt said no")) if vm_id in self.failing else succeed(True)

    def set_cpu_tune(self, vm_id, quota, period):
        self.calls.append(("cpu", vm_id, quota, period))
        return succeed(True)

    def set_io_tune(self, vm_id, tunables):
        return succeed(True)

    def set_ksm_tune(self, params):
        self.calls.append(("ksm", params))
        return succeed(True)


def synchronous(f):
    """Run a Deferred-returning call that has already fired; raise its failure."""
    results = []
    f().addBoth(results.append)
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def engine_for(agent, policy: str, tmp_path) -> PolicyEngine:
    config = MomConfig(controllers=("Balloon", "CpuTune"), ksm_root=str(tmp_path / "no-ksm"))
    engine = PolicyEngine(agent, synchronous, config)
    assert engine.store.set_policy(None, policy)
    engine.collect_host()
    engine.collect_guests()
    return engine


HALVE = '(with Guests g (g.Control "balloon_target" (/ g.balloon_max 2)))'


def test_controls_become_agent_calls(tmp_path):
    """A policy's balloon controls are sent to the agent for every guest."""
    agent = FakeMomAgent(["a", "b"])
    verifyObject(IMomAgent, agent)
    result = engine_for(agent, HALVE, tmp_path).cycle()
    assert result.evaluated and not result.errors
    assert sorted(agent.calls) == [("balloon", "a", 500), ("balloon", "b", 500)]


def test_a_failed_evaluation_sends_nothing(tmp_path):
    """When the policy fails, no controller runs for that cycle."""
    agent = FakeMomAgent(["a"])
    result = engine_for(
        agent, '(with Guests g (g.Control "balloon_target" nil.x))', tmp_path
    ).cycle()
    assert not result.evaluated and agent.calls == []


def test_a_failing_agent_call_is_reported_and_the_rest_still_run(tmp_path):
    """One guest's failed balloon call is recorded; the other guest still gets its target."""
    agent = FakeMomAgent(["a", "b"], failing={"a"})
    result = engine_for(agent, HALVE, tmp_path).cycle()
    assert result.evaluated and ("balloon", "b", 500) in agent.calls
    assert result.errors == ["balloon a: libvirt said no"]


def test_guests_that_leave_are_forgotten(tmp_path):
    """A VM that is no longer Up drops out of the next cycle."""
    agent = FakeMomAgent(["a", "b"])
    engine = engine_for(agent, HALVE, tmp_path)
    agent.vms[1]["status"] = "Down"
    engine.collect_guests()
    assert sorted(engine.guests) == ["a"] and engine.active_guests() == ["a"]
    assert "a" in engine.statistics()["guests"] and engine.statistics()["host"]["mem_available"]
