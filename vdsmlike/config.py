"""Pure: the agent's configuration, from an INI file and command-line flags (flags win).

The INI file (``--config``, e.g. ``contrib/agent.conf.example``)::

    [agent]
    listen = 127.0.0.1:54321      ; HOST:PORT, port 0 picks a free port
    state_dir = /var/lib/vdsmlike
    libvirt_uri = qemu:///embed?root=/var/lib/vdsmlike/libvirt
    hooks_dir = /var/lib/vdsmlike/hooks

    [auth]
    token = ...                   ; or token_file = /etc/vdsmlike/token

    [rpc]
    max_message_size = 16777216   ; bytes
    strict = true                 ; reject params that break the schema (VDSM: advisory)
    validate_results = false      ; check every result against the schema (tests turn it on)
    ping_interval = 30            ; WebSocket auto-ping, seconds (0: off)

    [vars]
    domain_type = qemu            ; qemu (TCG), kvm, or keep (leave <domain type> alone)
    guest_wait_timeout = 60       ; seconds "Powering up" before "Up"
    vm_sample_interval = 15       ; seconds between libvirt bulk samples
    host_sample_interval = 15     ; seconds between host samples
    ksm_dir = /sys/kernel/mm/ksm  ; KSM's sysfs knobs, written by Host.setKsmTune
    ; live migration (VDSM's names and defaults; docs/migration.md)
    max_outgoing_migrations = 2   ; more outgoing migrations wait for a slot
    max_incoming_migrations = 2   ; VM.migrationCreate refuses more (82)
    migration_max_bandwidth = 52  ; MiB/s when VM.migrate gives none (0: unlimited)
    migration_downtime = 500      ; ms, end of the downtime ramp (no convergence schedule)
    migration_downtime_steps = 5
    migration_downtime_delay = 100      ; s per GiB of guest RAM for the whole ramp
    migration_progress_timeout = 240    ; s without progress before aborting (0: never)
    migration_max_time_per_gib_mem = 64 ; s per GiB of guest RAM before aborting (0: never)
    migration_monitor_interval = 10     ; s between progress samples and events
    migration_retry_timeout = 10        ; s before asking a busy destination again
    migration_create_timeout = 600      ; s to wait for VM.migrationCreate's answer
    migration_destination_timeout = 21600 ; s an incoming VM may wait to arrive
    migration_address =           ; where this host's QEMU receives migrations (told to sources)
    migration_libvirt_uri =       ; this libvirt as sources' daemons reach it (default: libvirt_uri)

    [hooks]
    timeout = 300                 ; seconds before a hook script's process group is killed
    plugins =                     ; stevedore plugin names (vdsmlike.hooks), in order
    disabled_plugins =            ; names to leave out
    order = plugins-first         ; or scripts-first: who runs first at each hook point

    [mom]
    enabled = true                ; the embedded MOM policy thread
    policy_interval = 15          ; seconds between policy cycles (VDSM's deployment: 15)
    host_interval = 15            ; seconds between host samples
    guest_interval = 15           ; seconds between guest samples
    sample_history = 10           ; samples kept per host and guest
    policy_dir = <packaged set>   ; *.policy files evaluated in name order
    controllers = Balloon, KSM, CpuTune, IoTune
"""

from __future__ import annotations

import argparse
import configparser
import ipaddress
import os
from dataclasses import dataclass, fields, replace

from .vm.migration import MigrationSettings

DEFAULT_STATE_DIR = "/var/lib/vdsmlike"
DEFAULT_LISTEN = "127.0.0.1:54321"


