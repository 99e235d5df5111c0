"""Loading a simulator scenario: ``tests/scenarios/<name>/scenario.yml`` into checked data.

A scenario directory holds a ``README`` (a paragraph of intent), ``scenario.yml`` and the golden
``expected.log``. The YAML says which hosts and VMs the cluster starts with, which settings differ
from the defaults, and what happens when::

    hosts:
      h1: {memory: 4096, cpus: 4}            # pm: true, status: Up by default
      h2: {memory: 4096, pm: false}
    vms:
      web: {memory: 1024, ha: true, priority: 50, host: h2}
      db: {memory: 512, host: h2, pinned: true}   # pinned to its host
      spare: {memory: 512}                   # defined, Down
    settings: {grace_period: 5}              # HaSettings / HostTiming names
    policy: {name: none, parameters: {}, memory_over_commit: 100}
    groups:                                  # affinity groups (engine.decide.affinity)
      web: {vms: [web, db], vm: apart, hard: true, hosts: [h1], host: only, hosts_hard: false}
    balancing: {interval: 20, settle: 4}     # BalancingSettings, BalanceLimits, PowerLimits
    world: {vm_start: 2}                     # how long simulated things take (seconds)
    until: 120                               # default: 60 s after the last command
    commands:
      - {at: 10, do: host h2 power off}

The commands (what the world does, or what an admin asks):

=================================== =============================================================
``host H power on|off``             cut or restore power (off kills its VMs)
``host H network on|off``           cut or restore its network (it keeps running, unreachable)
``host H agent on|off``             stop or start its agent (its VMs keep running)
``host H starts fail|ok``           VM starts on it fail (or work again)
``host H maintenance [moveback]``   the admin asks for maintenance (and move-back on activate)
``host H activate``                 the admin activates it
``fence H fails|unknown|ok``        its power management errs, cannot tell, or works again
``fence H soft fails|ok``           soft fencing of it fails even when it is reachable
``vm V start|stop``                 the admin starts or stops it
``vm V crash``                      its QEMU dies (an error: HA restarts it)
``vm V shutdown``                   the guest shuts itself down (not an error)
``vm V migration fails|ok``         its migrations fail (never converge) or work again
``load H cpu N``                    the host's own CPU load becomes N % (its VMs' add to it)
``load vm V cpu N``                 the VM uses N % of its vCPUs (its host's load follows it)
``group G together|apart hard|soft  the admin defines affinity group G over the VMs V1, V2, ...
V1,V2,...``                         (refused, with the contradiction, if it conflicts)
``group G remove``                  the admin removes affinity group G
``engine restart``                  the engine stops and starts again from its store
``delay``                           nothing (a marker that keeps the run going)
=================================== =============================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from engine.decide.affinity import AffinityError, AffinityGroup
from engine.decide.balancing import BalancingSettings
from engine.decide.clusterstate import HaSettings
from engine.decide.moves import BalanceLimits
from engine.decide.policies import Policy, PolicyError, make_policy
from engine.decide.powersave import PowerLimits

#: File names inside a scenario directory.
README, SCENARIO, EXPECTED = "README", "scenario.yml", "expected.log"

#: Seconds the run goes on after the last command, unless ``until`` says otherwise.
SETTLE = 60


class ScenarioError(ValueError):
    """A scenario that cannot be run: the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class WorldTimes:
    """How long simulated things take, in seconds."""

    vm_start: int = 2
    migration: int = 3
    soft_fence: int = 2
    power_fence: int = 2
    power_status: int = 1
    boot: int = 20
    agent_restart: int = 1
    engine_downtime: int = 3


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A simulated host at the start."""

    name: str
    memory: int
    cpus: int = 4
    pm: bool = True
    reserved: int = 0
    status: str = "Up"
    power: bool = True
    network: bool = True
    agent: bool = True
    load: float = 0.0


@dataclass(frozen=True, slots=True)
class VmSpec:
    """A VM at the start: running on ``host``, or Down when ``host`` is None.

    (Not ``on``: YAML 1.1 reads a bare ``on`` as true.)
    """

    name: str
    memory: int
    cpus: int = 1
    ha: bool = False
    priority: int = 0
    host: str | None = None
    pinned: str | None = None
    load: float = 0.0


@dataclass(frozen=True, slots=True)
class Step:
    """One timed command: ``words`` are its parsed words, ``text`` as written."""

    at: int
    text: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class Scenario:
    """A loaded, checked scenario."""

    name: str
    hosts: tuple[HostSpec, ...]
    vms: tuple[VmSpec, ...]
    settings: HaSettings
    policy: Policy
    times: WorldTimes
    steps: tuple[Step, ...]
    until: int
    directory: Path | None = None
    readme: str = ""
    groups: tuple[AffinityGroup, ...] = ()
    balancing: BalancingSettings = BalancingSettings()


# -- commands --------------------------------------------------------------------------------

_ON_OFF = "(on|off)"
#: Command grammar: a regular expression per command (H a host, V a VM).
_GRAMMAR: tuple[tuple[str, str], ...] = (
    ("host", rf"host (?P<host>\S+) (power|network|agent) {_ON_OFF}"),
    ("host", r"host (?P<host>\S+) starts (fail|ok)"),
    ("host", r"host (?P<host>\S+) maintenance( moveback)?"),
    ("host", r"host (?P<host>\S+) activate"),
    ("host", r"fence (?P<host>\S+) (fails|unknown|ok)"),
    ("host", r"fence (?P<host>\S+) soft (fails|ok)"),
    ("vm", r"vm (?P<vm>\S+) (start|stop|crash|shutdown)"),
    ("vm", r"vm (?P<vm>\S+) migration (fails|ok)"),
    ("vm", r"load vm (?P<vm>\S+) cpu (?P<cpu>\d+(\.\d+)?)"),
    ("host", r"load (?P<host>\S+) cpu (?P<cpu>\d+(\.\d+)?)"),
    ("group", r"group (?P<group>\S+) (together|apart) (hard|soft) (?P<vms>\S+)"),
    ("group", r"group (?P<group>\S+) remove"),
    ("engine", r"engine restart"),
    ("delay", r"delay"),
)


def parse_step(
    at: Any, text: Any, hosts: Mapping[str, HostSpec], vms: Mapping[str, VmSpec]
) -> Step:
    """
    :returns: the command as a :class:`Step`.
    :raises ScenarioError: for a time that is not a whole non-negative number, a command that
        matches no form of the grammar, or an unknown host or VM.
    """
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise ScenarioError(f"command {text!r}: 'at' must be a whole number of seconds ≥ 0")
    if not isinstance(text, str):
        raise ScenarioError(f"command at {at}: 'do' must be a string, got {text!r}")
    words = " ".join(text.split())
    for _kind, pattern in _GRAMMAR:
        match = re.fullmatch(pattern, words)
        if match is None:
            continue
        host, vm = match.groupdict().get("host"), match.groupdict().get("vm")
        if host is not None and host not in hosts:
            raise ScenarioError(f"command at {at} {words!r}: no host {host!r}")
        if vm is not None and vm not in vms:
            raise ScenarioError(f"command at {at} {words!r}: no VM {vm!r}")
        for member in (match.groupdict().get("vms") or "").split(","):
            if member and member not in vms:
                raise ScenarioError(f"command at {at} {words!r}: no VM {member!r}")
        return Step(at, words, tuple(words.split()))
    raise ScenarioError(f"command at {at}: cannot understand {words!r}")


# -- the file --------------------------------------------------------------------------------


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScenarioError(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def _fields(cls: type, name: str | None, values: Any, what: str) -> Any:
    """:returns: ``cls`` built from ``values`` (and ``name``), every field known and typed."""
    where = f"{what} {name!r}" if name is not None else what
    values = _mapping(values, where)
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = sorted(set(values) - set(fields) - {"name"})
    if unknown:
        known = sorted(set(fields) - {"name"})
        raise ScenarioError(f"{where}: unknown field(s) {unknown} (known: {known})")
    for key, value in values.items():
        _check_type(where, key, value, str(fields[key].type))
    named = {"name": name} if name is not None else {}
    return cls(**named, **values)


def _check_type(where: str, key: str, value: Any, kind: str) -> None:
    """Check ``value`` against its field's annotation (``int``, ``float``, ``bool``, ``str``)."""
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind in ("int", "float"):
        number = int if kind == "int" else int | float
        ok = isinstance(value, number) and not isinstance(value, bool) and value >= 0
    else:
        ok = isinstance(value, str) or (value is None and "None" in kind)
    if not ok:
        raise ScenarioError(
            f"{where}: {key} must be of type {kind} (≥ 0 if a number), not {value!r}"
        )


