"""Tests for ``vdsmlike.api.schema``: the schema files load, and bind, check and explain."""

from __future__ import annotations

import copy
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from twisted.logger import capturedLogs

from vdsmlike.api import errors
from vdsmlike.api.errors import InvalidParams, MethodNotFound
from vdsmlike.api.schema import (
    SCHEMA_DIR_ENV,
    Schema,
    SchemaFileError,
    SchemaViolation,
    default_schema_dir,
)

VM_ID = "6c1e5f0a-1b2c-4d3e-8f90-0123456789ab"
OTHER_ID = "0f8e7d6c-5b4a-4321-9876-fedcba987654"
XML = f"<domain type='kvm'><uuid>{VM_ID}</uuid><name>web1</name></domain>"

EXPECTED_VERBS = {
    "Host.ping2", "Host.getCapabilities", "Host.getHardwareInfo", "Host.getStats",
    "Host.getVMList", "Host.getVMFullList", "Host.getAllVmStats", "Host.dumpxmls",
    "Host.subscribe", "Host.unsubscribe",
    "VM.create", "VM.destroy", "VM.shutdown", "VM.reset", "VM.pause", "VM.cont", "VM.getStats",
    "VM.setBalloonTarget", "VM.hotplugDisk", "VM.hotunplugDisk", "VM.hotplugNic",
    "VM.hotunplugNic",
    "VM.setCpuTuneQuota", "VM.setCpuTunePeriod", "VM.setIoTune", "VM.getIoTune",
    "VM.getIoTunePolicy", "Host.getAllVmIoTunePolicies", "Host.setKsmTune",
    "Host.setMOMPolicy", "Host.setMOMPolicyParameters", "Host.restart",
    "VM.migrate", "VM.migrateCancel", "VM.getMigrationStatus", "VM.migrateChangeParams",
    "VM.migrationCreate", "VM.migrationFinish",
    "VM.getConsoleOutput",
}  # fmt: skip


@pytest.fixture(scope="module")
def schema() -> Schema:
    """The repository's schema, strict."""
    return Schema.load()


@pytest.fixture(scope="module")
def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """The two schema files, parsed."""
    directory = default_schema_dir()
    return tuple(  # type: ignore[return-value]
        yaml.safe_load((directory / name).read_text()) for name in ("agent.yml", "events.yml")
    )


# -- samples ----------------------------------------------------------------------------------


def running_stats() -> dict[str, Any]:
    """A VmStats of a running VM after two samples."""
    return {
        "vmId": VM_ID, "vmName": "web1", "vmType": "kvm", "status": "Up",
        "statusTime": 2**31 + 5000, "elapsedTime": "42", "monitorResponse": "0",
        "pauseCode": "NOERR", "timeOffset": "0", "clientIp": "", "displayInfo": [],
        "hash": "-3984417362584862117", "vmJobs": {}, "guestIPs": "",
        "cpuUser": "1.25", "cpuSys": "0.40", "cpuUsage": "1830000000", "cpuActual": True,
        "vcpuCount": "2", "vcpuQuota": "-1", "vcpuPeriod": "100000", "vcpuUserLimit": "100",
        "memUsage": "31",
        "memoryStats": {"mem_total": "2047804", "mem_unused": "1400000", "mem_free": "1500000",
                        "mem_buffers": "1000", "mem_cached": "90000", "swap_in": "0",
                        "swap_out": "0", "majflt": "0", "minflt": "12", "pageflt": "12"},
        "balloonInfo": {"balloon_max": "2097152", "balloon_min": "0",
                        "balloon_cur": "2097152", "balloon_target": "2097152",
                        "ballooning_enabled": True},
        "disks": {"vda": {"readRate": "0.0", "writeRate": "512.5", "readLatency": "0",
                          "writeLatency": "120000", "flushLatency": "0", "readOps": "10",
                          "writeOps": "3", "readBytes": "40960", "writtenBytes": "1024",
                          "truesize": "1073741824", "apparentsize": "1073741824",
                          "imageID": ""}},
        "network": {"vnet0": {"rx": "1200", "tx": "800", "rxErrors": "0", "rxDropped": "0",
                              "txErrors": "0", "txDropped": "0", "speed": "1000",
                              "state": "unknown", "macAddr": "52:54:00:12:34:56",
                              "name": "vnet0", "sampleTime": 1234.5}},
    }  # fmt: skip


def down_stats() -> dict[str, Any]:
    """A VmStats of a VM that went Down."""
    return {
        "vmId": VM_ID, "vmName": "web1", "status": "Down", "statusTime": 2**31 + 9000,
        "exitCode": 0, "exitReason": 7, "exitMessage": "User shut down from within the guest",
        "timeOffset": "0",
    }  # fmt: skip


