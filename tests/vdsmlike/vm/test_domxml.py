"""Domain XML: safe parsing, building from legacy params, our metadata, device XML and identity."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdsmlike.virt import events
from vdsmlike.vm import domxml
from vdsmlike.vm.domxml import (
    InvalidDomainXml,
    InvalidVmParams,
    VmMetadata,
    build_domain,
    device_from_params,
    device_key,
    devices_hash,
    find_device,
    has_agent_metadata,
    metadata_element,
    parse_domain,
    parse_metadata,
    set_domain_type,
    with_metadata,
)

VM_ID = "6a1b2c3d-0000-4000-8000-00000000abcd"
MAC = "52:54:00:12:34:56"


def params(**extra):
    """Minimal valid legacy VM.create params, updated with ``extra``."""
    base = {"vmId": VM_ID, "vmName": "web1", "memSize": 256}
    base.update(extra)
    return base


def domain(body="", *, root="<domain type='qemu'>", uuid=VM_ID, name="web1", memory=None):
    """A small hand-written domain XML."""
    memory = "<memory unit='KiB'>262144</memory>" if memory is None else memory
    uuid_xml = f"<uuid>{uuid}</uuid>" if uuid is not None else ""
    name_xml = f"<name>{name}</name>" if name is not None else ""
    return f"{root}{name_xml}{uuid_xml}{memory}{body}</domain>"


OVIRT = """<domain type='kvm' xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>
  <name>legacy</name><uuid>6A1B2C3D-0000-4000-8000-00000000ABCD</uuid>
  <memory unit='MiB'>512</memory>
  <metadata>
    <ovirt-vm:vm>
      <ovirt-vm:startTime type='float'>1700000000.5</ovirt-vm:startTime>
      <ovirt-vm:balloonTarget type='int'>262144</ovirt-vm:balloonTarget>
      <ovirt-vm:launchPaused>true</ovirt-vm:launchPaused>
      <ovirt-vm:destroy_on_reboot type='bool'>True</ovirt-vm:destroy_on_reboot>
      <ovirt-vm:custom><ovirt-vm:foo>bar</ovirt-vm:foo></ovirt-vm:custom>
      <ovirt-vm:device mac_address='52:54:00:12:34:56'>
        <ovirt-vm:custom><ovirt-vm:queues>4</ovirt-vm:queues></ovirt-vm:custom>
      </ovirt-vm:device>
    </ovirt-vm:vm>
  </metadata>
