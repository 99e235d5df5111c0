"""The simulator's golden scenarios (``tests/scenarios/<name>/``), its safety under random
failures, its scenario loader and its command line.

Every scenario runs the engine's real cluster manager, host state machine and scheduler on
virtual time; its log must equal ``expected.log`` exactly. To see or update a log:
``python -m engine.sim run tests/scenarios/<name> [--update]``.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.decide import commands as c
from engine.decide.clusterstate import ExitReason
from engine.sim.__main__ import main
from engine.sim.log import SimLog
from engine.sim.runner import Simulation, run
from engine.sim.scenario import EXPECTED, README, SCENARIO, ScenarioError, find, load, parse
from engine.sim.verify import verify
from engine.sim.world import World

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
REPO = SCENARIOS.parents[1]
DIRS = find(SCENARIOS)


def _log(directory: Path) -> str:
    return "".join(f"{line}\n" for line in run(load(directory)))


@pytest.mark.parametrize("directory", DIRS, ids=[d.name for d in DIRS])
def test_scenario_log_is_the_expected_one(directory):
    """The scenario's log equals its expected.log line for line, and no VM ever ran twice."""
    golden = directory / EXPECTED
    assert golden.exists(), f"{golden} is missing: run python -m engine.sim run {directory}"
    outcome = verify(directory)
    if not outcome.matches:
        pytest.fail(
            f"the log of {directory.name} differs from {EXPECTED} (if the change is intended: "
            f"python -m engine.sim run {directory} --update)\n{outcome.diff}",
            pytrace=False,
        )
    assert "INVARIANT" not in outcome.produced


def test_the_scenarios_cover_what_the_cluster_promises():
    """At least 30 scenarios, each with its intent, setup and golden log, covering HA restart,
    fencing (failure, storm, no power management), flapping, maintenance and engine restarts."""
    assert len(DIRS) >= 30
    for directory in DIRS:
        assert (directory / README).read_text().strip(), directory
        assert (directory / SCENARIO).exists() and (directory / EXPECTED).exists(), directory
    names = {d.name for d in DIRS}
    for needed in (
        "ha-restart-one",
        "ha-restart-priority",
        "ha-no-room",
        "soft-fence-agent-restart",
        "power-fence-fails",
        "no-power-management",
        "fence-status-unknown",
        "fencing-storm",
        "flapping-host",
        "network-split",
        "engine-restart-mid-recovery",
        "maintenance-too-little-room",
        "maintenance-move-back",
        "two-hosts-fail",
    ):
        assert needed in names


def test_runs_are_deterministic():
    """Running a scenario twice gives the same log, byte for byte."""
    directory = SCENARIOS / "engine-restart-mid-recovery"
    assert _log(directory) == _log(directory)


def _seconds(line: str) -> int:
    return int(line.split()[0])


@pytest.mark.parametrize(
    ("name", "budget"),
    [("ha-restart-one", 15), ("two-hosts-fail", 15), ("network-split", 15)],
)
def test_ha_vms_run_elsewhere_within_the_budget(name, budget):
    """With the default settings, every HA VM of a failed host is running on another host
    within 15 s of the failure (oVirt needs about 2 minutes), after its host was proven dead."""
    lines = run(load(SCENARIOS / name))
    failed = min(
        _seconds(x) for x in lines if " CMD " in x and re.search("power off|network off", x)
    )
    fenced = [_seconds(x) for x in lines if " HOST_FENCED " in x]
    started = [_seconds(x) for x in lines if " SIM " in x and x.endswith("VM started")]
    assert started and fenced
    assert min(started) > min(fenced)
    assert max(started) - failed <= budget