def host_stats() -> dict[str, Any]:
    """A complete HostStats."""
    return {
        "cpuUser": 3.5, "cpuSys": 1.25, "cpuIdle": 95.25, "cpuUserVdsmd": 0.5,
        "cpuSysVdsmd": 0.25, "cpuLoad": "0.42",
        "cpuStatistics": {"0": {"nodeIndex": 0, "cpuUser": 3.0, "cpuSys": 1.0, "cpuIdle": 96.0}},
        "memUsed": 40, "memFree": 9000, "memAvailable": 9000, "memCommitted": 2048,
        "swapTotal": 2048, "swapFree": 2048, "memShared": 0, "ksmState": False,
        "ksmPages": 100, "ksmCpu": 0.0, "ksmMergeAcrossNodes": True, "momStatus": "active",
        "vmCount": 1, "vmActive": 1, "vmMigrating": 0, "incomingVmMigrations": 0,
        "outgoingVmMigrations": 0,
        "network": {"eth0": {"rx": "100", "tx": "200", "rxDropped": "0", "txDropped": "0",
                             "rxErrors": "0", "txErrors": "0", "speed": "1000",
                             "state": "up", "sampleTime": 1700000000.5}},
        "diskStats": {"/tmp": {"free": "12000"}}, "elapsedTime": 30, "bootTime": 1700000000,
        "dateTime": "2026-11-24T18:00:00 GMT",
        "numaNodeMemFree": {"0": {"memFree": 9000, "memPercent": 40}}, "thpState": "madvise",
    }  # fmt: skip


def capabilities() -> dict[str, Any]:
    """A small VdsmCapabilities with the gate keys and a few typed extras."""
    return {
        "software_version": "0.1", "supportedENGINEs": ["4.2", "4.5"],
        "clusterLevels": ["4.2", "4.7"], "hooks": {"before_vm_start": {"50_x": {"checksum": "ab"}}},
        "lastClientIface": "lo", "networks": {}, "bridges": {}, "nics": {"eth0": {}},
        "bonds": {}, "vlans": {}, "cpuCores": "4", "memSize": "15890", "kvmEnabled": "true",
        "cpuFlags": "fpu,vme,vmx", "operatingSystem": {"name": "Debian", "version": "12",
                                                       "release": "1"},
        "someFutureKey": [1, 2, 3],
    }  # fmt: skip


def vm_definition(status: str = "WaitForLaunch") -> dict[str, Any]:
    """A VmDefinition."""
    return {
        "vmId": VM_ID, "vmName": "web1", "status": status, "statusTime": 2**31,
        "memSize": 1024, "smp": "2", "vmType": "kvm", "custom": {}, "xml": XML,
    }  # fmt: skip


def legacy_params(**changes: Any) -> dict[str, Any]:
    """VM.create params in the legacy dictionary form."""
    vm_params = {
        "vmId": VM_ID, "vmName": "web1", "memSize": 1024, "smp": 2,
        "drives": [{"path": "/images/web1.qcow2", "format": "qcow2", "iface": "virtio"}],
        "nics": [{"macAddr": "52:54:00:12:34:56", "network": "ovirtmgmt"}],
        "custom": {"sap_agent": "true"}, "launchPaused": False,
    }  # fmt: skip
    vm_params.update(changes)
    return {"vmParams": vm_params}


def refs_and_names(node: Any) -> Iterator[str]:
    """Every ``$ref`` in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs_and_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_and_names(item)


def write_schema(directory: Path, agent: dict[str, Any]) -> Path:
    """Write ``agent`` as ``agent.yml`` (without events) and return its path."""
    path = directory / "agent.yml"
    path.write_text(yaml.safe_dump(agent))
    return path


def minimal_agent(**verb: Any) -> dict[str, Any]:
    """An agent document with one verb, ``Test.verb``, whose entry is updated by ``verb``."""
    entry = {
        "description": "A verb.", "added": "0.1", "params": [],
        "result": {"description": "True.", "type": {"const": True}}, "errors": [100],
    }  # fmt: skip
    entry.update(verb)
    return {"format": 1, "types": {"Name": {"type": "string"}}, "verbs": {"Test.verb": entry}}


# -- the files --------------------------------------------------------------------------------


def test_files_load_with_every_verb(schema: Schema) -> None:
    """The repository's schema loads and holds exactly the agent's verbs."""
    assert schema.verbs() == EXPECTED_VERBS


def test_every_verb_is_documented(schema: Schema) -> None:
    """Every verb has a description, an added tag, described params, a result and errors."""
    for verb in schema.verbs():
        doc = schema.describe(verb)
        assert doc["description"].strip(), verb
        assert isinstance(doc["added"], str) and doc["added"], verb
        assert isinstance(doc["params"], list), verb
        for param in doc["params"]:
            assert param["name"] and param["description"].strip() and "type" in param, verb
        assert doc["result"]["description"].strip() and "type" in doc["result"], verb
        assert doc["errors"] and all(isinstance(code, int) for code in doc["errors"]), verb


def test_vm_verbs_take_vm_id_first(schema: Schema) -> None:
    """Every VM.* verb takes vmID as its first param, as VDSM's VM constructor does."""
    for verb in schema.verbs():
        if verb.startswith("VM."):
            assert schema.describe(verb)["params"][0]["name"] == "vmID", verb


def test_error_codes_are_ours(schema: Schema) -> None:
    """Every error code a verb lists is the code of an error class in ``api/errors.py``."""
    known = {
        cls.code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.VdsmError) and cls is not errors.VdsmError
    }
    for verb in schema.verbs():
        assert set(schema.describe(verb)["errors"]) <= known, verb