class ConfigError(ValueError):
    """The configuration is unusable; the message says which setting and why."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent is configured with."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 54321
    state_dir: str = DEFAULT_STATE_DIR
    libvirt_uri: str = ""
    hooks_dir: str = ""
    token: str | None = None
    max_message_size: int = 16 * 1024 * 1024
    strict: bool = True
    validate_results: bool = False
    ping_interval: float = 30.0
    domain_type: str = "qemu"
    guest_wait_timeout: float = 60.0
    vm_sample_interval: float = 15.0
    host_sample_interval: float = 15.0
    ksm_dir: str = "/sys/kernel/mm/ksm"
    hook_timeout: float = 300.0
    hook_plugins: str = ""
    hook_disabled_plugins: str = ""
    hook_order: str = "plugins-first"
    mom_enabled: bool = True
    mom_policy_interval: float = 15.0
    mom_host_interval: float = 15.0
    mom_guest_interval: float = 15.0
    mom_sample_history: int = 10
    mom_policy_dir: str = ""
    mom_controllers: str = "Balloon, KSM, CpuTune, IoTune"
    max_outgoing_migrations: int = 2
    max_incoming_migrations: int = 2
    migration_max_bandwidth: int = 52
    migration_downtime: int = 500
    migration_downtime_steps: int = 5
    migration_downtime_delay: float = 100.0
    migration_progress_timeout: float = 240.0
    migration_max_time_per_gib_mem: float = 64.0
    migration_monitor_interval: float = 10.0
    migration_retry_timeout: float = 10.0
    migration_create_timeout: float = 600.0
    migration_destination_timeout: float = 21600.0
    migration_address: str = ""
    migration_libvirt_uri: str = ""

    @property
    def runtime_dir(self) -> str:
        """Where hooks find per-VM runtime files such as launch flags."""
        return os.path.join(self.state_dir, "run")

    @property
    def url_file(self) -> str:
        """Where the agent writes the URL it listens on."""
        return os.path.join(self.state_dir, "agent.url")

    @property
    def serial_dir(self) -> str:
        """Where VMs built from legacy params write their serial console."""
        return os.path.join(self.state_dir, "serial")


def parse_listen(text: str) -> tuple[str, int]:
    """
    Split ``HOST:PORT`` (``[v6addr]:PORT`` for IPv6).

    :raises ConfigError: for anything else or a port outside 0-65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"listen must be HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"listen port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"listen port must be 0-65535, got {number}")
    return host, number


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine: localhost, 127.0.0.0/8, ::1, or IPv4-mapped."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


#: The ``[vars]`` migration settings, named as in VDSM's config (and as AgentConfig's fields).
_MIGRATION_KEYS = (
    "max_outgoing_migrations",
    "max_incoming_migrations",
    "migration_max_bandwidth",
    "migration_downtime",
    "migration_downtime_steps",
    "migration_downtime_delay",
    "migration_progress_timeout",
    "migration_max_time_per_gib_mem",
    "migration_monitor_interval",
    "migration_retry_timeout",
    "migration_create_timeout",
    "migration_destination_timeout",
    "migration_address",
    "migration_libvirt_uri",
)

_INI_KEYS = {
    ("agent", "state_dir"): "state_dir",
    ("agent", "libvirt_uri"): "libvirt_uri",
    ("agent", "hooks_dir"): "hooks_dir",
    ("auth", "token"): "token",
    ("rpc", "max_message_size"): "max_message_size",
    ("rpc", "strict"): "strict",
    ("rpc", "validate_results"): "validate_results",
    ("rpc", "ping_interval"): "ping_interval",
    ("vars", "domain_type"): "domain_type",
    ("vars", "guest_wait_timeout"): "guest_wait_timeout",
    ("vars", "vm_sample_interval"): "vm_sample_interval",
    ("vars", "host_sample_interval"): "host_sample_interval",
    ("vars", "ksm_dir"): "ksm_dir",
    **{("vars", name): name for name in _MIGRATION_KEYS},
    ("hooks", "timeout"): "hook_timeout",
    ("hooks", "plugins"): "hook_plugins",
    ("hooks", "disabled_plugins"): "hook_disabled_plugins",
    ("hooks", "order"): "hook_order",
    ("mom", "enabled"): "mom_enabled",
    ("mom", "policy_interval"): "mom_policy_interval",
    ("mom", "host_interval"): "mom_host_interval",
    ("mom", "guest_interval"): "mom_guest_interval",
    ("mom", "sample_history"): "mom_sample_history",
    ("mom", "policy_dir"): "mom_policy_dir",
    ("mom", "controllers"): "mom_controllers",
}


