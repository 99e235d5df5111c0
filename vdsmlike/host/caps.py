"""VDSM's ``Host.getCapabilities`` answer, from the hypervisor's :class:`HostInfo` and host facts.

:func:`capabilities` is pure. :func:`gather_host_facts` does the I/O (``/etc/os-release``,
``os.uname``, psutil's interface tables, ``dpkg-query``, the SELinux mode); it blocks, so the
caller runs it once, on a worker thread. Counts and sizes are strings, as VDSM sends them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..virt.events import HostInfo
from .stats import read_text

SUPPORTED_ENGINES = ("4.2", "4.3", "4.4", "4.5")
CLUSTER_LEVELS = ("4.2", "4.3", "4.4", "4.5", "4.6", "4.7", "4.8")
#: MiB the host keeps for itself (VDSM's ``host_mem_reserve`` plus its own 65 MiB).
RESERVED_MEM_MIB = 321
#: MiB of QEMU overhead counted per guest (VDSM's ``guest_ram_overhead``).
GUEST_OVERHEAD_MIB = 65
#: Debian and RPM package names tried for each ``packages2`` entry, in order.
PACKAGE_NAMES: Mapping[str, tuple[str, ...]] = {
    "libvirt": ("libvirt-daemon", "libvirt0", "libvirt"),
    "qemu-kvm": ("qemu-system-x86", "qemu-kvm", "qemu-system-x86_64"),
}
_DPKG_TIMEOUT = 5.0


@dataclass(frozen=True)
class NicFacts:
    """
    One host network interface.

    :ivar ipv4: ``(address, netmask)`` pairs; ``ipv6`` likewise, with prefix lengths as
        netmasks (``"64"``).
    """

    hwaddr: str
    speed: int
    mtu: int
    ipv4: tuple[tuple[str, str], ...] = ()
    ipv6: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HostFacts:
    """
    What the agent learns about its host once, at start.

    :ivar os_name: e.g. ``"Debian GNU/Linux"``; ``os_version`` e.g. ``"12"``; ``os_release``
        a build or point release, ``""`` when unknown.
    :ivar kernel_release: ``os.uname().release``, e.g. ``"6.1.0-18-amd64"``.
    :ivar packages: ``{name: (version, release)}`` for the packages found (``libvirt``,
        ``qemu-kvm``); missing ones fall back to the hypervisor's versions.
    :ivar nics: host interfaces by name (loopback and guest tap devices left out).
    :ivar selinux_mode: ``"1"`` enforcing, ``"0"`` permissive, ``"-1"`` disabled.
    """

    os_name: str = ""
    os_version: str = ""
    os_release: str = ""
    kernel_release: str = ""
    packages: dict[str, tuple[str, str]] = field(default_factory=dict)
    nics: dict[str, NicFacts] = field(default_factory=dict)
    selinux_mode: str = "-1"


# -- capabilities (pure) ----------------------------------------------------------------------


def capabilities(
    host: HostInfo,
    *,
    facts: HostFacts,
    hooks: dict,
    libvirt_uri: str,
    software_version: str,
    last_client_iface: str = "lo",
) -> dict[str, Any]:
    """
    VDSM's ``VdsmCapabilities`` dict (pure).

    :param host: the hypervisor's description of the host.
    :param facts: what :func:`gather_host_facts` found.
    :param hooks: installed hooks, ``{point: {script: {"checksum": sha256}}}``.
    :param libvirt_uri: the URI the agent's hypervisor uses.
    :param software_version: the agent's version, e.g. ``"0.1.0"``.
    :param last_client_iface: the interface the engine last reached us through.
    :returns: the capabilities dict.
    """
    caps: dict[str, Any] = _cpu_caps(host)
    caps.update(
        memSize=str(host.memory_kib // 1024),
        numaNodes=numa_nodes(host),
        emulatedMachines=list(host.emulated_machines),
        kvmEnabled="true" if host.kvm else "false",
        operatingSystem={
            "name": facts.os_name, "version": facts.os_version, "release": facts.os_release,
        },
        packages2=packages(host, facts, software_version),
        hooks=hooks,
        networks={}, bridges={}, nics=nics(facts.nics), bonds={}, vlans={},
    )  # fmt: skip
    caps.update(_identity(host, software_version, libvirt_uri, last_client_iface))
    caps["selinux"] = {"mode": facts.selinux_mode}
    return caps


def _cpu_caps(host: HostInfo) -> dict[str, Any]:
    """The CPU topology, model, speed and flags."""
    return {
        "cpuCores": str(host.sockets * host.cores),
        "cpuThreads": str(host.cpus),
        "cpuSockets": str(host.sockets),
        "cpuSpeed": f"{host.cpu_mhz:.3f}",
        "cpuModel": host.cpu_model,
        "cpuFlags": ",".join(host.cpu_flags),
    }


def _identity(
    host: HostInfo, software_version: str, libvirt_uri: str, last_client_iface: str
) -> dict[str, Any]:
    """Versions, supported levels, host identity and VDSM's fixed fields."""
    return {
        "software_version": software_version,
        "software_revision": "1",
        "version_name": "vdsmlike",
        "supportedENGINEs": list(SUPPORTED_ENGINES),
        "clusterLevels": list(CLUSTER_LEVELS),
        "uuid": host.host_uuid,
        "lastClientIface": last_client_iface,
        "additionalFeatures": [],
        "vmTypes": ["kvm"],
        "reservedMem": str(RESERVED_MEM_MIB),
        "guestOverhead": str(GUEST_OVERHEAD_MIB),
        "hostname": host.hostname,
        "libvirtUri": libvirt_uri,
        "kdumpStatus": 0,
        "hostedEngineDeployed": False,
    }