def test_every_ref_resolves(documents: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Every ``$ref`` in both files names a type defined in one of them."""
    agent, events = documents
    types = set(agent["types"]) | set(events.get("types", {}))
    refs = list(refs_and_names(agent)) + list(refs_and_names(events))
    assert refs
    for ref in refs:
        assert ref.startswith("#/types/") and ref[len("#/types/") :] in types, ref


def test_event_names(schema: Schema) -> None:
    """The events are named with a wildcard object id."""
    assert schema.event_names() == {"|virt|VM_status|*", "|virt|VM_migration_status|*"}


def test_schema_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``VDSMLIKE_SCHEMA_DIR`` points ``Schema.load()`` at another directory."""
    write_schema(tmp_path, minimal_agent())
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(tmp_path))
    loaded = Schema.load()
    assert loaded.verbs() == {"Test.verb"}
    assert loaded.event_names() == frozenset()


def test_both_files_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``VDSMLIKE_SCHEMA_DIR`` holding both files, both are loaded from there."""
    for name in ("agent.yml", "events.yml"):
        shutil.copy(default_schema_dir() / name, tmp_path / name)
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(tmp_path))
    assert Schema.load().event_names() == {"|virt|VM_status|*", "|virt|VM_migration_status|*"}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"result": {"description": "x", "type": {"$ref": "#/types/Nope"}}}, "Nope"),
        ({"result": {"description": "x", "type": "Nope"}}, "unknown type 'Nope'"),
        ({"added": 0.1}, "quoted version"),
        ({"params": [{"name": "a", "type": "Name"}]}, "missing 'description'"),
        ({"params": [{"name": "a", "description": "A.", "type": "Name", "defualt": 1}]},
         "unknown key 'defualt'"),
        ({"params": [{"name": "a", "description": "A.", "type": "integer", "default": "x"}]},
         "default does not match"),
        ({"result": {"description": "x", "type": {"type": "strnig"}}}, "bad JSON Schema"),
        ({"errors": ["noVM"]}, "error codes"),
    ],
)  # fmt: skip
def test_malformed_schema_is_refused(
    tmp_path: Path, changes: dict[str, Any], fragment: str
) -> None:
    """A malformed verb entry fails the load with a SchemaFileError naming the problem."""
    path = write_schema(tmp_path, minimal_agent(**changes))
    with pytest.raises(SchemaFileError, match=fragment):
        Schema.load(path)


def test_recursive_type(tmp_path: Path) -> None:
    """A type that refers to itself is validated through the registry."""
    agent = minimal_agent(params=[{"name": "tree", "description": "A tree.", "type": "Tree"}])
    agent["types"]["Tree"] = {
        "type": "object",
        "properties": {"children": {"type": "array", "items": {"$ref": "#/types/Tree"}}},
        "additionalProperties": False,
    }
    loaded = Schema.load(write_schema(tmp_path, agent))
    assert loaded.bind_params("Test.verb", [{"children": [{"children": []}]}])
    with pytest.raises(InvalidParams, match=r"tree\.children\[0\]\.leaf: unknown property"):
        loaded.bind_params("Test.verb", [{"children": [{"leaf": 1}]}])


# -- binding params ---------------------------------------------------------------------------


def test_no_params(schema: Schema) -> None:
    """A verb without params binds None, an empty object and an empty array to ``{}``."""
    for params in (None, {}, []):
        assert schema.bind_params("Host.ping2", params) == {}


def test_positional_params_are_named_in_schema_order(schema: Schema) -> None:
    """Positional params take the names of the schema's params, in order."""
    bound = schema.bind_params("VM.shutdown", [VM_ID, 10, "bye", True])
    assert bound == {
        "vmID": VM_ID, "delay": 10, "message": "bye", "reboot": True, "timeout": 30,
        "force": False,
    }  # fmt: skip


def test_named_params(schema: Schema) -> None:
    """Named params are kept and the missing optional ones get their defaults."""
    bound = schema.bind_params("Host.getVMList", {"onlyUUID": False})
    assert bound == {"fullStatus": False, "vmList": [], "onlyUUID": False}


def test_defaults_are_not_shared(schema: Schema) -> None:
    """A mutable default is a fresh copy for each request."""
    first = schema.bind_params("Host.getVMFullList", None)
    first["vmList"].append(VM_ID)
    assert schema.bind_params("Host.getVMFullList", None) == {"vmList": []}


def test_caller_params_are_not_mutated(schema: Schema) -> None:
    """Binding returns a new dict and leaves the caller's params as they were."""
    params = {"vmID": VM_ID}
    schema.bind_params("VM.destroy", params)
    assert params == {"vmID": VM_ID}


def test_too_many_positional_params(schema: Schema) -> None:
    """More positional params than the verb takes is InvalidParams."""
    with pytest.raises(InvalidParams, match="VM.reset takes at most 1 params, got 2"):
        schema.bind_params("VM.reset", [VM_ID, 1])


def test_params_of_another_json_type(schema: Schema) -> None:
    """Params that are neither an object, an array nor null are InvalidParams."""
    with pytest.raises(InvalidParams, match="object or an array"):
        schema.bind_params("Host.ping2", "x")


def test_unknown_verb(schema: Schema) -> None:
    """An unknown verb is MethodNotFound, -32601."""
    with pytest.raises(MethodNotFound) as caught:
        schema.bind_params("Host.nope", {})
    assert caught.value.code == -32601