def _convert(name: str, raw: str) -> object:
    kind = {f.name: f.type for f in fields(AgentConfig)}[name]
    try:
        if kind == "bool":
            return _boolean(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind}, got {raw!r}") from None
    return raw


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def read_ini(text: str, base: AgentConfig = AgentConfig()) -> AgentConfig:
    """
    Apply an INI file's settings over ``base``.

    :raises ConfigError: for unknown sections or keys, or badly typed values.
    """
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise ConfigError(f"cannot parse the config file: {e}") from None
    changes: dict[str, object] = {}
    for section in parser.sections():
        for key, raw in parser.items(section, raw=True):
            if (section, key) == ("agent", "listen"):
                changes["listen_host"], changes["listen_port"] = parse_listen(raw)
            elif (section, key) == ("auth", "token_file"):
                changes["token"] = _read_token(raw)
            elif (section, key) in _INI_KEYS:
                name = _INI_KEYS[(section, key)]
                changes[name] = _convert(name, raw)
            else:
                raise ConfigError(f"unknown setting [{section}] {key}")
    return replace(base, **changes)


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise ConfigError(f"cannot read token_file {path}: {e.strerror}") from None
    if not token:
        raise ConfigError(f"token_file {path} is empty")
    return token


def argument_parser() -> argparse.ArgumentParser:
    """The ``vdsmlike-agent`` command line."""
    p = argparse.ArgumentParser(prog="vdsmlike-agent", description="The vdsmlike host agent.")
    p.add_argument("--config", help="INI configuration file")
    p.add_argument("--listen", help=f"HOST:PORT to serve JSON-RPC on (default {DEFAULT_LISTEN})")
    p.add_argument("--libvirt-uri", help="libvirt URI (default: embedded QEMU in the state dir)")
    p.add_argument("--state-dir", help=f"state directory (default {DEFAULT_STATE_DIR})")
    p.add_argument("--hooks-dir", help="hook scripts directory (default <state-dir>/hooks)")
    p.add_argument("--token-file", help="file holding the shared secret clients must present")
    return p


def load_config(argv: list[str] | None = None, environ: dict | None = None) -> AgentConfig:
    """
    Build the configuration from the command line (and the file it names).

    Without a token the agent only listens on loopback.

    :raises ConfigError: for an unusable configuration.
    """
    args = argument_parser().parse_args(argv)
    config = AgentConfig()
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                config = read_ini(f.read(), config)
        except OSError as e:
            raise ConfigError(f"cannot read {args.config}: {e.strerror}") from None
    changes: dict[str, object] = {}
    if args.listen:
        changes["listen_host"], changes["listen_port"] = parse_listen(args.listen)
    if args.libvirt_uri:
        changes["libvirt_uri"] = args.libvirt_uri
    if args.state_dir:
        changes["state_dir"] = os.path.abspath(args.state_dir)
    if args.hooks_dir:
        changes["hooks_dir"] = os.path.abspath(args.hooks_dir)
    if args.token_file:
        changes["token"] = _read_token(args.token_file)
    token = (environ if environ is not None else os.environ).get("VDSMLIKE_TOKEN")
    if token and "token" not in changes and config.token is None:
        changes["token"] = token
    return finish(replace(config, **changes))


