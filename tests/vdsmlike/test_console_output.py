"""``VM.getConsoleOutput`` through the whole agent over a real WebSocket.

On libvirt's test driver no guest runs, so nothing writes the serial log: each test writes the
VM's serial file itself, as QEMU would for the guest, at the path the agent put in the domain
XML (``<state>/serial/<vmId>.log`` for legacy params), and reads it back through the agent.
The last test boots the real busybox guest under QEMU and reads its own boot output.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from agent_harness import TEST_NODE_XML, eventually, start_agent
from guests import READY_MARKER, bare_xml, guest_xml
from twisted.internet import reactor

from vdsmlike.agentproc import AgentProcess, connect_when_ready, kill_guests_under
from vdsmlike.client import RemoteError


async def create_up(agent) -> str:
    """Create a VM from legacy params (a file-backed serial port) and wait until it is Up."""
    vm_id = str(uuid.uuid4())
    params = {"vmId": vm_id, "vmName": "con-" + vm_id[:8], "memSize": 128}
    await agent.call("VM.create", {"vmParams": params})
    await agent.wait_for_status(vm_id, "Up")
    return vm_id


def serial_file(agent, vm_id: str) -> Path:
    """The VM's serial log, where the agent's domain XML points."""
    path = Path(agent.top.container.get(vm_id).spec.serial_path)
    assert (path.parent.name, path.name) == ("serial", f"{vm_id}.log")
    return path


async def read(agent, vm_id: str, **params) -> dict:
    """Call ``VM.getConsoleOutput``."""
    return await agent.call("VM.getConsoleOutput", {"vmID": vm_id, **params})


async def refused(agent, params, code: int) -> str:
    """Call ``VM.getConsoleOutput``, expect error ``code``; :returns: its message."""
    with pytest.raises(RemoteError) as info:
        await agent.call("VM.getConsoleOutput", params)
    assert info.value.code == code, info.value
    return info.value.message


@pytest_twisted.ensureDeferred
async def test_tail_and_offset_reads(agent):
    """Without offset the tail comes back; from an offset, what follows it; appended output
    is read from the previous next."""
    vm_id = await create_up(agent)
    log = serial_file(agent, vm_id)
    log.write_text("line one\nline two\n")
    whole = await read(agent, vm_id)
    assert whole == {
        "data": "line one\nline two\n",
        "offset": 0,
        "next": 18,
        "size": 18,
        "reset": False,
    }
    tail = await read(agent, vm_id, size=9)
    assert (tail["data"], tail["offset"], tail["next"]) == ("line two\n", 9, 18)
    head = await read(agent, vm_id, offset=0, size=4)
    assert (head["data"], head["next"]) == ("line", 4)
    with log.open("a") as f:
        f.write("line three\n")
    more = await read(agent, vm_id, offset=whole["next"])
    assert more == {"data": "line three\n", "offset": 18, "next": 29, "size": 29, "reset": False}
    assert (await read(agent, vm_id, offset=29))["data"] == ""


@pytest_twisted.ensureDeferred
async def test_log_not_written_yet_reads_empty(agent):
    """Before the guest wrote anything (no file yet) the log reads as empty."""
    vm_id = await create_up(agent)
    assert not serial_file(agent, vm_id).exists()
    assert await read(agent, vm_id) == {
        "data": "",
        "offset": 0,
        "next": 0,
        "size": 0,
        "reset": False,
    }


@pytest_twisted.ensureDeferred
async def test_multibyte_characters_are_never_split(agent):
    """Small reads cut at character boundaries, and half a character at the end of the file
    waits until the guest writes the rest."""
    vm_id = await create_up(agent)
    log = serial_file(agent, vm_id)
    text = "naïve € 😀\n"
    smile = "😀".encode()
    log.write_bytes(text.encode() + b"> " + smile[:2])
    offset, pieces = 0, []
    while True:
        answer = await read(agent, vm_id, offset=offset, size=3)
        if answer["next"] == offset:
            break
        assert "\ufffd" not in answer["data"], answer
        pieces.append(answer["data"])
        offset = answer["next"]
    assert "".join(pieces) == text + "> "
    assert offset == len(text.encode()) + 2, "the half character is not read"
    with log.open("ab") as f:
        f.write(smile[2:] + b"\n")
    assert (await read(agent, vm_id, offset=offset))["data"] == "😀\n"


@pytest_twisted.ensureDeferred
async def test_recreated_file_resets_to_the_start(agent):
    """After the log is recreated shorter (the VM restarted), a read from the old offset
    starts again at 0 and says reset."""
    vm_id = await create_up(agent)
    log = serial_file(agent, vm_id)
    log.write_text("first boot, a long line of output\n")
    old = await read(agent, vm_id)
    log.unlink()
    log.write_text("second boot\n")
    again = await read(agent, vm_id, offset=old["next"])
    assert again == {"data": "second boot\n", "offset": 0, "next": 12, "size": 12, "reset": True}


@pytest_twisted.ensureDeferred
async def test_reads_are_bounded_by_size(agent):
    """A read answers at most size bytes however large the log is."""
    vm_id = await create_up(agent)
    serial_file(agent, vm_id).write_bytes(b"x" * (3 * 1024 * 1024))
    tail = await read(agent, vm_id)
    assert len(tail["data"]) == 65536 and tail["next"] == tail["size"] == 3 * 1024 * 1024
    big = await read(agent, vm_id, offset=0, size=1024 * 1024)
    assert big["next"] == 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_bad_params_are_refused_and_the_agent_keeps_serving(agent):
    """Sizes over 1 MiB, negative offsets and wrong types are -32602; the agent goes on."""
    vm_id = await create_up(agent)
    message = await refused(agent, {"vmID": vm_id, "size": 1024 * 1024 + 1}, -32602)
    assert "size" in message
    await refused(agent, {"vmID": vm_id, "offset": -1}, -32602)
    await refused(agent, {"vmID": vm_id, "offset": "end"}, -32602)
    await refused(agent, {"vmID": vm_id, "size": 1.5}, -32602)
    await refused(agent, {"vmID": "not-a-uuid"}, -32602)
    await refused(agent, {"vmID": vm_id, "lines": 3}, -32602)
    assert (await read(agent, vm_id))["next"] == 0


@pytest_twisted.ensureDeferred
async def test_unknown_vm_and_vm_without_serial_file(agent):
    """An unknown VM is error 1; a VM whose serial port is not file-backed is error 75."""
    await refused(agent, {"vmID": str(uuid.uuid4())}, 1)
    vm_id = str(uuid.uuid4())
    await agent.call("VM.create", {"vmParams": {"xml": bare_xml(vm_id=vm_id)}})
    await agent.wait_for_status(vm_id, "Up")
    message = await refused(agent, {"vmID": vm_id}, 75)
    assert "serial" in message


@pytest_twisted.ensureDeferred
async def test_serial_path_that_is_not_a_file_is_a_clear_error(agent):
    """A directory where the log should be is error 16 naming the problem, not a hang."""
    vm_id = await create_up(agent)
    serial_file(agent, vm_id).mkdir()
    message = await refused(agent, {"vmID": vm_id}, 16)
    assert "serial console log" in message


@pytest_twisted.ensureDeferred
async def test_down_vm_log_stays_readable(agent):
    """A VM that went Down keeps its log readable until it is destroyed."""
    vm_id = await create_up(agent)
    serial_file(agent, vm_id).write_text("last words\n")
    # Stop the domain behind the agent's back, as a guest powering off would.
    await agent.top.hypervisor.destroy(vm_id, False)
    await agent.wait_for_status(vm_id, "Down")
    assert (await read(agent, vm_id))["data"] == "last words\n"


@pytest_twisted.ensureDeferred
async def test_external_vm_is_readable(tmp_path):
    """A domain the agent did not create (external) can have its serial log read."""
    log = tmp_path / "external.log"
    log.write_text("external guest\n")
    vm_id = "6f1d2c3b-0000-4000-8000-00000000e001"
    domain = (
        f"<domain type='test'><name>ext1</name><uuid>{vm_id}</uuid><memory>131072</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os><devices><serial type='file'>"
        f"<source path='{log}'/><target port='0'/></serial></devices></domain>"
    )
    node = tmp_path / "node.xml"
    node.write_text(TEST_NODE_XML.replace("</node>", domain + "\n</node>"))
    agent = await start_agent(tmp_path, libvirt_uri=f"test://{node}")
    try:
        [stats] = await agent.call("VM.getStats", [vm_id])
        assert stats["external"] is True
        assert (await read(agent, vm_id))["data"] == "external guest\n"
    finally:
        await agent.stop()


# -- a real guest ------------------------------------------------------------------------------


@pytest.fixture
def workdir():
    """A short directory: QEMU's monitor socket paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="vlc-", dir="/tmp")
    yield path
    kill_guests_under(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_real_guest_boot_output_is_read(workdir, guest_image):
    """A real QEMU guest's own boot output (its ready marker, then ticks) is read through
    VM.getConsoleOutput, first as a tail, then by following next."""
    proc = AgentProcess(
        workdir,
        libvirt_uri=f"qemu:///embed?root={workdir}/root",
        validate_results=True,
        guest_wait_timeout=2.0,
    )
    client = await connect_when_ready(reactor, await proc.start(reactor))
    try:
        vm_id = str(uuid.uuid4())
        serial = Path(workdir) / "guest.log"
        await client.call(
            "VM.create", {"vmParams": {"xml": guest_xml(guest_image, serial, vm_id=vm_id)}}
        )

        async def fetch():
            return await client.call("VM.getConsoleOutput", {"vmID": vm_id})

        first = await eventually(fetch, lambda a: READY_MARKER in a["data"], timeout=90)
        assert first["next"] == first["size"] > 0
        ticked = await eventually(
            lambda: client.call("VM.getConsoleOutput", {"vmID": vm_id, "offset": first["next"]}),
            lambda a: "tick " in a["data"],
            timeout=30,
        )
        assert ticked["offset"] == first["next"] and not ticked["reset"]
        assert serial.read_bytes()[ticked["offset"] : ticked["next"]].decode() == ticked["data"]
        await client.call("VM.destroy", [vm_id])
    finally:
        await client.close()
        assert await proc.stop(reactor) == 0