def test_a_vm_on_two_hosts_is_logged_loudly():
    """The world notices a VM whose process runs on two hosts (what a start without a fence
    proof would cause), logs it once as an alert, and again only after it was resolved."""
    scenario = parse(
        {
            "hosts": {"h1": {"memory": 2048}, "h2": {"memory": 2048}},
            "vms": {"v": {"memory": 256, "host": "h1"}},
        }
    )
    log = SimLog()
    world = World(scenario, log)
    world.execute(0, c.StartVm("v", "h2", "a wrong restart"))
    world.advance(5)
    world.violations(5)
    world.violations(6)
    assert log.lines[-1] == "    5 alert   INVARIANT v: VM v runs on 2 hosts at once: h1, h2"
    assert sum("INVARIANT" in line for line in log.lines) == 1


# -- safety under random failures --------------------------------------------------------------

_CHAOS = (
    "host {h} power off",
    "host {h} power on",
    "host {h} network off",
    "host {h} network on",
    "host {h} agent off",
    "host {h} agent on",
    "fence {h} fails",
    "fence {h} unknown",
    "fence {h} ok",
    "fence {h} soft fails",
    "host {h} starts fail",
    "host {h} maintenance",
    "host {h} activate",
    "vm {v} crash",
    "vm {v} shutdown",
    "vm {v} start",
    "vm {v} stop",
    "vm {v} migration fails",
    "engine restart",
)


def _chaos(seed: int):
    """A random cluster with random failures until 150 s, then everything repaired."""
    rnd = random.Random(seed)
    hosts = {
        f"h{i}": {"memory": 4096, "pm": rnd.random() < 0.8} for i in range(1, rnd.randint(3, 5) + 1)
    }
    names = sorted(hosts)
    vms = {
        f"v{i}": {
            "memory": 512,
            "ha": rnd.random() < 0.7,
            "priority": rnd.choice([0, 10, 50]),
            "host": rnd.choice(names),
        }
        for i in range(1, 7)
    }
    commands = [
        {
            "at": rnd.randint(1, 140),
            "do": rnd.choice(_CHAOS).format(h=rnd.choice(names), v=rnd.choice(sorted(vms))),
        }
        for _ in range(rnd.randint(2, 10))
    ]
    repairs = ("power on", "network on", "agent on", "starts ok", "activate")
    commands += [{"at": 150, "do": f"host {h} {what}"} for h in names for what in repairs]
    commands += [
        {"at": 150, "do": f"fence {h} {what}"} for h in names for what in ("ok", "soft ok")
    ]
    commands += [{"at": 150, "do": f"vm {v} migration ok"} for v in vms]
    settings = {"fence_quiet_time": 20, "grace_period": rnd.choice([3, 5, 10])}
    world = {"vm_start": rnd.choice([1, 2, 6]), "migration": rnd.choice([1, 3, 9])}
    raw = {
        "hosts": hosts,
        "vms": vms,
        "commands": commands,
        "until": 400,
        "settings": settings,
        "world": world,
    }
    return parse(raw, name=f"chaos-{seed}")


@pytest.mark.parametrize("seeds", [range(0, 40), range(40, 80)], ids=["seeds-0-39", "seeds-40-79"])
def test_random_failures_never_run_a_vm_twice_and_ha_vms_come_back(seeds):
    """Under random power, network, agent, fence-device, VM and engine failures, no VM ever
    runs on two hosts; once everything is repaired, every HA VM not stopped by its user runs on
    exactly one host, and the engine's view of every VM matches the world."""
    for seed in seeds:
        simulation = Simulation(_chaos(seed))
        lines = simulation.run()
        assert not [x for x in lines if "INVARIANT" in x], f"seed {seed}"
        running: dict[str, list[str]] = {}
        for host in simulation.world.hosts.values():
            for vm in host.vms if host.power else ():
                running.setdefault(vm, []).append(host.name)
        assert simulation.manager is not None
        for vm in simulation.manager.state.vms.values():
            where = running.get(vm.id, [])
            if vm.ha and vm.exit not in (ExitReason.USER, ExitReason.ADMIN):
                assert len(where) == 1, f"seed {seed}: {vm.id} {vm.status} runs on {where}"
            assert (vm.host in where) == (vm.status != "Down"), f"seed {seed}: {vm.id}"


# -- the scenario file -------------------------------------------------------------------------

