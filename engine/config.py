"""Pure: the engine's configuration, from an INI file and command-line flags (flags win).

The INI file (``--config``)::

    [engine]
    listen = 127.0.0.1:8080       ; HOST:PORT for the admin API and console; port 0: a free one
    state_dir = /var/lib/vdsmlike-engine
    db =                          ; a libpq DSN; empty: a private PostgreSQL in <state_dir>
    database = vdsmlike           ; the database's name in the private cluster
    pool_size = 10                ; database connections
    log_level = info

    [api]
    session_ttl = 28800           ; seconds an admin API login lasts (8 hours)

    [monitoring]                  ; seconds unless said otherwise
    host_stats_interval = 5       ; Host.getStats per host (oVirt: 15)
    vm_stats_interval = 5         ; Host.getAllVmStats per host (oVirt: 3, without events)
    install_timeout = 30          ; a new host that never connects -> NonResponsive
    connect_timeout = 10
    call_timeout = 60
    reconnect_max_delay = 10      ; backoff ceiling between connection attempts
    console_poll_interval = 0.25  ; VM.getConsoleOutput per watched VM console

    [ha]                          ; the cluster manager (docs/ha.md); seconds unless said otherwise
    heartbeat_interval = 2        ; Host.ping2 on every link (oVirt's heartbeat: 30)
    heartbeat_timeout = 1         ; a ping unanswered this long is missed
    misses_to_suspect = 2         ; missed heartbeats that make an Up host Connecting
    grace_period = 5              ; first trouble -> NonResponsive (oVirt: 60 and more)
    tick_interval = 1             ; how often the manager lets time pass and decides
    fencing_enabled = true        ; fence NonResponsive hosts holding VMs (each host's power
                                  ; management has its own fencing_enabled too)
    storm_guard = true            ; no fencing while many hosts are unreachable at once
    storm_threshold_percent = 50  ; ... that many percent of the hosts, and at least two
    startup_fence_delay = 5       ; no fencing this long after the engine started
    soft_fence_timeout = 10       ; an agent restart with no outcome has failed
    soft_fence_return_wait = 6    ; a restarted agent has this long to answer
    power_timeout = 30            ; a power query or fence with no outcome is unknown
    fence_quiet_time = 60         ; after a failed fencing round, wait this long
    power_on_after_fence = true   ; switch a power-fenced host on again
    restart_short_interval = 5    ; HA restart retries: every 5 s at first,
    restart_short_tries = 10      ; ... for 10 attempts,
    restart_long_interval = 60    ; ... then every 60 s, forever
    max_blocked_on_priority = 30  ; longest wait for HA VMs of higher priority
    max_reruns = 3                ; a failed start is rerun at once on up to 3 other hosts
    start_timeout = 150           ; backstops for outcomes that never come (default: the
    migration_timeout = 330       ; [vms] timeouts + 30 s, so the jobs give up first)
    max_starts_per_host = 4       ; starts in flight per host
    max_migrations_in = 2         ; migrations in flight to a host
    max_migrations_out = 2        ; migrations in flight from a host
    maintenance_deadline = 600    ; a host must be emptied within this; then a report and
    on_maintenance_deadline = activate   ; activate (back Up) or stay (keep trying)
    evacuation_retry = 10         ; a VM that could not move is tried again after this
    move_back = false             ; maintenance moves the VMs back on activation, by default

    The liveness keys (``heartbeat_*``, ``misses_to_suspect``, ``grace_period``) are also read
    from ``[monitoring]``, where older files have them; setting one in both is an error.

    [scheduling]
    policy = none                 ; none, evenly_distributed, power_saving, vm_evenly_distributed
    memory_over_commit = 100      ; percent

    [policy_parameters]           ; oVirt's names, e.g. HighUtilization = 80

    [balancing]                   ; when the balancer plans (docs/balancing.md)
    interval = 60                 ; seconds between plans at least (oVirt: 1 minute)
    settle = 15                   ; seconds the cluster must have been calm (fresh load samples)
    max_moves = 10                ; migrations per plan at most

    [vms]                         ; seconds an action waits for the VM to reach its state
    start_timeout = 120
    stop_timeout = 60
    shutdown_timeout = 120
    pause_timeout = 30
    migrate_timeout = 300
"""

from __future__ import annotations

import argparse
import configparser
import enum
import os
from dataclasses import dataclass, fields, replace
from typing import Any

from vdsmlike.config import ConfigError, parse_listen

from .decide.balancing import BalancingSettings
from .decide.clusterstate import HA_TIMING, HaSettings
from .decide.hoststate import HostTiming
from .decide.policies import Policy, PolicyError, make_policy

DEFAULT_STATE_DIR = "/var/lib/vdsmlike-engine"
DEFAULT_LISTEN = "127.0.0.1:8080"
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")