def _hosts(raw: Any) -> dict[str, HostSpec]:
    hosts = {
        name: _fields(HostSpec, str(name), spec, "host")
        for name, spec in _mapping(raw, "hosts").items()
    }
    if not hosts:
        raise ScenarioError("a scenario needs at least one host")
    for host in hosts.values():
        if not isinstance(host.memory, int) or host.memory <= 0:
            raise ScenarioError(f"host {host.name!r}: memory must be a positive number of MiB")
    return hosts


def _vms(raw: Any, hosts: Mapping[str, HostSpec]) -> dict[str, VmSpec]:
    vms: dict[str, VmSpec] = {}
    for name, spec in _mapping(raw, "vms").items():
        values = dict(_mapping(spec, f"vm {name!r}"))
        if values.get("pinned") is True:
            values["pinned"] = values.get("host")
        elif values.get("pinned") is False:
            values["pinned"] = None
        vm = _fields(VmSpec, str(name), values, "vm")
        for where in (vm.host, vm.pinned):
            if where is not None and where not in hosts:
                raise ScenarioError(f"vm {name!r}: no host {where!r}")
        if name in hosts:
            raise ScenarioError(f"vm {name!r}: a host has the same name")
        vms[str(name)] = vm
    return vms


def _policy(raw: Any) -> Policy:
    values = _mapping(raw, "policy")
    unknown = sorted(set(values) - {"name", "parameters", "memory_over_commit"})
    if unknown:
        raise ScenarioError(f"policy: unknown field(s) {unknown}")
    try:
        return make_policy(
            values.get("name", "none"),
            values.get("parameters") or {},
            memory_over_commit_percent=values.get("memory_over_commit", 100),
        )
    except PolicyError as e:
        raise ScenarioError(f"policy: {e}") from None


