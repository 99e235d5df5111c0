"""Pure: VM.migrate's params, the hypervisor's request, the destination's XML, wire shapes."""

from __future__ import annotations

import pytest

from vdsmlike.vm.migration import (
    ConvergenceSchedule,
    Destination,
    InvalidMigrationParams,
    JobStats,
    MigrationSettings,
    MigrationView,
    ScheduleAction,
    StallingItem,
    destination_xml,
    migration_request,
    migration_status,
    parse_change_params,
    parse_destination,
    parse_migrate_params,
    progress_event,
    progress_percent,
)
from vdsmlike.vm.xmlsafe import InvalidDomainXml

SETTINGS = MigrationSettings()
VM_ID = "6a1b2c3d-0000-4000-8000-00000000abcd"


@pytest.mark.parametrize(
    "dst,url,host",
    [
        ("host7", "ws://host7:54321/jsonrpc", "host7"),
        ("10.0.0.5:4000", "ws://10.0.0.5:4000/jsonrpc", "10.0.0.5"),
        ("[fd00::5]:4000", "ws://[fd00::5]:4000/jsonrpc", "fd00::5"),
        (" host7:1 ", "ws://host7:1/jsonrpc", "host7"),
        ("ws://h:9/jsonrpc", "ws://h:9/jsonrpc", "h"),
        ("wss://h.example/jsonrpc", "wss://h.example/jsonrpc", "h.example"),
    ],
)
def test_destination_forms(dst, url, host):
    """dst is VDSM's host[:port] (54321 by default, IPv6 in brackets) or an agent URL."""
    assert parse_destination(dst) == Destination(url, host)


@pytest.mark.parametrize("dst", ["", "host:99999", "host:port", "ws://:5/x", "h/path", 5, None])
def test_bad_destinations_are_refused(dst):
    """Anything else is refused, naming dst."""
    with pytest.raises(InvalidMigrationParams, match="dst"):
        parse_destination(dst)


def test_defaults_are_vdsms():
    """Without options a migration is plain: the host's bandwidth, no flags, no schedule."""
    params = parse_migrate_params({"dst": "h"}, SETTINGS)
    assert params.max_bandwidth == 52
    assert not any((params.auto_converge, params.compressed, params.tunneled, params.encrypted))
    assert params.schedule is None and params.parallel == 0
    assert params.outgoing_limit is None and params.incoming_limit is None


def test_options_in_vdsms_string_forms():
    """Booleans and numbers may come as strings, as VDSM's engine sends some of them."""
    params = parse_migrate_params(
        {
            "dst": "h:1",
            "method": "online",
            "mode": "remote",
            "autoConverge": "true",
            "compressed": "False",
            "maxBandwidth": "80",
            "outgoingLimit": 3,
            "incomingLimit": "1",
            "dstqemu": "192.0.2.9",
            "dstToken": "s3cret",
            "enableGuestEvents": True,
            "parallel": 4,
            "zerocopy": True,
        },
        SETTINGS,
    )
    assert params.auto_converge and not params.compressed
    assert (params.max_bandwidth, params.outgoing_limit, params.incoming_limit) == (80, 3, 1)
    assert (params.dstqemu, params.dst_token, params.parallel) == ("192.0.2.9", "s3cret", 4)
    assert params.zerocopy


@pytest.mark.parametrize(
    "raw,key",
    [
        ({}, "dst"),
        ({"dst": "h", "method": "offline"}, "method"),
        ({"dst": "h", "mode": "file"}, "mode"),
        ({"dst": "h", "autoConverge": "perhaps"}, "autoConverge"),
        ({"dst": "h", "maxBandwidth": -1}, "maxBandwidth"),
        ({"dst": "h", "maxBandwidth": "fast"}, "maxBandwidth"),
        ({"dst": "h", "zerocopy": True}, "zerocopy"),
        ({"dst": "h", "parallel": 256}, "parallel"),
        ({"dst": "h", "dstToken": 7}, "dstToken"),
        ("dst=h", "params"),
    ],
)
def test_bad_options_name_the_key(raw, key):
    """Each refusal names the key it refuses."""
    with pytest.raises(InvalidMigrationParams, match=key):
        parse_migrate_params(raw, SETTINGS)


def test_zero_bandwidth_means_the_hosts():
    """maxBandwidth 0 (or absent) is the host's migration_max_bandwidth, as in VDSM."""
    settings = MigrationSettings(max_bandwidth=0)
    assert parse_migrate_params({"dst": "h", "maxBandwidth": 0}, SETTINGS).max_bandwidth == 52
    assert parse_migrate_params({"dst": "h"}, settings).max_bandwidth == 0