</domain>"""


# -- constants -------------------------------------------------------------------------------


def test_namespace_constants_are_shared_with_the_virt_layer():
    """The metadata namespace and prefix are the ones vdsmlike.virt.events defines."""
    assert domxml.METADATA_NS == events.METADATA_NS == "urn:vdsmlike:vm:1"
    assert domxml.METADATA_PREFIX == "vdsmlike"
    assert domxml.OVIRT_VM_NS == "http://ovirt.org/vm/1.0"


# -- build then parse ------------------------------------------------------------------------


def test_build_parse_round_trip_gives_the_params_back():
    """Parsing a built domain returns the id, name, memory, vCPUs, boot, devices and metadata."""
    xml = build_domain(
        params(
            vmId=VM_ID.upper(),
            smp="2",
            kernel="/boot/vmlinuz",
            initrd="/boot/initrd.img",
            kernelArgs="console=ttyS0 quiet",
            custom={"sap_agent": "true"},
            launchPaused="true",
            drives=[
                {"path": "/img/root.qcow2", "format": "qcow2", "custom": {"cache": "none"}},
                {"path": "/img/data.img", "iface": "scsi", "readonly": True},
                {"device": "cdrom", "path": "/iso/boot.iso"},
            ],
            nics=[
                {"macAddr": MAC.upper(), "network": "default", "nicModel": "e1000"},
                {"bridge": "br0"},
                {},
            ],
        ),
        serial_path="/var/log/vdsmlike/serial.log",
    )
    spec = parse_domain(xml)
    assert (spec.vm_id, spec.name, spec.domain_type) == (VM_ID, "web1", "qemu")
    assert (spec.memory_kib, spec.current_memory_kib, spec.vcpus) == (262144, 262144, 2)
    assert (spec.kernel, spec.initrd, spec.cmdline) == (
        "/boot/vmlinuz",
        "/boot/initrd.img",
        "console=ttyS0 quiet",
    )
    assert spec.serial_path == "/var/log/vdsmlike/serial.log"
    assert spec.has_balloon
    assert [
        (d.target_dev, d.bus, d.source_path, d.device, d.format, d.readonly) for d in spec.disks
    ] == [
        ("vda", "virtio", "/img/root.qcow2", "disk", "qcow2", False),
        ("sda", "scsi", "/img/data.img", "disk", "raw", True),
        ("hda", "ide", "/iso/boot.iso", "cdrom", "raw", True),
    ]
    assert [(n.mac, n.model, n.network, n.bridge, n.type) for n in spec.nics] == [
        (MAC, "e1000", "default", None, "network"),
        (None, "virtio", None, "br0", "bridge"),
        (None, "virtio", None, None, "user"),
    ]
    assert spec.metadata == VmMetadata(
        launch_paused=True, custom={"sap_agent": "true"}, device_custom={"vda": {"cache": "none"}}
    )


def test_build_always_adds_lifecycle_actions_balloon_and_console():
    """A built domain has destroy/restart/destroy actions, a stats balloon and a serial console."""
    xml = build_domain(params(), serial_path="/tmp/s.log")
    for fragment in (
        "<on_poweroff>destroy</on_poweroff>",
        "<on_reboot>restart</on_reboot>",
        "<on_crash>destroy</on_crash>",
        "<memballoon model='virtio'><stats period='2'/></memballoon>",
        "<serial type='file'><source path='/tmp/s.log'/>",
        "<console type='file'>",
        "<type arch='x86_64'>hvm</type>",
        "<boot dev='hd'/>",
    ):
        assert fragment in xml


def test_build_without_serial_path_uses_a_pty():
    """Without a serial path the serial port and console are ptys."""
    xml = build_domain(params())
    assert "<serial type='pty'>" in xml and "<console type='pty'>" in xml
    assert parse_domain(xml).serial_path is None


def test_build_takes_domain_type_emulator_and_machine():
    """The domain type, emulator and machine keyword arguments reach the XML."""
    xml = build_domain(
        params(), domain_type="kvm", emulator="/usr/bin/qemu-system-x86_64", machine="pc-q35-7.2"
    )
    assert parse_domain(xml).domain_type == "kvm"
    assert "<emulator>/usr/bin/qemu-system-x86_64</emulator>" in xml
    assert "machine='pc-q35-7.2'" in xml


def test_kernel_without_kernel_args_boots_with_a_serial_console():
    """Direct kernel boot without kernelArgs gets console=ttyS0 so the log reaches the serial."""
    assert parse_domain(build_domain(params(kernel="/k"))).cmdline == "console=ttyS0"


def test_names_with_xml_special_characters_round_trip():
    """A vmName with < > & " ' is escaped in the XML and reads back unchanged."""
    name = "a<b>&\"c'd &amp; <name>]]>"
    xml = build_domain(params(vmName=name, custom={"note": "<x>&'\"\r\n"}))
    spec = parse_domain(xml)
    assert spec.name == name
    assert spec.metadata.custom == {"note": "<x>&'\"\r\n"}


def test_drive_targets_are_assigned_per_bus_and_honour_index_and_name():
    """Drives without index get the next free target on their bus; index and name pick one."""
    xml = build_domain(
        params(
            drives=[
                {"path": "/a", "index": 2},
                {"path": "/b"},
                {"path": "/c", "name": "vdb"},
                {"path": "/d", "iface": "sata"},
                {"path": "/dev/sdz"},
            ]
        )
    )
    disks = parse_domain(xml).disks
    assert [d.target_dev for d in disks] == ["vdc", "vda", "vdb", "sda", "vdd"]
    assert "<source dev='/dev/sdz'/>" in xml and "type='block'" in xml


def test_disk_name_counts_like_libvirt():
    """Target dev names go a..z, then aa, ab, ... as libvirt counts them."""
    from vdsmlike.vm.devices import disk_name

    assert [disk_name("vd", i) for i in (0, 25, 26, 27, 701)] == [
        "vda",
        "vdz",
        "vdaa",
        "vdab",
        "vdzz",
    ]