#: ``groups:`` fields and the :class:`AffinityGroup` fields they set.
_GROUP_FIELDS = {
    "vms": "vms",
    "vm": "vm_polarity",
    "hard": "hard",
    "hosts": "hosts",
    "host": "host_polarity",
    "hosts_hard": "hosts_hard",
    "priority": "priority",
}
#: Words for polarities in ``groups:``.
_POLARITY_WORDS = {"together": "positive", "apart": "negative", "only": "positive",
                   "never": "negative", "none": "none"}  # fmt: skip


def _groups(raw: Any, hosts: Mapping[str, HostSpec], vms: Mapping[str, VmSpec]) -> tuple:
    groups = []
    for name, spec in _mapping(raw, "groups").items():
        values = _mapping(spec, f"group {name!r}")
        unknown = sorted(set(values) - set(_GROUP_FIELDS))
        if unknown:
            raise ScenarioError(f"group {name!r}: unknown field(s) {unknown}")
        args = {_GROUP_FIELDS[k]: v for k, v in values.items()}
        for key, known in (("vms", vms), ("hosts", hosts)):
            for member in args.get(key, ()):
                if member not in known:
                    raise ScenarioError(f"group {name!r}: no {key[:-1]} {member!r}")
        for key in ("vm_polarity", "host_polarity"):
            if key in args:
                args[key] = _POLARITY_WORDS.get(str(args[key]), args[key])
        try:
            groups.append(AffinityGroup(str(name), **args))
        except (AffinityError, TypeError) as e:
            raise ScenarioError(f"group {name!r}: {e}") from None
    return tuple(groups)