def numa_nodes(host: HostInfo) -> dict[str, dict[str, Any]]:
    """
    ``numaNodes``: ``{node: {"cpus": [ids], "totalMemory": MiB string}}``.

    :returns: the hypervisor's cells, or one node 0 holding every CPU and all memory.
    """
    cells = host.numa_nodes or {0: {"memory_kib": host.memory_kib, "cpus": range(host.cpus)}}
    return {
        str(node): {
            "cpus": [int(c) for c in cell.get("cpus", ())],
            "totalMemory": str(int(cell.get("memory_kib", 0)) // 1024),
        }
        for node, cell in sorted(cells.items())
    }


def packages(host: HostInfo, facts: HostFacts, software_version: str) -> dict[str, dict]:
    """
    ``packages2``: kernel, libvirt, qemu-kvm and vdsmlike as ``{version, release}``.

    :returns: package versions from ``facts``, else the versions the hypervisor reports.
    """
    kernel_version, _, kernel_release = facts.kernel_release.partition("-")
    fallback = {"libvirt": host.lib_version, "qemu-kvm": host.hv_version}
    result = {"kernel": {"version": kernel_version, "release": kernel_release}}
    for name, numbers in fallback.items():
        version, release = facts.packages.get(name, (".".join(map(str, numbers)), ""))
        result[name] = {"version": version, "release": release}
    result["vdsmlike"] = {"version": software_version, "release": "1"}
    return result


def nics(facts: Mapping[str, NicFacts]) -> dict[str, dict[str, Any]]:
    """``nics``: VDSM's per-interface dict (``mtu`` a string, ``speed`` an int)."""
    return {name: _nic(nic) for name, nic in sorted(facts.items())}


def _nic(nic: NicFacts) -> dict[str, Any]:
    """One interface: hardware address, speed, MTU and addresses."""
    addr, netmask = nic.ipv4[0] if nic.ipv4 else ("", "")
    return {
        "hwaddr": nic.hwaddr,
        "speed": nic.speed,
        "mtu": str(nic.mtu),
        "addr": addr,
        "netmask": netmask,
        "ipv4addrs": [f"{a}/{_prefix(m)}" for a, m in nic.ipv4],
        "ipv6addrs": [f"{a}/{_prefix(m)}" for a, m in nic.ipv6],
    }


def _prefix(netmask: str) -> int:
    """A prefix length from a dotted or IPv6 netmask, or from a length already; 0 if unknown."""
    if netmask.isdigit():
        return int(netmask)
    try:
        return bin(int(ipaddress.ip_address(netmask))).count("1")
    except ValueError:
        return 0


# -- host facts (blocking I/O) ----------------------------------------------------------------


def gather_host_facts(
    *,
    os_release_path: str = "/etc/os-release",
    proc: Any = psutil,
    selinux_enforce_path: str = "/sys/fs/selinux/enforce",
) -> HostFacts:
    """
    Read the host's facts. BLOCKING (files, psutil, one ``dpkg-query`` of at most 5 s): run
    it on a worker thread. Never fails: what cannot be read is left empty.

    :returns: a :class:`HostFacts`.
    """
    os_info = parse_os_release(read_text(os_release_path))
    return HostFacts(
        os_name=os_info.get("NAME", os.uname().sysname),
        os_version=os_info.get("VERSION_ID", ""),
        os_release=os_info.get("BUILD_ID", ""),
        kernel_release=os.uname().release,
        packages=_installed_packages(),
        nics=_nic_facts(proc),
        selinux_mode=_selinux_mode(selinux_enforce_path),
    )


def parse_os_release(text: str) -> dict[str, str]:
    """
    Parse ``os-release`` ``KEY=value`` lines (quotes removed, comments skipped).

    :returns: the keys and values found.
    """
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[key] = value
    return values


def parse_dpkg_versions(output: str) -> dict[str, tuple[str, str]]:
    """
    ``dpkg-query -W -f '${Package}\\t${Version}\\n'`` output as ``{package: (version,
    release)}``; the epoch is dropped and the Debian revision becomes the release.
    """
    found = {}
    for line in output.splitlines():
        package, _, full = line.partition("\t")
        full = full.strip().split(":", 1)[-1]
        if package and full:
            version, _, release = full.partition("-")
            found[package.strip()] = (version, release)
    return found


def _installed_packages() -> dict[str, tuple[str, str]]:
    """Versions of libvirt and QEMU from dpkg, ``{}`` when dpkg is missing, slow or failing."""
    candidates = [name for names in PACKAGE_NAMES.values() for name in names]
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *candidates],
            capture_output=True, text=True, timeout=_DPKG_TIMEOUT, check=False,
            stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    found = parse_dpkg_versions(done.stdout)
    return _pick_packages(found, PACKAGE_NAMES)