# -- invalid legacy params -------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,key",
    [
        ({"vmId": None}, "vmId"),
        ({"vmId": "not-a-uuid"}, "vmId"),
        ({"vmName": ""}, "vmName"),
        ({"vmName": "   "}, "vmName"),
        ({"vmName": 5}, "vmName"),
        ({"vmName": "a/b"}, "vmName"),
        ({"vmName": "a\x00b"}, "vmName"),
        ({"vmName": "bell\x07"}, "vmName"),
        ({"memSize": -5}, "memSize"),
        ({"memSize": 0}, "memSize"),
        ({"memSize": "lots"}, "memSize"),
        ({"memSize": 1.5}, "memSize"),
        ({"memSize": True}, "memSize"),
        ({"smp": 0}, "smp"),
        ({"smp": "two"}, "smp"),
        ({"smp": 100000}, "smp"),
        ({"kernel": "relative/vmlinuz"}, "kernel"),
        ({"initrd": "/i"}, "initrd"),
        ({"kernelArgs": "quiet"}, "kernelArgs"),
        ({"kernel": "/k", "kernelArgs": 7}, "kernelArgs"),
        ({"custom": []}, "custom"),
        ({"custom": {"bad-name": "x"}}, "custom"),
        ({"custom": {"1st": "x"}}, "custom"),
        ({"custom": {"ok": 3}}, "custom.ok"),
        ({"custom": {"ok": "\x01"}}, "custom.ok"),
        ({"launchPaused": "maybe"}, "launchPaused"),
        ({"drives": {}}, "drives"),
        ({"drives": ["x"]}, "drives[0]"),
        ({"drives": [{}]}, "drives[0].path"),
        ({"drives": [{"path": "disk.img"}]}, "drives[0].path"),
        ({"drives": [{"path": "/a", "format": "vmdk"}]}, "drives[0].format"),
        ({"drives": [{"path": "/a", "iface": "usb"}]}, "drives[0].iface"),
        ({"drives": [{"path": "/a", "device": "floppy"}]}, "drives[0].device"),
        ({"drives": [{"path": "/a", "device": "cdrom", "iface": "virtio"}]}, "drives[0].iface"),
        ({"drives": [{"path": "/a", "index": -1}]}, "drives[0].index"),
        ({"drives": [{"path": "/a", "iface": "ide", "index": 4}]}, "drives[0].index"),
        ({"drives": [{"path": "/a", "name": "sda"}]}, "drives[0].name"),
        ({"drives": [{"path": "/a", "readonly": "sometimes"}]}, "drives[0].readonly"),
        ({"drives": [{"path": "/a"}, {"path": "/b", "index": 0}]}, "drives[1]"),
        ({"drives": [{"path": "/a", "custom": {"a.b": "1"}}]}, "drives[0].custom"),
        ({"nics": "eth0"}, "nics"),
        ({"nics": [{"macAddr": "zz:zz"}]}, "nics[0].macAddr"),
        ({"nics": [{"macAddr": "01:00:5e:00:00:01"}]}, "nics[0].macAddr"),
        ({"nics": [{"network": "a", "bridge": "b"}]}, "nics[0]"),
        ({"nics": [{"network": "bad name"}]}, "nics[0].network"),
        ({"nics": [{"bridge": "a-very-long-bridge-name"}]}, "nics[0].bridge"),
        ({"nics": [{"nicModel": "ne2k"}]}, "nics[0].nicModel"),
        ({"nics": [{"custom": {"a": "b"}}]}, "nics[0].custom"),
    ],
)
def test_every_invalid_legacy_param_names_its_key(change, key):
    """Each invalid legacy VM.create param raises InvalidVmParams whose message names the key."""
    bad = params(**change)
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(InvalidVmParams) as info:
        build_domain(bad)
    assert str(info.value).startswith(key)


def test_mem_size_message_says_what_was_wrong():
    """A negative memSize is refused with the expected unit and the value given."""
    with pytest.raises(
        InvalidVmParams,
        match=r"^memSize must be a positive integer \(MiB\), "
        r"got '-5'$",
    ):
        build_domain(params(memSize=-5))


@pytest.mark.parametrize("key", ["vmId", "vmName", "memSize"])
def test_missing_required_params_are_named(key):
    """A missing vmId, vmName or memSize is reported by name."""
    bad = params()
    del bad[key]
    with pytest.raises(InvalidVmParams, match=f"^{key} is required"):
        build_domain(bad)


def test_params_must_be_a_dict():
    """Legacy params that are not an object are refused."""
    with pytest.raises(InvalidVmParams, match="vmParams must be an object"):
        build_domain(["vmId"])  # type: ignore[arg-type]


def test_bad_configuration_arguments_raise_value_error():
    """A bad domain type, machine, emulator or serial path (configuration) raises ValueError."""
    for kwargs in (
        {"domain_type": "KVM'"},
        {"machine": "pc'"},
        {"emulator": "qemu"},
        {"serial_path": "serial.log"},
    ):
        with pytest.raises(ValueError):
            build_domain(params(), **kwargs)


