"""Host capabilities: the pure VdsmCapabilities builder, host fact parsers, one real gathering."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from vdsmlike.api.schema import Schema
from vdsmlike.host.caps import (
    HostFacts,
    NicFacts,
    capabilities,
    gather_host_facts,
    numa_nodes,
    parse_dpkg_versions,
    parse_os_release,
)
from vdsmlike.virt.events import HostInfo

HOST = HostInfo(
    memory_kib=8 * 1024 * 1024, cpus=8, sockets=2, cores=2, threads=2, cpu_model="Skylake",
    cpu_mhz=2100, cpu_flags=("vmx", "sse4_2"), hostname="host1.example",
    host_uuid="4c4c4544-0042-3010-8051-b3c04f4a5931", emulated_machines=("pc", "q35"),
    kvm=True, lib_version=(9, 0, 0), hv_version=(7, 2, 0), hv_type="QEMU",
    numa_nodes={0: {"memory_kib": 4 * 1024 * 1024, "cpus": [0, 1, 2, 3]},
                1: {"memory_kib": 4 * 1024 * 1024, "cpus": [4, 5, 6, 7]}},
)  # fmt: skip
FACTS = HostFacts(
    os_name="Debian GNU/Linux", os_version="12", os_release="", kernel_release="6.1.0-18-amd64",
    packages={"libvirt": ("9.0.0", "4+deb12u2")},
    nics={"eth0": NicFacts(hwaddr="52:54:00:aa:bb:cc", speed=1000, mtu=1500,
                           ipv4=(("192.0.2.10", "255.255.255.0"),),
                           ipv6=(("2001:db8::10", "64"),))},
    selinux_mode="-1",
)  # fmt: skip
HOOKS = {"before_vm_start": {"50_log": {"checksum": "ab" * 32}}}


@pytest.fixture(scope="module")
def schema() -> Schema:
    """The repository's schema."""
    return Schema.load()


def caps(host: HostInfo = HOST, facts: HostFacts = FACTS) -> dict:
    """Capabilities of ``host`` with ``facts`` and the sample hooks."""
    return capabilities(
        host, facts=facts, hooks=HOOKS, libvirt_uri="qemu:///system", software_version="0.1.0",
        last_client_iface="eth0",
    )  # fmt: skip


def test_capabilities_are_schema_valid(schema):
    """The capabilities dict satisfies the VdsmCapabilities schema the engine relies on."""
    schema.check_result("Host.getCapabilities", caps())


def test_cpu_and_memory_fields_are_strings():
    """CPU topology, speed and memory size are strings, flags comma-joined, as VDSM sends."""
    got = caps()
    assert (got["cpuSockets"], got["cpuCores"], got["cpuThreads"]) == ("2", "4", "8")
    assert (got["cpuSpeed"], got["cpuModel"]) == ("2100.000", "Skylake")
    assert got["cpuFlags"] == "vmx,sse4_2"
    assert (got["memSize"], got["kvmEnabled"]) == ("8192", "true")
    assert got["emulatedMachines"] == ["pc", "q35"]


def test_fixed_engine_facing_fields():
    """Supported engine versions, cluster levels and VDSM's fixed fields are present."""
    got = caps()
    assert got["supportedENGINEs"] == ["4.2", "4.3", "4.4", "4.5"]
    assert got["clusterLevels"] == ["4.2", "4.3", "4.4", "4.5", "4.6", "4.7", "4.8"]
    assert (got["reservedMem"], got["guestOverhead"], got["vmTypes"]) == ("321", "65", ["kvm"])
    assert (got["kdumpStatus"], got["hostedEngineDeployed"]) == (0, False)
    assert (got["uuid"], got["hostname"]) == (HOST.host_uuid, "host1.example")
    assert (got["libvirtUri"], got["lastClientIface"]) == ("qemu:///system", "eth0")
    assert (got["software_version"], got["hooks"]) == ("0.1.0", HOOKS)
    assert all(got[k] == {} for k in ("networks", "bridges", "bonds", "vlans"))
    assert got["additionalFeatures"] == [] and got["selinux"] == {"mode": "-1"}


def test_numa_nodes_from_host_info_or_one_node():
    """NUMA cells map to cpus and MiB strings; without cells, node 0 holds the whole host."""
    assert caps()["numaNodes"] == {
        "0": {"cpus": [0, 1, 2, 3], "totalMemory": "4096"},
        "1": {"cpus": [4, 5, 6, 7], "totalMemory": "4096"},
    }
    flat = replace(HOST, numa_nodes={}, cpus=2)
    assert numa_nodes(flat) == {"0": {"cpus": [0, 1], "totalMemory": "8192"}}