def _pick_packages(
    found: Mapping[str, tuple[str, str]], names: Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, str]]:
    """The first installed candidate for each ``packages2`` name."""
    picked = {}
    for name, candidates in names.items():
        for candidate in candidates:
            if candidate in found and found[candidate][0]:
                picked[name] = found[candidate]
                break
    return picked


def _nic_facts(proc: Any) -> dict[str, NicFacts]:
    """Interfaces from psutil, without loopback and libvirt's guest taps (``vnet*``)."""
    try:
        addrs, stats = proc.net_if_addrs(), proc.net_if_stats()
    except (OSError, RuntimeError):
        return {}
    result = {}
    for name, entries in addrs.items():
        st = stats.get(name)
        if name == "lo" or name.startswith("vnet") or "loopback" in getattr(st, "flags", ""):
            continue
        result[name] = _one_nic(entries, st, link_family=getattr(proc, "AF_LINK", None))
    return result


def _one_nic(entries: Sequence[Any], st: Any, *, link_family: Any) -> NicFacts:
    """One interface's facts from psutil's address entries and its ``snicstats``."""
    hwaddr = next((e.address for e in entries if e.family == link_family), "")
    ipv4 = tuple((e.address, e.netmask or "") for e in entries if e.family == socket.AF_INET)
    ipv6 = tuple(
        (e.address.split("%", 1)[0], str(_prefix(e.netmask or "")))
        for e in entries
        if e.family == socket.AF_INET6
    )
    return NicFacts(
        hwaddr=hwaddr,
        speed=int(getattr(st, "speed", 0) or 0),
        mtu=int(getattr(st, "mtu", 0) or 0),
        ipv4=ipv4,
        ipv6=ipv6,
    )


def _selinux_mode(path: str) -> str:
    """``"1"``/``"0"`` from the enforce file, ``"-1"`` when SELinux is off or absent."""
    text = read_text(path).strip()
    return text if text in ("0", "1") else "-1"