# -- parsing: units, defaults, errors --------------------------------------------------------


@pytest.mark.parametrize(
    "unit,value,kib",
    [
        (None, "1024", 1024),
        ("b", "2048", 2),
        ("bytes", "1025", 2),
        ("KB", "1024", 1000),
        ("k", "3", 3),
        ("KiB", "3", 3),
        ("MB", "1", 977),
        ("M", "2", 2048),
        ("MiB", "2", 2048),
        ("GB", "1", 976563),
        ("G", "1", 1048576),
        ("GiB", "1", 1048576),
        ("TB", "1", 976562500),
        ("T", "1", 1024**3),
        ("TiB", "1", 1024**3),
        ("gib", "1", 1048576),
    ],
)
def test_memory_units_convert_to_kib_rounding_up(unit, value, kib):
    """Every libvirt memory unit converts to KiB, rounded up as libvirt does."""
    unit_attr = f" unit='{unit}'" if unit else ""
    spec = parse_domain(domain(memory=f"<memory{unit_attr}>{value}</memory>"))
    assert spec.memory_kib == kib


def test_current_memory_vcpus_and_balloon_are_read():
    """currentMemory (capped at memory), vcpu current, and a 'none' balloon are read."""
    spec = parse_domain(
        domain(
            "<currentMemory unit='MiB'>128</currentMemory><vcpu current='2'>4</vcpu>"
            "<devices><memballoon model='none'/></devices>"
        )
    )
    assert (spec.current_memory_kib, spec.vcpus, spec.has_balloon) == (131072, 2, False)
    big = parse_domain(domain("<currentMemory unit='GiB'>8</currentMemory>"))
    assert big.current_memory_kib == big.memory_kib


def test_absent_balloon_counts_for_qemu_but_not_for_test_domains():
    """Without <memballoon>, QEMU domains have one (libvirt adds it) and test domains do not."""
    assert parse_domain(domain()).has_balloon
    assert not parse_domain(domain(root="<domain type='test'>")).has_balloon