def test_vdsms_convergence_schedule():
    """The schedule reads as the engine sends it, downtimes as strings."""
    raw = {
        "init": [{"name": "setDowntime", "params": ["100"]}],
        "stalling": [
            {"limit": 1, "action": {"name": "setDowntime", "params": ["150"]}},
            {"limit": 3, "action": {"name": "postcopy", "params": []}},
            {"limit": -1, "action": {"name": "abort", "params": []}},
        ],
    }
    params = parse_migrate_params({"dst": "h", "convergenceSchedule": raw}, SETTINGS)
    assert params.schedule == ConvergenceSchedule(
        init=(ScheduleAction("setDowntime", 100),),
        stalling=(
            StallingItem(1, ScheduleAction("setDowntime", 150)),
            StallingItem(3, ScheduleAction("postcopy")),
            StallingItem(-1, ScheduleAction("abort")),
        ),
    )


def test_an_empty_schedule_is_none():
    """An empty schedule means the legacy downtime ramp."""
    for raw in ({}, {"init": [], "stalling": []}, None):
        assert (
            parse_migrate_params({"dst": "h", "convergenceSchedule": raw}, SETTINGS).schedule
            is None
        )


@pytest.mark.parametrize(
    "schedule,key",
    [
        ({"bogus": []}, "unknown keys"),
        ({"init": {}}, "convergenceSchedule.init"),
        ({"init": [{"name": "reboot"}]}, r"init\[0\].name"),
        ({"init": [{"name": "setDowntime"}]}, r"init\[0\].params"),
        ({"init": [{"name": "setDowntime", "params": ["0"]}]}, r"init\[0\].params\[0\]"),
        ({"stalling": [{"limit": -2, "action": {"name": "abort"}}]}, r"stalling\[0\].limit"),
        ({"stalling": [{"limit": 1}]}, r"stalling\[0\].action"),
    ],
)
def test_bad_schedules_name_the_entry(schedule, key):
    """A bad schedule entry is refused with its path."""
    with pytest.raises(InvalidMigrationParams, match=key):
        parse_migrate_params({"dst": "h", "convergenceSchedule": schedule}, SETTINGS)


def test_change_params_takes_only_the_bandwidth():
    """migrateChangeParams changes maxBandwidth and nothing else."""
    assert parse_change_params({"maxBandwidth": "64"}) == 64
    for raw in ({}, {"maxBandwidth": 5, "compressed": True}, {"maxBandwidth": -3}):
        with pytest.raises(InvalidMigrationParams):
            parse_change_params(raw)


# -- the request --------------------------------------------------------------------------------


def test_request_from_params_and_answer():
    """The request carries the destination's URI and XML, the flags and the bandwidth."""
    params = parse_migrate_params(
        {"dst": "10.1.1.1:5", "autoConverge": True, "maxBandwidth": 7}, SETTINGS
    )
    request = migration_request(params, {"libvirtUri": "qemu+tls://b/system", "xml": "<d/>"})
    assert (request.dest_uri, request.dest_xml, request.bandwidth) == (
        "qemu+tls://b/system",
        "<d/>",
        7,
    )
    assert (request.migrate_uri, request.listen_address) == ("tcp://10.1.1.1", "10.1.1.1")
    assert request.auto_converge and not request.compressed


def test_the_migration_address_precedence():
    """dstqemu wins over the destination's advertised address, which wins over dst's host."""
    answer = {"libvirtUri": "u", "migrationAddress": "fd00::7"}
    plain = parse_migrate_params({"dst": "h"}, SETTINGS)
    assert migration_request(plain, answer).migrate_uri == "tcp://[fd00::7]"
    chosen = parse_migrate_params({"dst": "h", "dstqemu": "192.0.2.1"}, SETTINGS)
    assert migration_request(chosen, answer).migrate_uri == "tcp://192.0.2.1"


def test_an_answer_without_a_uri_is_refused():
    """The destination must say where its libvirt is."""
    with pytest.raises(InvalidMigrationParams, match="libvirt URI"):
        migration_request(parse_migrate_params({"dst": "h"}, SETTINGS), {"xml": "<d/>"})


# -- the destination's XML ----------------------------------------------------------------------