def finish(config: AgentConfig) -> AgentConfig:
    """Fill the defaults that depend on other settings, and check the whole."""
    if not config.libvirt_uri:
        root = os.path.join(config.state_dir, "libvirt")
        config = replace(config, libvirt_uri=f"qemu:///embed?root={root}")
    if not config.hooks_dir:
        config = replace(config, hooks_dir=os.path.join(config.state_dir, "hooks"))
    if config.domain_type not in ("qemu", "kvm", "keep"):
        raise ConfigError(f"domain_type must be qemu, kvm or keep, got {config.domain_type!r}")
    if not is_loopback(config.listen_host) and not config.token:
        raise ConfigError(
            f"refusing to listen on {config.listen_host} without authentication: "
            "set [auth] token or token_file (or --token-file), or listen on 127.0.0.1"
        )
    if config.hook_order not in ("plugins-first", "scripts-first"):
        raise ConfigError(
            f"[hooks] order must be plugins-first or scripts-first, got {config.hook_order!r}"
        )
    if config.hook_timeout <= 0:
        raise ConfigError("[hooks] timeout must be a positive number of seconds")
    if config.max_message_size < 1024:
        raise ConfigError("max_message_size must be at least 1024 bytes")
    _check_mom(config)
    _check_migration(config)
    return config


def _check_migration(config: AgentConfig) -> None:
    for name in ("max_outgoing_migrations", "max_incoming_migrations"):
        if getattr(config, name) < 1:
            raise ConfigError(f"[vars] {name} must be at least 1")
    for name in ("migration_monitor_interval", "migration_retry_timeout",
                 "migration_create_timeout", "migration_destination_timeout"):  # fmt: skip
        if getattr(config, name) <= 0:
            raise ConfigError(f"[vars] {name} must be a positive number of seconds")
    for name in ("migration_max_bandwidth", "migration_downtime", "migration_downtime_delay",
                 "migration_progress_timeout", "migration_max_time_per_gib_mem"):  # fmt: skip
        if getattr(config, name) < 0:
            raise ConfigError(f"[vars] {name} must not be negative")
    if config.migration_downtime_steps < 1:
        raise ConfigError("[vars] migration_downtime_steps must be at least 1")


def migration_settings(config: AgentConfig) -> MigrationSettings:
    """:returns: the host's migration settings from its configuration."""
    return MigrationSettings(
        max_outgoing=config.max_outgoing_migrations,
        max_incoming=config.max_incoming_migrations,
        max_bandwidth=config.migration_max_bandwidth,
        downtime=config.migration_downtime,
        downtime_steps=config.migration_downtime_steps,
        downtime_delay=config.migration_downtime_delay,
        progress_timeout=config.migration_progress_timeout,
        max_time_per_gib=config.migration_max_time_per_gib_mem,
        monitor_interval=config.migration_monitor_interval,
        retry_timeout=config.migration_retry_timeout,
        create_timeout=config.migration_create_timeout,
        destination_timeout=config.migration_destination_timeout,
        address=config.migration_address,
        libvirt_uri=config.migration_libvirt_uri,
    )


def _check_mom(config: AgentConfig) -> None:
    from mom.controllers import CONTROLLERS

    for name in ("policy", "host", "guest"):
        if getattr(config, f"mom_{name}_interval") <= 0:
            raise ConfigError(f"[mom] {name}_interval must be a positive number of seconds")
    if config.mom_sample_history < 1:
        raise ConfigError("[mom] sample_history must be at least 1")
    unknown = [n for n in mom_controller_names(config) if n not in CONTROLLERS]
    if unknown:
        known = ", ".join(CONTROLLERS)
        raise ConfigError(f"[mom] controllers: unknown {', '.join(unknown)}; known: {known}")
    if config.mom_policy_dir and not os.path.isdir(config.mom_policy_dir):
        raise ConfigError(f"[mom] policy_dir {config.mom_policy_dir!r} is not a directory")


def mom_controller_names(config: AgentConfig) -> tuple[str, ...]:
    """:returns: the configured MOM controllers, in order."""
    return tuple(n.strip() for n in config.mom_controllers.split(",") if n.strip())