def test_defaults_without_optional_elements():
    """A minimal domain has one vCPU, current = memory, no devices and default metadata."""
    spec = parse_domain(domain())
    assert (spec.vcpus, spec.current_memory_kib, spec.disks, spec.nics) == (1, 262144, (), ())
    assert spec.metadata == VmMetadata() and spec.kernel is None


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<domain type='qemu'><name>&lol3;</name></domain>"""
EXTERNAL = """<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<domain type='qemu'><name>&x;</name></domain>"""


@pytest.mark.parametrize(
    "xml,message",
    [
        (BILLION_LAUGHS, "DTDs and entities are forbidden"),
        (EXTERNAL, "DTDs and entities are forbidden"),
        (
            '<!DOCTYPE domain SYSTEM "http://example.com/x.dtd"><domain/>',
            "DTDs and entities are forbidden",
        ),
        (
            "<domain type='qemu'>\n<name>x</name>\n<uuid>\n    <oops</domain>",
            "not well-formed XML at line 4, column 10",
        ),
        (
            "<domain type='qemu'><name>&undefined;</name></domain>",
            "not well-formed XML at line 1, column 27: undefined entity",
        ),
        ("", "empty document"),
        ("   \n", "empty document"),
        (b"<domain/>", "XML must be a string, got bytes"),
        ("<vm/>", "root element must be <domain>, got <vm>"),
        ("<domain xmlns='urn:x' type='qemu'/>", "root element must be <domain>"),
        (domain(root="<domain>"), "<domain> must have a type attribute"),
        (domain(uuid=None), "missing <uuid>"),
        (domain(uuid="1234"), "<uuid> must be a UUID"),
        (domain(name=None), "missing <name>"),
        (domain(name=" "), "<name> must not be empty"),
        (domain(memory=""), "missing <memory>"),
        (domain(memory="<memory>-1</memory>"), "<memory> must be a positive number"),
        (domain(memory="<memory>0</memory>"), "<memory> must be a positive number"),
        (domain(memory="<memory>1.5</memory>"), "<memory> must be a positive number"),
        (domain(memory="<memory unit='furlongs'>1</memory>"), "<memory> has an unknown unit"),
        (domain(memory="<memory unit='EiB'>99</memory>"), "<memory> is too large"),
        (domain("<currentMemory>x</currentMemory>"), "<currentMemory> must be a positive"),
        (domain("<vcpu>0</vcpu>"), "<vcpu> must be an integer from 1"),
        (domain("<vcpu current='3'>2</vcpu>"), "<vcpu current> (3) exceeds <vcpu> (2)"),
        (
            domain("<devices><disk><source file='/a'/></disk></devices>"),
            "<disk> #1: <disk> has no <target dev=...>",
        ),
        (
            domain("<devices><interface><mac address='zz'/></interface></devices>"),
            "<interface> #1: <interface> has an invalid <mac address='zz'>",
        ),
        ("<domain>" + "<a>" * 200 + "</a>" * 200 + "</domain>", "nested too deeply"),
        ("<domain>\ud800</domain>", "not valid Unicode text"),
    ],
)
def test_hostile_or_broken_xml_raises_a_clear_invalid_domain_xml(xml, message):
    """Hostile or broken domain XML raises InvalidDomainXml saying exactly what is wrong."""
    with pytest.raises(InvalidDomainXml) as info:
        parse_domain(xml)
    assert message in str(info.value)


def test_huge_input_is_refused_before_parsing():
    """Input beyond max_bytes is refused with its size and the limit."""
    xml = domain("<description>" + "x" * 2_000_000 + "</description>")
    with pytest.raises(InvalidDomainXml, match=r"^too large: \d+ bytes \(limit 1048576\)$"):
        parse_domain(xml)
    with pytest.raises(InvalidDomainXml, match=r"too large: \d+ bytes \(limit 100\)"):
        parse_domain(domain(), max_bytes=100)


def test_external_entity_is_never_resolved():
    """An external entity pointing at /etc/passwd never gets its content into the result."""
    with pytest.raises(InvalidDomainXml) as info:
        parse_domain(EXTERNAL)
    assert "root:" not in str(info.value)


# -- metadata --------------------------------------------------------------------------------


FULL_METADATA = VmMetadata(
    start_time=1700000000.123456,
    pause_time=1700000100.5,
    balloon_target=524288,
    ballooning_enabled=False,
    launch_paused=True,
    destroy_on_reboot=True,
    custom={"sap_agent": "true", "note": "<&>\"'"},
    device_custom={"vda": {"cache": "none"}},
)


def test_metadata_round_trips_through_a_domain():
    """Every metadata field written with with_metadata reads back equal, floats exactly."""
    xml = with_metadata(domain(), FULL_METADATA)
    assert parse_metadata(xml) == FULL_METADATA
    assert parse_domain(xml).metadata == FULL_METADATA
    assert has_agent_metadata(xml)


def test_metadata_element_is_libvirts_unprefixed_form():
    """metadata_element is the bare <vm> element that virDomainSetMetadata wants and reads back."""
    element = metadata_element(FULL_METADATA)
    assert element.startswith("<vm>") and "xmlns" not in element
    assert parse_metadata(element) == FULL_METADATA


def test_namespaced_element_alone_parses():
    """Our namespaced element alone (as found in domain XML) parses too."""
    from vdsmlike.vm.metadata import namespaced_element

    element = namespaced_element(FULL_METADATA)
    assert element.startswith('<vdsmlike:vm xmlns:vdsmlike="urn:vdsmlike:vm:1">')
    assert parse_metadata(element) == FULL_METADATA


def test_with_metadata_replaces_ours_and_keeps_everything_else():
    """Replacing our element keeps other metadata, prefixes, comments and text byte for byte."""
    original = domain(
        "<!-- keep me -->\n  <metadata>\n    <app:info xmlns:app='urn:app'>x</app:info>\n"
        "    <vdsmlike:vm xmlns:vdsmlike='urn:vdsmlike:vm:1'><vdsmlike:startTime>1.0"
        "</vdsmlike:startTime></vdsmlike:vm>\n  </metadata>"
    )
    updated = with_metadata(original, VmMetadata(start_time=2.5))
    head, tail = original.split("<vdsmlike:vm", 1)
    assert updated.startswith(head)
    assert updated.endswith(tail.split("</vdsmlike:vm>", 1)[1])
    assert parse_metadata(updated).start_time == 2.5
    assert updated.count("<vdsmlike:vm") == 1


def test_with_metadata_creates_metadata_when_absent():
    """A domain without <metadata> gets one holding our element, the rest unchanged."""
    original = domain("<devices/>")
    updated = with_metadata(original, VmMetadata(launch_paused=True))
    assert updated.startswith(original[: -len("</domain>")])
    assert "<metadata><vdsmlike:vm" in updated
    assert parse_metadata(updated).launch_paused


def test_with_metadata_fills_an_empty_metadata_element():
    """An empty-element <metadata/> is opened up to hold our element."""
    updated = with_metadata(domain("<metadata />"), VmMetadata(balloon_target=4))
    assert parse_metadata(updated).balloon_target == 4


def test_with_metadata_keeps_ovirt_metadata_and_then_prefers_ours():
    """VDSM's ovirt-vm element stays next to ours, and ours wins when both are present."""
    updated = with_metadata(OVIRT, VmMetadata(custom={"mine": "1"}))
    assert "<ovirt-vm:foo>bar</ovirt-vm:foo>" in updated
    assert parse_metadata(updated).custom == {"mine": "1"}