__all__ = ["ConfigError", "EngineConfig", "check", "load_config", "parse_listen", "read_ini"]


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine is configured with (see the module docstring for each)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    state_dir: str = DEFAULT_STATE_DIR
    db: str | None = None
    database: str = "vdsmlike"
    pool_size: int = 10
    log_level: str = "info"
    session_ttl: float = 8 * 3600.0
    host_stats_interval: float = 5.0
    vm_stats_interval: float = 5.0
    heartbeat_interval: float = HA_TIMING.heartbeat_interval
    heartbeat_timeout: float = HA_TIMING.heartbeat_timeout
    misses_to_suspect: int = HA_TIMING.misses_to_suspect
    grace_period: float = HA_TIMING.grace_period
    install_timeout: float = 30.0
    connect_timeout: float = 10.0
    call_timeout: float = 60.0
    reconnect_initial_delay: float = 0.5
    reconnect_max_delay: float = 10.0
    auto_ping_interval: float = 10.0
    policy: str = "none"
    memory_over_commit: int = 100
    policy_parameters: tuple[tuple[str, str], ...] = ()
    start_timeout: float = 120.0
    stop_timeout: float = 60.0
    shutdown_timeout: float = 120.0
    pause_timeout: float = 30.0
    migrate_timeout: float = 300.0
    console_poll_interval: float = 0.25
    ha_tick_interval: float = 1.0
    ha_move_back: bool = False
    ha_options: tuple[tuple[str, str], ...] = ()
    balancing_interval: float = 60.0
    balancing_settle: float = 15.0
    balancing_max_moves: int = 10

    @property
    def balancing_settings(self) -> BalancingSettings:
        """When and how much the balancer plans. :raises ValueError: for a bad value."""
        return BalancingSettings(
            interval=self.balancing_interval,
            settle=self.balancing_settle,
            max_moves=self.balancing_max_moves,
        )

    @property
    def ha_settings(self) -> HaSettings:
        """
        The cluster manager's settings: ``[ha]`` over :class:`HaSettings`' defaults, with the
        liveness budget of :attr:`timing`.

        :raises ValueError: for an unknown setting or a bad value, naming it.
        """
        values: dict[str, Any] = {name: _ha_value(name, raw) for name, raw in self.ha_options}
        # The manager's own timeouts are backstops for outcomes that never come: they must not
        # expire before the jobs that carry its starts and migrations give up themselves.
        values.setdefault("start_timeout", self.start_timeout + 30.0)
        values.setdefault("migration_timeout", self.migrate_timeout + 30.0)
        base = HaSettings.from_mapping(values)
        return replace(base, timing=self.timing)

    @property
    def timing(self) -> HostTiming:
        """The hosts' liveness budget for the host state machine."""
        return HostTiming(
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout,
            misses_to_suspect=self.misses_to_suspect,
            grace_period=self.grace_period,
            install_timeout=self.install_timeout,
        )

    def scheduling_policy(self) -> Policy:
        """The cluster policy. :raises PolicyError: for a bad name or parameter."""
        return make_policy(
            self.policy,
            dict(self.policy_parameters),
            memory_over_commit_percent=self.memory_over_commit,
        )

    @property
    def url_file(self) -> str:
        """Where the engine writes its URL once listening."""
        return os.path.join(self.state_dir, "engine.url")

    @property
    def password_file(self) -> str:
        """Where the first start writes the admin password (mode 0600)."""
        return os.path.join(self.state_dir, "admin-password")


_INI_KEYS = {
    ("engine", "state_dir"): "state_dir",
    ("engine", "db"): "db",
    ("engine", "database"): "database",
    ("engine", "pool_size"): "pool_size",
    ("engine", "log_level"): "log_level",
    ("api", "session_ttl"): "session_ttl",
    ("scheduling", "policy"): "policy",
    ("scheduling", "memory_over_commit"): "memory_over_commit",
    ("balancing", "interval"): "balancing_interval",
    ("balancing", "settle"): "balancing_settle",
    ("balancing", "max_moves"): "balancing_max_moves",
    **{("monitoring", name): name for name in (
        "host_stats_interval", "vm_stats_interval", "heartbeat_interval", "heartbeat_timeout",
        "misses_to_suspect", "grace_period", "install_timeout", "connect_timeout",
        "call_timeout", "reconnect_initial_delay", "reconnect_max_delay", "auto_ping_interval",
        "console_poll_interval",
    )},
    **{("vms", name): name for name in (
        "start_timeout", "stop_timeout", "shutdown_timeout", "pause_timeout", "migrate_timeout",
    )},
}

_TYPES = {f.name: f.type for f in fields(EngineConfig)}