_BASE = {"hosts": {"h1": {"memory": 1024}}, "vms": {"v": {"memory": 256, "host": "h1"}}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"commands": [{"at": 5, "do": "host h1 explode"}]}, "cannot understand 'host h1 explode'"),
        ({"commands": [{"at": 5, "do": "host h9 power off"}]}, "no host 'h9'"),
        ({"commands": [{"at": -1, "do": "delay"}]}, "'at' must be a whole number"),
        ({"commands": [{"at": 1, "do": "delay", "x": 1}]}, "exactly 'at' and 'do'"),
        ({"settings": {"grace": 3}}, "unknown setting 'grace'"),
        ({"settings": {"storm_guard": "yes"}}, "must be true or false"),
        ({"settings": {"on_maintenance_deadline": "panic"}}, "must be one of activate, stay"),
        ({"vms": {"v": {"memory": 256, "on": "h1"}}}, "unknown field(s) ['on']"),
        ({"vms": {"v": {"memory": "lots"}}}, "memory must be of type int"),
        ({"vms": {"v": {"memory": 256, "host": "h7"}}}, "no host 'h7'"),
        ({"hosts": {}}, "at least one host"),
        ({"policy": {"name": "chaos"}}, "unknown cluster policy 'chaos'"),
        ({"until": 1, "commands": [{"at": 5, "do": "delay"}]}, "until must be"),
        ({"extra": 1}, "unknown top-level key"),
    ],
)
def test_a_broken_scenario_is_refused_with_the_reason(change, message):
    """A scenario with a mistake is refused at load time with a message that names it."""
    with pytest.raises(ScenarioError) as refused:
        parse({**_BASE, **change})
    assert message in str(refused.value)


def test_load_names_the_file(tmp_path):
    """A scenario file that is not YAML, or is missing, is refused naming the file."""
    (tmp_path / SCENARIO).write_text("hosts: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load(tmp_path)
    with pytest.raises(ScenarioError, match="No such file"):
        load(tmp_path / "nowhere")


# -- the command line --------------------------------------------------------------------------


def test_run_prints_the_log(capsys):
    """``run`` prints the scenario's log, which is its expected log."""
    directory = SCENARIOS / "ha-restart-one"
    assert main(["run", str(directory)]) == 0
    assert capsys.readouterr().out == (directory / EXPECTED).read_text()


def test_check_reports_a_difference_and_update_rewrites(tmp_path, capsys):
    """``check`` passes on a matching scenario, fails with a diff on a changed expected log,
    rewrites it with ``--update``, and writes a missing one for review."""
    copy = tmp_path / "one"
    shutil.copytree(SCENARIOS / "agent-blip", copy)
    assert main(["check", str(tmp_path)]) == 0
    golden = copy / EXPECTED
    original = golden.read_text()
    golden.write_text(original.replace("HOST_RECOVERED", "HOST_EXPLODED"))
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (
        "DIFFERS" in out
        and "-   12 normal  HOST_EXPLODED" in out
        and "+   12 normal  HOST_RECOVERED" in out
    )
    assert main(["check", str(tmp_path), "--update"]) == 0
    assert golden.read_text() == original
    golden.unlink()
    assert main(["check", str(tmp_path)]) == 0
    assert golden.read_text() == original and "WROTE" in capsys.readouterr().out


def test_check_refuses_a_broken_scenario(tmp_path, capsys):
    """A broken scenario makes ``check`` exit with status 2 and say what is wrong."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / SCENARIO).write_text(
        "hosts: {h1: {memory: 1}}\ncommands: [{at: 1, do: fly}]\n"
    )
    assert main(["check", str(tmp_path)]) == 2
    assert "cannot understand 'fly'" in capsys.readouterr().err


def test_module_runs_as_a_program():
    """``python -m engine.sim run`` works as a real child process and prints the log."""
    directory = SCENARIOS / "flapping-host"
    done = subprocess.run(
        [sys.executable, "-m", "engine.sim", "run", str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (directory / EXPECTED).read_text()