def test_unknown_param(schema: Schema) -> None:
    """An unknown param is InvalidParams naming it and the params the verb takes."""
    with pytest.raises(InvalidParams) as caught:
        schema.bind_params("VM.destroy", {"vmID": VM_ID, "force": True})
    assert caught.value.code == -32602
    assert str(caught.value) == (
        "Invalid params: force: unknown param; VM.destroy takes vmID, gracefulAttempts"
    )


def test_missing_param(schema: Schema) -> None:
    """A missing required param is InvalidParams naming it."""
    with pytest.raises(InvalidParams, match="Invalid params: vmID: missing required param"):
        schema.bind_params("VM.pause", {})


def test_wrong_type(schema: Schema) -> None:
    """A param of the wrong type is InvalidParams naming it and the violation."""
    with pytest.raises(InvalidParams, match="onlyUUID: 'yes' is not of type 'boolean'"):
        schema.bind_params("Host.getVMList", {"onlyUUID": "yes"})


def test_null_for_a_param_with_a_non_null_default(schema: Schema) -> None:
    """Null is a wrong type for a param whose default is not null."""
    with pytest.raises(InvalidParams, match="reboot: None is not of type 'boolean'"):
        schema.bind_params("VM.shutdown", {"vmID": VM_ID, "reboot": None})


def test_bad_uuid(schema: Schema) -> None:
    """A vmID that is no UUID is InvalidParams."""
    with pytest.raises(InvalidParams, match="vmID: 'web1' does not match"):
        schema.bind_params("VM.getStats", ["web1"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"memSize": -1}, "vmParams.memSize: -1 is less than the minimum of 1"),
        ({"memSize": "1024"}, "vmParams.memSize: '1024' is not of type 'integer'"),
        ({"smp": "two"}, "vmParams.smp: 'two' does not match '^[1-9][0-9]*$'"),
        ({"vmName": None}, "vmParams.vmName: None is not of type 'string'"),
        ({"drives": [{"path": "/a", "format": "vmdk", "iface": "virtio"}]},
         "vmParams.drives[0].format: 'vmdk' is not one of ['raw', 'qcow2']"),
        ({"drives": [{"path": "/a", "iface": "floppy"}]},
         "vmParams.drives[0].iface: 'floppy' is not one of"),
        ({"nics": [{"macAddr": "52:54:00:12:34:56", "network": "n", "bridge": "b"}]},
         "vmParams.nics[0]: give at most one of network, bridge"),
        ({"nics": [{"macAddr": "nope", "bridge": "br0"}]}, "vmParams.nics[0].macAddr: 'nope'"),
        ({"custom": {"a": 1}}, "vmParams.custom.a: 1 is not of type 'string'"),
        ({"display": "vnc"}, "vmParams.display: unknown property"),
    ],
)  # fmt: skip
def test_legacy_create_violations(schema: Schema, changes: dict[str, Any], message: str) -> None:
    """A bad field of a legacy vmParams is InvalidParams with its path in the message."""
    with pytest.raises(InvalidParams) as caught:
        schema.bind_params("VM.create", legacy_params(**changes))
    assert str(caught.value).startswith(f"Invalid params: {message}")


def test_missing_legacy_field(schema: Schema) -> None:
    """A legacy vmParams without memSize names vmParams.memSize as missing."""
    params = legacy_params()
    del params["vmParams"]["memSize"]
    with pytest.raises(InvalidParams, match=r"vmParams\.memSize: missing required property"):
        schema.bind_params("VM.create", params)


def test_create_from_xml_without_vm_id(schema: Schema) -> None:
    """VM.create takes XML alone; vmID is then None for the handler to read from the XML."""
    bound = schema.bind_params("VM.create", {"vmParams": {"xml": XML}})
    assert bound == {"vmID": None, "vmParams": {"xml": XML}}


def test_create_with_null_vm_id(schema: Schema) -> None:
    """An explicit null vmID counts as not given."""
    bound = schema.bind_params("VM.create", [None, {"xml": XML}])
    assert bound["vmID"] is None


def test_create_forms_accepted(schema: Schema) -> None:
    """The XML form (extra keys tolerated) and the legacy form, smp int or string, bind."""
    schema.bind_params("VM.create", [VM_ID, {"xml": XML, "vmId": VM_ID, "other": 1}])
    schema.bind_params("VM.create", legacy_params())
    schema.bind_params("VM.create", legacy_params(smp="4", nics=[], drives=[]))


def test_create_xml_must_be_text(schema: Schema) -> None:
    """An xml that is not a string is refused with its path."""
    with pytest.raises(InvalidParams, match=r"vmParams\.xml: 5 is not of type 'string'"):
        schema.bind_params("VM.create", {"vmID": VM_ID, "vmParams": {"xml": 5}})


@pytest.mark.parametrize(
    ("verb", "params"),
    [
        ("VM.hotplugDisk", {"xml": "<devices><disk type='file'/></devices>"}),
        ("VM.hotunplugDisk", {"vmId": VM_ID, "xml": "<devices><disk/></devices>"}),
        ("VM.hotplugDisk", {"drive": {"path": "/a", "format": "raw", "iface": "scsi"}}),
        ("VM.hotplugNic", {"xml": "<devices><interface type='network'/></devices>"}),
        ("VM.hotunplugNic", {"nic": {"macAddr": "52:54:00:12:34:56", "bridge": "br0"}}),
    ],
)
def test_hotplug_forms_accepted(schema: Schema, verb: str, params: dict[str, Any]) -> None:
    """The hotplug verbs take the XML form and the legacy drive or nic form."""
    assert schema.bind_params(verb, [VM_ID, params])["params"] == params