def test_packages_from_facts_with_hypervisor_fallback():
    """packages2 takes dpkg versions when found and the hypervisor's versions otherwise."""
    got = caps()["packages2"]
    assert got["kernel"] == {"version": "6.1.0", "release": "18-amd64"}
    assert got["libvirt"] == {"version": "9.0.0", "release": "4+deb12u2"}
    assert got["qemu-kvm"] == {"version": "7.2.0", "release": ""}
    assert got["vdsmlike"] == {"version": "0.1.0", "release": "1"}


def test_nics_in_vdsm_shape():
    """Each NIC has hwaddr, int speed, string mtu, first IPv4 address and prefixed lists."""
    assert caps()["nics"] == {
        "eth0": {"hwaddr": "52:54:00:aa:bb:cc", "speed": 1000, "mtu": "1500",
                 "addr": "192.0.2.10", "netmask": "255.255.255.0",
                 "ipv4addrs": ["192.0.2.10/24"], "ipv6addrs": ["2001:db8::10/64"]},
    }  # fmt: skip


def test_operating_system_and_kvm_off():
    """The OS triple comes from the facts, and a host without KVM says "false"."""
    got = caps(host=replace(HOST, kvm=False))
    assert got["operatingSystem"] == {"name": "Debian GNU/Linux", "version": "12", "release": ""}
    assert got["kvmEnabled"] == "false"


def test_parse_os_release():
    """os-release lines lose their quotes; comments and junk are skipped."""
    text = "# comment\nNAME=\"Debian GNU/Linux\"\nVERSION_ID='12'\nID=debian\njunk\n"
    assert parse_os_release(text) == {
        "NAME": "Debian GNU/Linux",
        "VERSION_ID": "12",
        "ID": "debian",
    }


def test_parse_dpkg_versions():
    """dpkg versions split into upstream version and Debian revision, epochs dropped."""
    out = "libvirt-daemon\t9.0.0-4+deb12u2\nqemu-system-x86\t1:7.2+dfsg-7\nnative\t1.0\nempty\t\n"
    assert parse_dpkg_versions(out) == {
        "libvirt-daemon": ("9.0.0", "4+deb12u2"),
        "qemu-system-x86": ("7.2+dfsg", "7"),
        "native": ("1.0", ""),
    }


def test_gather_facts_from_fake_files_and_psutil(tmp_path: Path):
    """Facts come from the given os-release, SELinux file and interface tables, lo left out."""
    (tmp_path / "os-release").write_text('NAME="Fedora Linux"\nVERSION_ID=40\nBUILD_ID=7\n')
    (tmp_path / "enforce").write_text("1\n")
    entry = lambda family, address, netmask=None: SimpleNamespace(  # noqa: E731
        family=family, address=address, netmask=netmask
    )
    proc = SimpleNamespace(
        AF_LINK=17,
        net_if_addrs=lambda: {
            "lo": [entry(socket.AF_INET, "127.0.0.1", "255.0.0.0")],
            "vnet3": [entry(17, "fe:54:00:00:00:01")],
            "em1": [entry(17, "52:54:00:00:00:01"),
                    entry(socket.AF_INET, "10.0.0.5", "255.255.0.0"),
                    entry(socket.AF_INET6, "fe80::1%em1", "ffff:ffff:ffff:ffff::")],
        },
        net_if_stats=lambda: {"em1": SimpleNamespace(speed=10000, mtu=9000, flags="up")},
    )  # fmt: skip
    facts = gather_host_facts(
        os_release_path=str(tmp_path / "os-release"), proc=proc,
        selinux_enforce_path=str(tmp_path / "enforce"),
    )  # fmt: skip
    assert (facts.os_name, facts.os_version, facts.os_release) == ("Fedora Linux", "40", "7")
    assert facts.selinux_mode == "1" and list(facts.nics) == ["em1"]
    assert facts.nics["em1"] == NicFacts(
        hwaddr="52:54:00:00:00:01", speed=10000, mtu=9000,
        ipv4=(("10.0.0.5", "255.255.0.0"),), ipv6=(("fe80::1", "64"),),
    )  # fmt: skip


def test_gather_facts_on_this_host(schema):
    """A real gathering is quick, never fails, and its capabilities are schema-valid."""
    started = time.monotonic()
    facts = gather_host_facts()
    assert time.monotonic() - started < 10
    assert facts.kernel_release == os.uname().release
    assert "lo" not in facts.nics and facts.selinux_mode in ("-1", "0", "1")
    schema.check_result("Host.getCapabilities", caps(facts=facts))