#: ``[ha]`` keys that are :class:`EngineConfig` fields (the rest are :class:`HaSettings`').
_HA_KEYS = {
    "heartbeat_interval": "heartbeat_interval",
    "heartbeat_timeout": "heartbeat_timeout",
    "misses_to_suspect": "misses_to_suspect",
    "grace_period": "grace_period",
    "tick_interval": "ha_tick_interval",
    "move_back": "ha_move_back",
}
_HA_DEFAULTS = HaSettings()
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _boolean(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _ha_value(name: str, raw: str) -> Any:
    """``raw`` as the type of :class:`HaSettings`' field ``name`` (checked by the class)."""
    default = getattr(_HA_DEFAULTS, name, None)
    if name == "timing" or default is None:
        known = {*_HA_KEYS, *(f.name for f in fields(HaSettings) if f.name != "timing")}
        raise ConfigError(f"unknown setting [ha] {name} (known: {', '.join(sorted(known))})")
    if isinstance(default, bool):
        return _boolean(name, raw)
    try:
        if isinstance(default, int) and not isinstance(default, enum.Enum):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ConfigError(f"[ha] {name} must be a number, got {raw!r}") from None
    return raw.strip()


def _convert(name: str, raw: str) -> object:
    kind = _TYPES[name]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind}, got {raw!r}") from None
    if kind == "str | None":
        return raw.strip() or None
    return raw.strip()


def read_ini(text: str, base: EngineConfig = EngineConfig()) -> EngineConfig:
    """
    Apply an INI file's settings over ``base``.

    :raises ConfigError: for unknown sections or keys, or badly typed values.
    """
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep oVirt's case
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise ConfigError(f"cannot parse the config file: {e}") from None
    changes: dict[str, Any] = {}
    parameters = dict(base.policy_parameters)
    ha = dict(base.ha_options)
    for section in parser.sections():
        for key, raw in parser.items(section, raw=True):
            if section == "policy_parameters":
                parameters[key] = raw.strip()
            elif section == "ha" and key.lower() in _HA_KEYS:
                name = _HA_KEYS[key.lower()]
                if name in changes:
                    raise ConfigError(f"[ha] {key} is also set in [monitoring]: set it once")
                changes[name] = (_boolean(key, raw) if name == "ha_move_back"
                                 else _convert(name, raw))
            elif section == "ha":
                _ha_value(key.lower(), raw)  # refuses an unknown key or a bad value now
                ha[key.lower()] = raw.strip()
            elif (section, key) == ("engine", "listen"):
                changes["listen_host"], changes["listen_port"] = parse_listen(raw)
            elif (section, key.lower()) in _INI_KEYS:
                name = _INI_KEYS[(section, key.lower())]
                if name in changes:
                    raise ConfigError(f"[{section}] {key} is also set in [ha]: set it once")
                changes[name] = _convert(name, raw)
            else:
                raise ConfigError(f"unknown setting [{section}] {key}")
    changes["policy_parameters"] = tuple(sorted(parameters.items()))
    changes["ha_options"] = tuple(sorted(ha.items()))
    return replace(base, **changes)


def argument_parser() -> argparse.ArgumentParser:
    """The ``vdsmlike-engine`` command line."""
    p = argparse.ArgumentParser(
        prog="vdsmlike-engine", description="The vdsmlike engine: inventory, scheduling, API."
    )
    p.add_argument("--config", help="INI configuration file")
    p.add_argument("--listen", help=f"HOST:PORT for the admin API (default {DEFAULT_LISTEN})")
    p.add_argument("--db", help="PostgreSQL DSN (default: a private cluster in the state dir)")
    p.add_argument("--state-dir", help=f"state directory (default {DEFAULT_STATE_DIR})")
    return p


def load_config(argv: list[str] | None = None) -> EngineConfig:
    """
    Build the configuration from the command line (and the file it names).

    :raises ConfigError: for an unusable configuration.
    """
    args = argument_parser().parse_args(argv)
    config = EngineConfig()
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                config = read_ini(f.read(), config)
        except OSError as e:
            raise ConfigError(f"cannot read {args.config}: {e.strerror}") from None
    changes: dict[str, Any] = {}
    if args.listen:
        changes["listen_host"], changes["listen_port"] = parse_listen(args.listen)
    if args.db:
        changes["db"] = args.db
    if args.state_dir:
        changes["state_dir"] = args.state_dir
    config = replace(config, **changes)
    return check(replace(config, state_dir=os.path.abspath(config.state_dir)))


def check(config: EngineConfig) -> EngineConfig:
    """
    Check the whole configuration.

    :returns: ``config``.
    :raises ConfigError: naming the first bad setting.
    """
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if config.pool_size < 1:
        raise ConfigError("pool_size must be at least 1")
    for name in ("host_stats_interval", "vm_stats_interval", "connect_timeout", "call_timeout",
                 "start_timeout", "stop_timeout", "shutdown_timeout", "pause_timeout",
                 "migrate_timeout", "reconnect_initial_delay", "reconnect_max_delay",
                 "session_ttl", "console_poll_interval", "ha_tick_interval"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be a positive number of seconds")
    try:
        _ = config.timing
        _ = config.ha_settings
        _ = config.balancing_settings
        config.scheduling_policy()
    except (ValueError, PolicyError) as e:
        raise ConfigError(str(e)) from None
    return config