def test_hotplug_xml_needs_devices(schema: Schema) -> None:
    """Hotplug XML must be wrapped in ``<devices>``."""
    with pytest.raises(InvalidParams, match=r"params\.xml: '<disk/>' does not match"):
        schema.bind_params("VM.hotplugDisk", [VM_ID, {"xml": "<disk/>"}])


def test_hotplug_nic_legacy_needs_nic(schema: Schema) -> None:
    """A legacy NIC hotplug without ``nic`` names it as missing."""
    with pytest.raises(InvalidParams, match=r"params\.nic: missing required property"):
        schema.bind_params("VM.hotplugNic", [VM_ID, {"vmId": VM_ID}])


def test_subscribe_patterns(schema: Schema) -> None:
    """Host.subscribe takes a list of pattern strings and nothing else."""
    assert schema.bind_params("Host.subscribe", [["|virt|*"]]) == {"patterns": ["|virt|*"]}
    with pytest.raises(InvalidParams, match=r"patterns\[0\]: 3 is not of type 'string'"):
        schema.bind_params("Host.subscribe", {"patterns": [3]})


def test_long_values_are_shortened(schema: Schema) -> None:
    """A message quoting a huge value is cut to a few hundred characters."""
    with pytest.raises(InvalidParams) as caught:
        schema.bind_params("Host.dumpxmls", {"vmList": ["x" * 100_000]})
    assert len(str(caught.value)) < 400


# -- results ----------------------------------------------------------------------------------


def test_running_and_down_stats_are_valid(schema: Schema) -> None:
    """A running VM's stats and a Down VM's stats both pass as VmStats."""
    schema.check_result("Host.getAllVmStats", [running_stats(), down_stats()])
    schema.check_result("VM.getStats", [down_stats()])


def test_stats_before_the_first_sample(schema: Schema) -> None:
    """Running stats without any sampled field are valid."""
    stats = {
        key: value
        for key, value in running_stats().items()
        if key
        in {
            "vmId",
            "vmName",
            "vmType",
            "status",
            "statusTime",
            "elapsedTime",
            "monitorResponse",
            "pauseCode",
            "timeOffset",
            "clientIp",
            "displayInfo",
            "hash",
            "vmJobs",
            "guestIPs",
        }
    }
    stats["balloonInfo"] = {}
    schema.check_result("VM.getStats", [stats])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cpuUser": 1.25}, "[0].cpuUser: 1.25 is not of type 'string'"),
        ({"status": "Running"}, "[0].status: 'Running' is not one of"),
        ({"statusTime": "5"}, "[0].statusTime: '5' is not of type 'integer'"),
        ({"balloonInfo": {"balloon_cur": "1"}}, "[0].balloonInfo.balloon_max: missing required"),
        ({"memoryStats": {"mem_free": "lots"}}, "[0].memoryStats.mem_free: 'lots' does not match"),
        ({"disks": {"vda": {"readRate": 0}}}, "[0].disks.vda.readRate: 0 is not of type 'string'"),
        ({"monitorResponse": "1"}, "[0].monitorResponse: '1' is not one of ['0', '-1']"),
    ],
)  # fmt: skip
def test_bad_running_stats(schema: Schema, change: dict[str, Any], message: str) -> None:
    """A mistyped field of running stats is a SchemaViolation naming its path."""
    stats = running_stats() | change
    with pytest.raises(SchemaViolation) as caught:
        schema.check_result("VM.getStats", [stats])
    assert str(caught.value).startswith(f"VM.getStats result: {message}")


def test_running_stats_need_identity(schema: Schema) -> None:
    """Running stats without ``hash`` fail: identity and state fields are always there."""
    stats = running_stats()
    del stats["hash"]
    with pytest.raises(SchemaViolation, match=r"\[0\]\.hash: missing required property"):
        schema.check_result("Host.getAllVmStats", [stats])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exitReason": "7"}, "[0].exitReason: '7' is not of type 'integer'"),
        ({"exitCode": None}, "[0].exitCode: None is not of type 'integer'"),
        ({"timeOffset": 0}, "[0].timeOffset: 0 is not of type 'string'"),
    ],
)
def test_bad_down_stats(schema: Schema, change: dict[str, Any], message: str) -> None:
    """A mistyped field of Down stats is a SchemaViolation naming its path."""
    with pytest.raises(SchemaViolation) as caught:
        schema.check_result("VM.getStats", [down_stats() | change])
    assert str(caught.value).startswith(f"VM.getStats result: {message}")


def test_down_stats_need_exit_info(schema: Schema) -> None:
    """Down stats without ``exitReason`` fail even if they carry running fields."""
    stats = running_stats() | down_stats()
    del stats["exitReason"]
    with pytest.raises(SchemaViolation, match=r"\[0\]\.exitReason: missing required property"):
        schema.check_result("VM.getStats", [stats])


def test_get_stats_is_one_element(schema: Schema) -> None:
    """VM.getStats answers a list of exactly one VmStats."""
    with pytest.raises(SchemaViolation):
        schema.check_result("VM.getStats", [])