def test_with_metadata_refuses_other_roots():
    """with_metadata only edits <domain> documents."""
    with pytest.raises(InvalidDomainXml, match="root element must be <domain>"):
        with_metadata("<vm/>", VmMetadata())


def test_ovirt_vm_metadata_is_read_for_compatibility():
    """VDSM's ovirt-vm metadata gives start time, balloon target, flags and custom properties."""
    spec = parse_domain(OVIRT)
    assert spec.vm_id == VM_ID and spec.memory_kib == 524288
    assert spec.metadata == VmMetadata(
        start_time=1700000000.5,
        balloon_target=262144,
        launch_paused=True,
        destroy_on_reboot=True,
        custom={"foo": "bar"},
        device_custom={MAC: {"queues": "4"}},
    )
    assert has_agent_metadata(OVIRT)


def test_domain_without_agent_metadata_is_external():
    """A domain without our or VDSM's metadata has no agent metadata and default values."""
    assert not has_agent_metadata(domain("<metadata><a:x xmlns:a='urn:a'/></metadata>"))
    assert parse_metadata(domain()) == VmMetadata()


@pytest.mark.parametrize(
    "element,message",
    [
        ("<vm><startTime>soon</startTime></vm>", "<startTime> must be a number, got 'soon'"),
        ("<vm><pauseTime>nan</pauseTime></vm>", "<pauseTime> must be a number"),
        ("<vm><balloonTarget>-1</balloonTarget></vm>", "<balloonTarget> must be a non-negative"),
        ("<vm><launchPaused>perhaps</launchPaused></vm>", "<launchPaused> must be true or false"),
        ("<vm><custom><prop>x</prop></custom></vm>", "needs a name attribute"),
        (
            "<vm><custom><prop name='a-b'>x</prop></custom></vm>",
            "custom property name 'a-b' is not a valid environment variable name",
        ),
    ],
)
def test_bad_metadata_values_raise_clear_errors(element, message):
    """Metadata values that do not parse raise InvalidDomainXml naming the element."""
    with pytest.raises(InvalidDomainXml) as info:
        parse_metadata(element)
    assert message in str(info.value)


# -- domain type -----------------------------------------------------------------------------


def test_set_domain_type_rewrites_only_the_type():
    """set_domain_type changes the type attribute and leaves every other byte alone."""
    original = "<domain  id='3' type=\"kvm\" a='>'>\n<!-- c --><name>x</name></domain>"
    assert set_domain_type(original, "qemu") == (
        "<domain  id='3' type='qemu' a='>'>\n<!-- c --><name>x</name></domain>"
    )


def test_set_domain_type_adds_a_missing_type():
    """A domain without a type attribute gets one."""
    assert set_domain_type(domain(root="<domain>"), "test").startswith("<domain type='test'>")


def test_set_domain_type_refuses_bad_input():
    """A non-word domain type raises ValueError, a non-domain document InvalidDomainXml."""
    with pytest.raises(ValueError):
        set_domain_type(domain(), "kvm' x='1")
    with pytest.raises(InvalidDomainXml):
        set_domain_type("<vm/>", "kvm")


# -- devices ---------------------------------------------------------------------------------


DISK = (
    "<disk type='file' device='disk'><source file='/a.img'/><target dev='vdb' bus='virtio'/></disk>"
)
NIC = f"<interface type='network'><mac address='{MAC.upper()}'/><source network='n'/></interface>"


def test_device_from_xml_params():
    """VDSM 4.2+ params give the one device inside <devices>, also wrapped in <hotplug>."""
    assert device_key(device_from_params({"xml": f"<devices>{DISK}</devices>"}, "disk")) == "vdb"
    wrapped = f"<hotplug><devices>{NIC}</devices><metadata/></hotplug>"
    assert device_key(device_from_params({"xml": wrapped}, "nic")) == MAC


