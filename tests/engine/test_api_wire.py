"""Pure tests of ``engine.api.wire``: times, ids, and every row's wire shape checked against
``schema/engine.yml``; refusals from the real scheduler's decisions and the core's errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.api import wire
from engine.api.errors import ActionRefused as RefusedOnWire
from engine.api.errors import translate
from engine.api.schema import load
from engine.decide.model import HOST_UP, HostView, VmRequest
from engine.decide.policies import make_policy
from engine.decide.scheduler import schedule
from engine.errors import ActionInProgress, ActionRefused
from engine.store.auditlog import AuditEvent, Severity
from engine.store.rows import (
    Host,
    HostDynamic,
    HostStatic,
    HostStatistics,
    HostStatus,
    Job,
    JobStatus,
    Vm,
    VmDynamic,
    VmStatic,
    VmStatistics,
    VmStatus,
)

SCHEMA = load().schema
T = datetime(2027, 1, 15, 8, 0, 0, 123456, tzinfo=UTC)


def test_times():
    """Times are UTC ISO 8601 with milliseconds and a Z; other zones are converted."""
    assert wire.time(T) == "2027-01-15T08:00:00.123Z"
    assert wire.time(None) is None
    paris = T.astimezone(timezone(timedelta(hours=1)))
    assert wire.time(paris) == "2027-01-15T08:00:00.123Z"
    assert wire.time(T.replace(tzinfo=None)) == "2027-01-15T08:00:00.123Z"
    assert wire.epoch_time(0) == "1970-01-01T00:00:00.000Z"
    assert wire.parse_time("2027-01-15T08:00:00.123Z") == T.replace(microsecond=123000)
    assert wire.parse_time(None) is None


def test_ids():
    """UUIDs go out in lower case and come back in either case; event ids as numbers."""
    value = uuid.uuid4()
    assert wire.ident(value) == str(value) and wire.ident(None) is None
    assert wire.parse_id(str(value).upper()) == value
    assert wire.parse_event_id("42") == 42 == wire.parse_event_id(42)
    with pytest.raises(ValueError):
        wire.parse_id("nope")


def full_host(token="secret"):
    """A host with every field set, statistics included."""
    static = HostStatic(uuid.uuid4(), "h<1>", "10.0.0.1", 54321, token, created=T, updated=T)
    dynamic = HostDynamic(static.id, HostStatus.PREPARING_FOR_MAINTENANCE, "moving VMs", T,
                          {"cpuCores": "4"}, 4, 8192, T)
    stats = HostStatistics(static.id, 1.5, 2.5, 96.0, 4000, 51.2, 3, True, 10, 0.5, 2048, 2000, T)
    return Host(static, dynamic, stats)


def test_host_shapes():
    """A host's shape matches Host and HostDetails, and never carries the agent token."""
    host = full_host()
    shape = wire.host(host)
    SCHEMA.check_result("Hosts.list", [shape])
    assert shape["status"] == "PreparingForMaintenance" and shape["last_seen"] == wire.time(T)
    assert shape["statistics"]["ksm_enabled"] is True and "host_id" not in shape["statistics"]
    assert "secret" not in repr(shape) and "token" not in shape
    details = wire.host_details(host)
    SCHEMA.check_result("Hosts.get", details)
    assert details["capabilities"] == {"cpuCores": "4"}
    bare = Host(HostStatic(uuid.uuid4(), "h2", "a"), HostDynamic(uuid.uuid4()))
    SCHEMA.check_result("Hosts.get", wire.host_details(bare))
    assert wire.host(bare)["statistics"] is None and wire.host(bare)["status"] == "Installing"