def test_host_stats(schema: Schema) -> None:
    """Complete host stats pass; cpuLoad as a number or memFree as a string do not."""
    schema.check_result("Host.getStats", host_stats())
    with pytest.raises(SchemaViolation, match="cpuLoad: 0.42 is not of type 'string'"):
        schema.check_result("Host.getStats", host_stats() | {"cpuLoad": 0.42})
    with pytest.raises(SchemaViolation, match="memFree: '9000' is not of type 'integer'"):
        schema.check_result("Host.getStats", host_stats() | {"memFree": "9000"})
    with pytest.raises(SchemaViolation, match=r"network\.eth0\.rx: 100 is not of type 'string'"):
        bad = host_stats()
        bad["network"]["eth0"]["rx"] = 100
        schema.check_result("Host.getStats", bad)


def test_host_stats_need_every_field(schema: Schema) -> None:
    """Host stats without ``momStatus`` fail."""
    stats = host_stats()
    del stats["momStatus"]
    with pytest.raises(SchemaViolation, match="momStatus: missing required property"):
        schema.check_result("Host.getStats", stats)


def test_capabilities(schema: Schema) -> None:
    """Capabilities with the gate keys pass, extra keys included; without clusterLevels not."""
    schema.check_result("Host.getCapabilities", capabilities())
    caps = capabilities()
    del caps["clusterLevels"]
    with pytest.raises(SchemaViolation, match="clusterLevels: missing required property"):
        schema.check_result("Host.getCapabilities", caps)
    with pytest.raises(SchemaViolation, match="kvmEnabled: True is not one of"):
        schema.check_result("Host.getCapabilities", capabilities() | {"kvmEnabled": True})
    with pytest.raises(SchemaViolation, match="memSize: 15890 is not of type 'string'"):
        schema.check_result("Host.getCapabilities", capabilities() | {"memSize": 15890})


def test_hardware_info(schema: Schema) -> None:
    """Hardware info needs all six strings."""
    info = dict.fromkeys(
        ["systemManufacturer", "systemProductName", "systemVersion", "systemSerialNumber",
         "systemUUID", "systemFamily"], "x")  # fmt: skip
    schema.check_result("Host.getHardwareInfo", info)
    with pytest.raises(SchemaViolation, match="systemFamily: missing required property"):
        schema.check_result(
            "Host.getHardwareInfo", {k: v for k, v in info.items() if k != "systemFamily"}
        )


def test_vm_list_forms(schema: Schema) -> None:
    """Host.getVMList answers UUIDs or {vmId, status} objects, each checked."""
    schema.check_result("Host.getVMList", [VM_ID, OTHER_ID])
    schema.check_result("Host.getVMList", [{"vmId": VM_ID, "status": "Up"}])
    schema.check_result("Host.getVMList", [])
    with pytest.raises(SchemaViolation, match=r"\[0\]: 'web1' does not match"):
        schema.check_result("Host.getVMList", ["web1"])
    with pytest.raises(SchemaViolation, match=r"\[0\]\.status: missing required property"):
        schema.check_result("Host.getVMList", [{"vmId": VM_ID}])


def test_vm_definitions(schema: Schema) -> None:
    """VM.create answers a WaitForLaunch definition; hotplug verbs answer {vmList: it}."""
    schema.check_result("VM.create", vm_definition())
    schema.check_result("Host.getVMFullList", [vm_definition("Up") | {"devices": []}])
    schema.check_result("VM.hotplugDisk", {"vmList": vm_definition("Up")})
    with pytest.raises(SchemaViolation, match="status: 'WaitForLaunch' was expected"):
        schema.check_result("VM.create", vm_definition("Up"))
    with pytest.raises(SchemaViolation, match=r"vmList\.smp: 2 is not of type 'string'"):
        schema.check_result("VM.hotplugNic", {"vmList": vm_definition() | {"smp": 2}})


def test_simple_results(schema: Schema) -> None:
    """Verbs answering true refuse anything else; dumpxmls and subscribe have their shapes."""
    for verb in ("Host.ping2", "VM.destroy", "VM.pause", "VM.cont", "VM.setBalloonTarget"):
        schema.check_result(verb, True)
        with pytest.raises(SchemaViolation, match="True was expected"):
            schema.check_result(verb, {"vmList": {}})
    schema.check_result("Host.dumpxmls", {"domxmls": {VM_ID: XML}})
    with pytest.raises(SchemaViolation, match="domxmls"):
        schema.check_result("Host.dumpxmls", {"domxmls": {"web1": XML}})
    schema.check_result("Host.subscribe", {"patterns": ["|virt|VM_status|*"]})


def test_result_of_unknown_verb(schema: Schema) -> None:
    """Checking the result of an unknown verb is MethodNotFound."""
    with pytest.raises(MethodNotFound):
        schema.check_result("Host.nope", True)


# -- events -----------------------------------------------------------------------------------


def running_details() -> dict[str, Any]:
    """The status details of a running VM, as a VM_status event carries them."""
    return {
        key: value for key, value in running_stats().items()
        if key not in {"cpuUser", "cpuSys", "cpuUsage", "cpuActual", "memoryStats", "disks",
                       "network", "balloonInfo", "memUsage", "vcpuCount", "vcpuQuota",
                       "vcpuPeriod", "vcpuUserLimit"}
    }  # fmt: skip