def test_device_from_legacy_params():
    """Legacy drive and nic dicts build the same kind of device XML as build_domain."""
    disk = device_from_params({"drive": {"path": "/b.img", "index": 1}}, "disk")
    assert device_key(disk) == "vdb" and "<source file='/b.img'/>" in disk
    nic = device_from_params({"nic": {"macAddr": MAC, "bridge": "br0"}}, "nic")
    assert device_key(nic) == MAC and "<source bridge='br0'/>" in nic


@pytest.mark.parametrize(
    "params,kind,error,message",
    [
        ({"xml": f"<devices>{DISK}{DISK}</devices>"}, "disk", InvalidDomainXml, "exactly one"),
        ({"xml": f"<devices>{NIC}</devices>"}, "disk", InvalidDomainXml, "exactly one <disk>"),
        ({"xml": "<devices/>"}, "nic", InvalidDomainXml, "found nothing"),
        ({"xml": DISK}, "disk", InvalidDomainXml, "expected <devices>"),
        ({"xml": BILLION_LAUGHS}, "disk", InvalidDomainXml, "DTDs and entities are forbidden"),
        (
            {"xml": "<devices><interface><mac address='x'/></interface></devices>"},
            "nic",
            InvalidDomainXml,
            "invalid <mac",
        ),
        ({}, "disk", InvalidVmParams, "params need 'xml' or 'drive'"),
        ({"nic": {"macAddr": "bad"}}, "nic", InvalidVmParams, "nic.macAddr"),
        ({"drive": {"path": "/a"}}, "disk", InvalidVmParams, "drive needs 'index' or 'name'"),
        ("x", "disk", InvalidVmParams, "params must be an object"),
    ],
)
def test_bad_device_params_are_refused(params, kind, error, message):
    """Bad hotplug params raise InvalidDomainXml or InvalidVmParams with a clear message."""
    with pytest.raises(error) as info:
        device_from_params(params, kind)
    assert message in str(info.value)


def test_device_key_falls_back_to_alias_then_refuses():
    """A device without target dev or MAC is known by its alias; one without any is refused."""
    assert device_key("<interface><alias name='UA-Net0'/></interface>") == "ua-net0"
    with pytest.raises(InvalidDomainXml, match="nothing that identifies it"):
        device_key("<interface/>")
    with pytest.raises(InvalidDomainXml, match="expected <disk> or <interface>"):
        device_key("<video/>")


def test_find_device_finds_by_key_and_kind():
    """find_device returns the live device XML by target dev, MAC or alias, of the right kind."""
    nic = NIC.replace("</interface>", "<alias name='net0'/></interface>")
    live = domain(f"<devices>{DISK}{nic}</devices>")
    disk = find_device(live, "disk", "VDB")
    assert disk is not None and device_key(disk) == "vdb"
    assert device_key(find_device(live, "nic", MAC.upper()) or "") == MAC
    assert find_device(live, "nic", "net0") is not None
    assert find_device(live, "disk", MAC) is None
    assert find_device(domain(), "disk", "vdb") is None


def test_devices_hash_changes_with_devices_only():
    """The devices hash changes when a device is added or removed, not for metadata or spacing."""
    base = domain(f"<devices>{DISK}</devices>")
    more = domain(f"<devices>{DISK}{NIC}</devices>")
    assert devices_hash(base) != devices_hash(more)
    assert devices_hash(with_metadata(base, FULL_METADATA)) == devices_hash(base)
    spaced = domain(f"<devices>\n    {DISK}\n  </devices>")
    assert devices_hash(spaced) == devices_hash(base)
    reordered = base.replace("type='file' device='disk'", "device='disk' type='file'")
    assert devices_hash(reordered) == devices_hash(base)
    assert devices_hash(domain()) == devices_hash(domain())


# -- properties ------------------------------------------------------------------------------

_names = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="/"), min_size=1
).filter(lambda s: s.strip())
_prop_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
_prop_values = st.text(
    st.characters(exclude_categories=["Cs"], min_codepoint=9).filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20 and c not in "\ufffe\uffff"
    )
)
_legacy = st.fixed_dictionaries(
    {
        "vmId": st.uuids().map(str).map(lambda u: u.upper()),
        "vmName": _names,
        "memSize": st.integers(1, domxml.MAX_MEM_MIB),
        "smp": st.one_of(st.integers(1, 4096), st.integers(1, 4096).map(str)),
        "custom": st.dictionaries(_prop_names, _prop_values, max_size=4),
    }
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_legacy)
def test_property_build_then_parse_keeps_the_params(p):
    """For any valid legacy params, parsing the built domain gives back id, name, sizes, custom."""
    spec = parse_domain(build_domain(p))
    assert spec.vm_id == p["vmId"].lower()
    assert spec.name == p["vmName"]
    assert spec.memory_kib == spec.current_memory_kib == p["memSize"] * 1024
    assert spec.vcpus == int(p["smp"])
    assert spec.metadata.custom == p["custom"]