def test_vm_shapes():
    """A VM's shape matches Vm, with the wire's names (memory_mib, *_host_id)."""
    host_id = uuid.uuid4()
    static = VmStatic(uuid.uuid4(), "web", 512, 2, "/k", "/i", "c", [{"path": "/d"}],
                      [{"macAddr": "52:54:00:00:00:01"}], {"a": "b"}, True, 10, host_id, T, T)
    dynamic = VmDynamic(static.id, VmStatus.MIGRATING_FROM, host_id, uuid.uuid4(), None, None,
                        None, 2**31, False, T)
    stats = VmStatistics(static.id, 12.5, 40.0, 1024, 2048, 1, 2, 3, 4, T)
    shape = wire.vm(Vm(static, dynamic, stats))
    SCHEMA.check_result("VMs.get", shape)
    assert (shape["memory_mib"], shape["pinned_host_id"], shape["run_on_host_id"]) == (
        512, str(host_id), str(host_id))
    assert shape["status"] == "MigratingFrom" and shape["statistics"]["cpu_percent"] == 12.5
    down = wire.vm(Vm(VmStatic(uuid.uuid4(), "db", 64), VmDynamic(uuid.uuid4())))
    SCHEMA.check_result("VMs.list", [down])
    assert down["status"] == "Down" and down["statistics"] is None


def test_job_and_event_shapes():
    """Jobs and audit events match Job and Event; an event id is a decimal string."""
    job = Job(uuid.uuid4(), "start", "vm", uuid.uuid4(), JobStatus.FAILED, 40, {"x": [1]},
              "no luck", "key-1", T, T)
    shape = wire.job(job)
    SCHEMA.check_result("Jobs.get", shape)
    assert shape["status"] == "failed" and shape["result"] == {"x": [1]}
    event = AuditEvent(12345678901, T, "VM_PLACED", Severity.ALERT, "m", None, uuid.uuid4(),
                       None, {"explanation": {"h1": ["passed"]}})
    shape = wire.event(event)
    SCHEMA.check_result("Events.list", [shape])
    assert shape["id"] == "12345678901" and shape["severity"] == "alert"


def test_refusal_from_the_core():
    """The core's ActionRefused (explanation by host name) becomes a Refusal, hosts by name."""
    error = ActionRefused("no host can run VM big", {
        "host2": ["refused by memory: needs 9000 MiB"],
        "host1": "refused by status: host is Maintenance",
    })
    data = wire.refusal(error)
    assert data == {"reason": "no host can run VM big", "hosts": [
        {"name": "host1", "id": None, "passed": False, "score": None,
         "reasons": ["refused by status: host is Maintenance"]},
        {"name": "host2", "id": None, "passed": False, "score": None,
         "reasons": ["refused by memory: needs 9000 MiB"]},
    ]}
    translated = translate(error)
    assert isinstance(translated, RefusedOnWire) and translated.data == data
    assert translated.to_error_object() == {
        "code": 4092, "message": "Action refused: no host can run VM big", "data": data}


def test_refusal_of_an_action_in_progress():
    """ActionInProgress names the job holding the VM."""
    job_id = uuid.uuid4()
    data = wire.refusal(ActionInProgress("VM web is being started", job_id=job_id))
    assert data == {"reason": "VM web is being started", "hosts": [], "job_id": str(job_id)}


def test_explanation_of_a_real_decision():
    """A scheduler Decision gives ids, scores, and the ranking first."""
    hosts = [
        HostView("a", "alpha", HOST_UP, 4, 8192, 8192),
        HostView("b", "beta", HOST_UP, 4, 8192, 8192, cpu_load_percent=50.0),
        HostView("c", "gamma", "Maintenance", 4, 8192, 8192),
    ]
    decision = schedule(VmRequest("v", "web", 1024, 1), hosts, make_policy("none"))
    explained = wire.explanation(decision)
    assert [(h["id"], h["name"], h["passed"]) for h in explained] == [
        ("a", "alpha", True), ("b", "beta", True), ("c", "gamma", False)]
    assert explained[0]["score"] > explained[1]["score"] and explained[2]["score"] is None
    assert explained[2]["reasons"][0].startswith("refused by")
    assert wire.explanation(None) == [] and wire.explanation(42) == []