def _balancing(raw: Any) -> BalancingSettings:
    values = _mapping(raw, "balancing")
    own = {f.name for f in fields(BalancingSettings)} - {"limits", "power_limits"}
    kinds = {"limits": BalanceLimits, "power_limits": PowerLimits}
    parts: dict[str, dict[str, Any]] = {"own": {}, "limits": {}, "power_limits": {}}
    for key, value in values.items():
        where = "own" if key in own else None
        for part, cls in kinds.items():
            if key in {f.name for f in fields(cls)}:
                where = part
        if where is None:
            raise ScenarioError(f"balancing: unknown field {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ScenarioError(f"balancing: {key} must be a number ≥ 0, not {value!r}")
        parts[where][key] = value
    try:
        return BalancingSettings(
            **parts["own"],
            limits=BalanceLimits(**parts["limits"]),
            power_limits=PowerLimits(**parts["power_limits"]),
        )
    except ValueError as e:
        raise ScenarioError(f"balancing: {e}") from None


def parse(raw: Any, *, name: str = "scenario") -> Scenario:
    """
    :param raw: the scenario as YAML loaded it.
    :returns: the checked scenario.
    :raises ScenarioError: for anything wrong, with where.
    """
    top = _mapping(raw, "the scenario")
    allowed = {
        "hosts",
        "vms",
        "settings",
        "policy",
        "world",
        "commands",
        "until",
        "groups",
        "balancing",
    }
    unknown = sorted(set(top) - allowed)
    if unknown:
        raise ScenarioError(f"unknown top-level key(s) {unknown} (known: {sorted(allowed)})")
    hosts = _hosts(top.get("hosts"))
    vms = _vms(top.get("vms"), hosts)
    try:
        settings = HaSettings.from_mapping(_mapping(top.get("settings"), "settings"))
    except ValueError as e:
        raise ScenarioError(f"settings: {e}") from None
    times = _fields(WorldTimes, None, top.get("world"), "world")
    raw_steps = top.get("commands") or []
    if not isinstance(raw_steps, list):
        raise ScenarioError("commands must be a list of {at: N, do: text}")
    steps = []
    for item in raw_steps:
        item = _mapping(item, "a command")
        if set(item) != {"at", "do"}:
            raise ScenarioError(f"a command has exactly 'at' and 'do', got {sorted(item)}")
        steps.append(parse_step(item["at"], item["do"], hosts, vms))
    steps.sort(key=lambda s: s.at)  # stable: commands at one time keep their order
    last = steps[-1].at if steps else 0
    until = top.get("until", last + SETTLE)
    if isinstance(until, bool) or not isinstance(until, int) or until < last:
        raise ScenarioError(f"until must be a whole number ≥ the last command's time ({last})")
    return Scenario(
        name=name,
        hosts=tuple(hosts.values()),
        vms=tuple(vms.values()),
        settings=settings,
        policy=_policy(top.get("policy")),
        times=times,
        steps=tuple(steps),
        until=until,
        groups=_groups(top.get("groups"), hosts, vms),
        balancing=_balancing(top.get("balancing")),
    )


def load(directory: str | Path) -> Scenario:
    """
    :param directory: a scenario directory.
    :returns: its checked scenario.
    :raises ScenarioError: for a missing or malformed ``scenario.yml``.
    """
    path = Path(directory)
    source = path / SCENARIO
    try:
        raw = yaml.safe_load(source.read_text())
    except OSError as e:
        raise ScenarioError(f"{source}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(f"{source}: not valid YAML: {e}") from None
    try:
        scenario = parse(raw, name=path.name)
    except ScenarioError as e:
        raise ScenarioError(f"{source}: {e}") from None
    readme = (path / README).read_text().strip() if (path / README).exists() else ""
    return replace(scenario, directory=path, readme=readme)


def find(root: str | Path) -> list[Path]:
    """:returns: the scenario directories under ``root`` (itself, if it is one), sorted."""
    base = Path(root)
    if (base / SCENARIO).exists():
        return [base]
    return sorted(p.parent for p in base.glob(f"*/{SCENARIO}"))