_XML_ALPHABET = st.sampled_from(list("<>/='\"&;!?[]-# \n") + list(string.ascii_letters[:8]))
_garbage = st.one_of(
    st.text(),
    st.binary().map(lambda b: b.decode("latin-1")),
    st.text(_XML_ALPHABET, max_size=80),
    st.lists(
        st.sampled_from(
            [
                "<domain type='qemu'>",
                "</domain>",
                "<name>x</name>",
                f"<uuid>{VM_ID}</uuid>",
                "<memory unit='GiB'>1</memory>",
                "<memory>-3</memory>",
                "<vcpu>",
                "</vcpu>",
                "9",
                "<devices>",
                "</devices>",
                "<disk/>",
                "<interface/>",
                "<metadata>",
                "</metadata>",
                "<!DOCTYPE d>",
                "&x;",
                "<vm>",
                "</vm>",
            ]
        ),
        max_size=12,
    ).map("".join),
)


_VALID = build_domain(params(drives=[{"path": "/a"}], nics=[{"macAddr": MAC}], custom={"a": "b"}))


@st.composite
def _mutated(draw):
    """A valid domain XML with one slice replaced by garbage."""
    start = draw(st.integers(0, len(_VALID)))
    end = draw(st.integers(start, min(len(_VALID), start + 40)))
    return _VALID[:start] + draw(st.text(_XML_ALPHABET, max_size=10)) + _VALID[end:]


@settings(max_examples=500)
@given(st.one_of(_garbage, _mutated()))
def test_property_garbage_raises_only_invalid_domain_xml(text):
    """For any garbage string, parse_domain either succeeds or raises InvalidDomainXml."""
    try:
        parse_domain(text)
    except InvalidDomainXml:
        pass


@settings(max_examples=100)
@given(
    st.builds(
        VmMetadata,
        start_time=st.none() | st.floats(0, 2e9),
        pause_time=st.none() | st.floats(0, 2e9),
        balloon_target=st.none() | st.integers(0, 2**40),
        ballooning_enabled=st.booleans(),
        launch_paused=st.booleans(),
        destroy_on_reboot=st.booleans(),
        custom=st.dictionaries(_prop_names, _prop_values, max_size=3),
        device_custom=st.dictionaries(
            st.sampled_from(["vda", MAC, "ua-x"]),
            st.dictionaries(_prop_names, _prop_values, max_size=2),
            max_size=3,
        ),
    )
)
def test_property_metadata_round_trips(md):
    """Any metadata survives with_metadata then parse_metadata, and metadata_element alone."""
    assert parse_metadata(with_metadata(domain(), md)) == md
    assert parse_metadata(metadata_element(md)) == md


@settings(max_examples=300)
@given(st.one_of(_garbage, _mutated()))
def test_property_garbage_never_escapes_the_other_readers(text):
    """For any garbage, the other XML readers also fail only with InvalidDomainXml."""
    for read in (
        lambda: with_metadata(text, VmMetadata()),
        lambda: set_domain_type(text, "kvm"),
        lambda: parse_metadata(text),
        lambda: devices_hash(text),
        lambda: device_key(text),
        lambda: find_device(text, "nic", MAC),
        lambda: device_from_params({"xml": text}, "disk"),
    ):
        try:
            read()
        except InvalidDomainXml:
            pass


def test_edits_keep_a_declared_encoding_and_non_ascii_text():
    """Splicing works on text with an XML declaration and multi-byte characters before the edit."""
    original = (
        '<?xml version="1.0" encoding="UTF-16"?>\n<domain type="kvm"><name>ünï 名前</name>'
        f"<uuid>{VM_ID}</uuid><memory>1</memory><![CDATA[ <metadata> ]]><!-- <metadata> -->"
        "</domain>"
    )
    updated = set_domain_type(with_metadata(original, VmMetadata(start_time=1.0)), "qemu")
    spec = parse_domain(updated)
    assert (spec.name, spec.domain_type, spec.metadata.start_time) == ("ünï 名前", "qemu", 1.0)
    assert "<!-- <metadata> -->" in updated and "<![CDATA[ <metadata> ]]>" in updated