def test_status_events(schema: Schema) -> None:
    """VM_status events for a running and a Down VM are valid."""
    down = {k: v for k, v in down_stats().items() if k not in ("vmId", "vmName")}
    for details in (running_details(), {"status": "Paused", "statusTime": 5}, down):
        schema.check_event(f"|virt|VM_status|{VM_ID}", {VM_ID: details, "notify_time": 7})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({VM_ID: {"status": "Up", "statusTime": 1}}, "notify_time: missing required"),
        ({VM_ID: {"status": "Up", "statusTime": 1}, "notify_time": "7"},
         "notify_time: '7' is not of type 'integer'"),
        ({VM_ID: {"status": "Down", "statusTime": 1}, "notify_time": 7},
         f"{VM_ID}.exitCode: missing required property"),
        ({VM_ID: {"status": "Up"}, "notify_time": 7},
         f"{VM_ID}.statusTime: missing required property"),
        ({OTHER_ID: {"status": "Up", "statusTime": 1}, "notify_time": 7},
         f"params have no key '{VM_ID}'"),
        ({VM_ID: {"status": "Up", "statusTime": 1}, "notify_time": 7, "x": 1},
         "has too many properties"),
    ],
)  # fmt: skip
def test_bad_status_events(schema: Schema, params: dict[str, Any], message: str) -> None:
    """A bad VM_status event is a SchemaViolation naming the event id and the path."""
    with pytest.raises(SchemaViolation) as caught:
        schema.check_event(f"|virt|VM_status|{VM_ID}", params)
    assert str(caught.value).startswith(f"|virt|VM_status|{VM_ID}: ")
    assert message in str(caught.value)


def test_migration_status_event(schema: Schema) -> None:
    """The reserved VM_migration_status event checks progress and postcopy."""
    event_id = f"|virt|VM_migration_status|{VM_ID}"
    schema.check_event(event_id, {VM_ID: {"progress": 40, "postcopy": False}, "notify_time": 1})
    with pytest.raises(SchemaViolation, match="progress: 140 is greater than the maximum"):
        schema.check_event(
            event_id, {VM_ID: {"progress": 140, "postcopy": False}, "notify_time": 1}
        )


def test_unknown_event(schema: Schema) -> None:
    """An event id that matches no event is a SchemaViolation."""
    with pytest.raises(SchemaViolation, match="unknown event"):
        schema.check_event("|virt|VM_nope|x", {"notify_time": 1})


# -- advisory mode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def advisory() -> Schema:
    """The repository's schema in VDSM's advisory mode."""
    return Schema.load(strict=False)


def test_advisory_mode_logs_bad_params(advisory: Schema) -> None:
    """In advisory mode a mistyped param is logged, and the params bound and returned."""
    with capturedLogs() as events:
        bound = advisory.bind_params("Host.getVMList", {"onlyUUID": "yes", "extra": 1})
    assert bound == {"onlyUUID": "yes", "extra": 1, "fullStatus": False, "vmList": []}
    assert len(events) == 1
    assert events[0]["subject"] == "Host.getVMList"
    assert "extra: unknown param" in events[0]["problem"]


def test_advisory_mode_logs_bad_results_and_events(advisory: Schema) -> None:
    """In advisory mode a bad result or event is logged instead of raised."""
    with capturedLogs() as events:
        advisory.check_result("Host.ping2", False)
        advisory.check_event("|virt|VM_nope|x", {})
    assert [event["subject"] for event in events] == ["Host.ping2", "|virt|VM_nope|x"]


def test_advisory_mode_still_refuses(advisory: Schema) -> None:
    """In advisory mode an unknown verb and unnameable params are still refused."""
    with pytest.raises(MethodNotFound):
        advisory.bind_params("Host.nope", None)
    with pytest.raises(InvalidParams):
        advisory.bind_params("VM.reset", [VM_ID, 1])


def test_strict_flag(schema: Schema, advisory: Schema) -> None:
    """The strict property tells the two modes apart."""
    assert schema.strict and not advisory.strict


def test_describe_is_a_copy(schema: Schema) -> None:
    """Changing what describe() returns does not change the schema."""
    doc = schema.describe("VM.shutdown")
    before = copy.deepcopy(doc)
    doc["params"][1]["default"] = 99
    assert schema.describe("VM.shutdown") == before
    assert [param["name"] for param in before["params"]] == [
        "vmID", "delay", "message", "reboot", "timeout", "force"]  # fmt: skip
    assert [param["required"] for param in before["params"]] == [True] + [False] * 5


def test_readme_lists_every_verb(schema: Schema) -> None:
    """Every verb is named in the verb list of ``schema/README.md``."""
    readme = (default_schema_dir() / "README.md").read_text()
    for verb in schema.verbs():
        assert f"`{verb}`" in readme, verb


# -- tuning verbs -----------------------------------------------------------------------------

IO_TUNE = {"total_bytes_sec": 0, "read_bytes_sec": 1000, "write_bytes_sec": 0,
           "total_iops_sec": 50, "read_iops_sec": 0, "write_iops_sec": 0}  # fmt: skip