SOURCE_XML = f"""<domain type='qemu'>
  <name>g</name>
  <uuid>{VM_ID}</uuid>
  <metadata><vdsmlike:vm xmlns:vdsmlike="urn:vdsmlike:vm:1">
    <vdsmlike:startTime>5</vdsmlike:startTime></vdsmlike:vm></metadata>
  <memory unit='KiB'>131072</memory>
  <devices>
    <serial type='file'>
      <source path='/src/serial/{VM_ID}.log'/>
      <target port='0'/>
    </serial>
    <serial type='file'><source path="/src/other.log"/><target port='1'/></serial>
    <console type='file'>
      <source path='/src/serial/{VM_ID}.log'/>
      <target type='serial' port='0'/>
    </console>
    <serial type='pty'><target port='2'/></serial>
  </devices>
</domain>
"""


def test_serial_logs_move_to_the_destinations_directory():
    """File-backed serial and console logs go to this host's serial dir (one path per source
    file, the console sharing its serial's); nothing else changes."""
    xml = destination_xml(SOURCE_XML, "/dst/serial", VM_ID)
    assert f"path='/dst/serial/{VM_ID}.log'" in xml
    assert xml.count(f"/dst/serial/{VM_ID}.log") == 2
    assert f"path='/dst/serial/{VM_ID}-1.log'" in xml
    assert "/src/" not in xml
    unchanged = xml.replace(f"/dst/serial/{VM_ID}-1.log", "/src/other.log").replace(
        f"/dst/serial/{VM_ID}.log", f"/src/serial/{VM_ID}.log"
    )
    assert unchanged == SOURCE_XML.replace('"/src/other.log"', "'/src/other.log'")


def test_without_a_serial_dir_the_xml_is_kept():
    """A destination without a serial dir runs the source's XML as it is."""
    assert destination_xml(SOURCE_XML, None, VM_ID) == SOURCE_XML


@pytest.mark.parametrize("xml", ["<domain", "<network/>", "<!DOCTYPE x []><domain/>"])
def test_bad_source_xml_is_refused(xml):
    """Broken, hostile or non-domain XML is refused."""
    with pytest.raises(InvalidDomainXml):
        destination_xml(xml, "/dst", VM_ID)


# -- wire shapes --------------------------------------------------------------------------------


def test_progress_is_a_capped_percentage():
    """Progress is the share of data sent, 0-99 until the migration is done."""
    assert progress_percent(JobStats(1, 1000, 250, 750, 10)) == 25
    assert progress_percent(JobStats(3, 1000, 3000, 0, 10)) == 99
    assert progress_percent(JobStats(1, 0, 0, 0, 0)) == 0


def test_progress_event_shape():
    """VM_migration_status carries progress, postcopy and, when known, the downtime."""
    assert progress_event(VM_ID, 42, None) == {VM_ID: {"progress": 42, "postcopy": False}}
    assert progress_event(VM_ID, 42, 300)[VM_ID]["downtime"] == 300


def test_status_of_a_failed_migration_has_code_12():
    """A failed or cancelled migration reports migrateErr (12) with the reason."""
    failed = migration_status(MigrationView(state="failed", progress=30, error="link down"))
    assert failed["status"] == {"code": 12, "message": "Fatal error during migration: link down"}
    assert (failed["state"], failed["progress"], failed["error"]) == ("failed", 30, "link down")
    done = migration_status(MigrationView(state="succeeded", progress=100, downtime=150))
    assert done["status"] == {"code": 0, "message": "Migration done"}
    assert done["downtime"] == 150 and "error" not in done


# -- settings -----------------------------------------------------------------------------------


def test_settings_from_the_agent_config():
    """[vars] takes VDSM's migration setting names; the defaults are VDSM's."""
    from vdsmlike.config import AgentConfig, finish, migration_settings, read_ini

    assert migration_settings(finish(AgentConfig())) == MigrationSettings()
    config = finish(
        read_ini(
            "[vars]\nmax_outgoing_migrations = 3\nmigration_max_bandwidth = 0\n"
            "migration_monitor_interval = 0.5\nmigration_address = 192.0.2.7\n"
        )
    )
    settings = migration_settings(config)
    assert (settings.max_outgoing, settings.max_incoming, settings.max_bandwidth) == (3, 2, 0)
    assert (settings.monitor_interval, settings.address) == (0.5, "192.0.2.7")


@pytest.mark.parametrize(
    "line",
    [
        "max_incoming_migrations = 0",
        "migration_monitor_interval = 0",
        "migration_downtime = -5",
        "migration_downtime_steps = 0",
        "migration_max_bandwidth = fast",
    ],
)
def test_unusable_settings_are_refused(line):
    """Settings that make no sense are refused at start, naming the setting."""
    from vdsmlike.config import ConfigError, finish, read_ini

    with pytest.raises(ConfigError, match=line.split()[0]):
        finish(read_ini(f"[vars]\n{line}\n"))