def test_tuning_params_bind(schema: Schema) -> None:
    """Quota, period, tunables by name or path, and KSM knobs within bounds bind."""
    assert schema.bind_params("VM.setCpuTuneQuota", [VM_ID, -1]) == {"vmID": VM_ID, "quota": -1}
    assert schema.bind_params("VM.setCpuTunePeriod", {"vmID": VM_ID, "period": 100000})
    tunables = [{"name": "vda", "ioTune": {"read_iops_sec": 5}},
                {"path": "/images/b.img", "ioTune": {}}]  # fmt: skip
    assert schema.bind_params("VM.setIoTune", [VM_ID, tunables])["tunables"] == tunables
    knobs = {"run": 2, "merge_across_nodes": 0, "pages_to_scan": 2**32 - 1, "sleep_millisecs": 0}
    assert schema.bind_params("Host.setKsmTune", [knobs]) == {"tuningParams": knobs}
    assert schema.bind_params("Host.setKsmTune", [{}]) == {"tuningParams": {}}


@pytest.mark.parametrize(
    ("verb", "params", "message"),
    [
        ("VM.setCpuTuneQuota", [VM_ID, "lots"], "quota: 'lots' is not of type 'integer'"),
        ("VM.setCpuTuneQuota", [VM_ID, 1.5], "quota: 1.5 is not of type 'integer'"),
        ("VM.setCpuTunePeriod", [VM_ID, True], "period: True is not of type 'integer'"),
        ("VM.setIoTune", [VM_ID, [{"name": "vda", "ioTune": {"bogus_sec": 1}}]],
         "tunables[0].ioTune.bogus_sec: unknown property"),
        ("VM.setIoTune", [VM_ID, [{"name": "vda", "ioTune": {"read_iops_sec": -1}}]],
         "tunables[0].ioTune.read_iops_sec: -1 is less than the minimum of 0"),
        ("VM.setIoTune", [VM_ID, [{"name": "vda"}]], "tunables[0].ioTune: missing required"),
        ("VM.setIoTune", [VM_ID, [{"ioTune": {}}]], "tunables[0]"),
        ("VM.setIoTune", [VM_ID, {"name": "vda"}], "tunables: {'name': 'vda'} is not of type"),
        ("Host.setKsmTune", [{"run": 3}], "tuningParams.run: 3 is greater than the maximum of 2"),
        ("Host.setKsmTune", [{"sleep_millisecs": 2**32}], "tuningParams.sleep_millisecs: "),
        ("Host.setKsmTune", [{"pages_to_scan": -1}], "tuningParams.pages_to_scan: -1 is less"),
        ("Host.setKsmTune", [{"full_scans": 1}], "tuningParams.full_scans: unknown property"),
    ],
)  # fmt: skip
def test_bad_tuning_params(schema: Schema, verb: str, params: list, message: str) -> None:
    """A mistyped or out-of-range tuning param is InvalidParams naming its path."""
    with pytest.raises(InvalidParams) as caught:
        schema.bind_params(verb, params)
    assert str(caught.value).startswith(f"Invalid params: {message}"), str(caught.value)


def test_tuning_results(schema: Schema) -> None:
    """The tuning verbs' results: true, current limits, the policy, and the policies by VM."""
    for verb in ("VM.setCpuTuneQuota", "VM.setCpuTunePeriod", "VM.setIoTune", "Host.setKsmTune"):
        schema.check_result(verb, True)
    current = [{"name": "vda", "path": "/images/a.img", "ioTune": IO_TUNE}]
    policy = [{"name": "vda", "path": "/images/a.img", "maximum": {"total_iops_sec": 800},
               "guaranteed": {"total_iops_sec": 100}}, {"name": "vdb"}]  # fmt: skip
    schema.check_result("VM.getIoTune", current)
    schema.check_result("VM.getIoTunePolicy", policy)
    schema.check_result("VM.getIoTunePolicy", [])
    schema.check_result(
        "Host.getAllVmIoTunePolicies",
        {VM_ID: {"policy": policy, "current_values": current}, OTHER_ID: {}},
    )
    schema.check_result("VM.getStats", [running_stats() | {"ioTune": current}])


@pytest.mark.parametrize(
    ("verb", "result", "message"),
    [
        ("VM.setIoTune", {"status": {"code": 0}}, "result: True was expected"),
        ("VM.getIoTune", [{"name": "vda", "path": "", "ioTune": {"read_iops_sec": 1}}],
         "[0].ioTune.total_bytes_sec: missing required property"),
        ("VM.getIoTune", [{"name": "vda", "ioTune": IO_TUNE}], "[0].path: missing required"),
        ("VM.getIoTunePolicy", [{"name": "vda", "maximum": {"iops": 1}}],
         "[0].maximum.iops: unknown property"),
        ("Host.getAllVmIoTunePolicies", {VM_ID: {"policy": []}},
         f"{VM_ID}.current_values: missing required property"),
        ("Host.getAllVmIoTunePolicies", {"web1": {}}, "result: 'web1' does not match"),
    ],
)  # fmt: skip
def test_bad_tuning_results(schema: Schema, verb: str, result: Any, message: str) -> None:
    """A tuning result of the wrong shape is a SchemaViolation naming its path."""
    with pytest.raises(SchemaViolation) as caught:
        schema.check_result(verb, result)
    assert message in str(caught.value), str(caught.value)
