"""``engine.consolerelay`` on a ``Clock``: its pure decisions, and streams against hosts whose
serial logs live in memory and are read with the agent's own window logic
(``vdsmlike.vm.consolewindow``), so offsets, cuts and resets are the agent's."""

from __future__ import annotations

import uuid

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from engine.consolerelay import (
    NOWHERE,
    ConsolePlace,
    ConsoleRelay,
    ConsoleUnavailable,
    ReadPlan,
    Step,
    StreamPosition,
    advance,
    catch_up,
    plan_read,
)
from engine.hostlink import LinkDown
from engine.store.errors import NotFound
from vdsmlike.client import RemoteError
from vdsmlike.vm import consolewindow

VM = uuid.UUID("0a0b0c0d-0000-4000-8000-000000000001")
H1 = uuid.UUID("0a0b0c0d-0000-4000-8000-0000000000a1")
H2 = uuid.UUID("0a0b0c0d-0000-4000-8000-0000000000a2")


# -- pure decisions ----------------------------------------------------------------------------


def test_plan_reads_from_the_offset_on_the_same_host():
    """On the host the offset counts in, the next read starts at the offset."""
    assert plan_read(StreamPosition(H1, 42), H1) == ReadPlan(H1, 42, reset=False)


def test_plan_starts_over_on_another_host():
    """The VM runs elsewhere (migrated, restarted there): read its new log from 0, reset."""
    assert plan_read(StreamPosition(H1, 42), H2) == ReadPlan(H2, 0, reset=True)
    assert plan_read(NOWHERE, H1) == ReadPlan(H1, 0, reset=True)


def test_plan_waits_while_the_vm_runs_nowhere():
    """No host, no read."""
    assert plan_read(StreamPosition(H1, 42), None) is None


def test_advance_moves_and_reports_new_output():
    """An answer with data moves the position to next and becomes a piece."""
    answer = {"data": "hi", "offset": 4, "next": 6, "size": 6, "reset": False}
    position, news = advance(ReadPlan(H1, 4), answer)
    assert position == StreamPosition(H1, 6)
    assert news == {"data": "hi", "offset": 4, "next": 6, "reset": False}


def test_advance_is_silent_without_output():
    """Nothing new and no reset: no piece."""
    answer = {"data": "", "offset": 6, "next": 6, "size": 6, "reset": False}
    assert advance(ReadPlan(H1, 6), answer) == (StreamPosition(H1, 6), None)


def test_advance_reports_a_reset_even_without_output():
    """A log that started over empty is still news: the page clears its screen."""
    answer = {"data": "", "offset": 0, "next": 0, "size": 0, "reset": True}
    assert advance(ReadPlan(H1, 50), answer)[1]["reset"] is True
    assert advance(ReadPlan(H2, 0, reset=True), {**answer, "reset": False})[1]["reset"] is True


@pytest.mark.parametrize(
    ("watcher", "stream", "probed", "expected"),
    [
        (10, 10, False, (Step.JOIN, 0)),
        (4, 10, False, (Step.READ, 6)),
        (0, 1000, True, (Step.READ, 100)),
        (20, 10, False, (Step.READ, 100)),
        (20, 10, True, (Step.WAIT, 0)),
    ],
)
def test_catch_up(watcher, stream, probed, expected):
    """Behind: read up to the stream (a chunk at most); level: join; ahead: probe once, wait."""
    assert catch_up(watcher, stream, 100, probed=probed) == expected


# -- streams on a clock ------------------------------------------------------------------------


class MemoryHost:
    """A host whose VM serial logs are in memory; answers ``VM.getConsoleOutput`` as the agent
    does. ``down`` makes calls fail with ``LinkDown``; ``hold`` keeps answers until released."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.logs: dict[str, bytearray] = {}
        self.calls: list[dict] = []
        self.down = False
        self.hold = False
        self.held: list[tuple[Deferred, dict]] = []
        self.refuse: RemoteError | None = None

    def call(self, method: str, params: dict, timeout: float | None = None) -> Deferred:
        assert method == "VM.getConsoleOutput"
        self.calls.append(params)
        if self.down:
            return fail(LinkDown(f"{self.name}: not connected"))
        if self.refuse is not None:
            return fail(self.refuse)
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((d, params))
            return d
        return succeed(self.answer(params))

    def answer(self, params: dict) -> dict:
        log = bytes(self.logs.get(params["vmID"], b""))
        size = params.get("size", consolewindow.DEFAULT_SIZE)
        window = consolewindow.plan(len(log), params.get("offset"), size)
        return consolewindow.answer(window, log[window.start : window.start + window.length])

    def release(self) -> None:
        """Answer the held calls now, from the logs as they are now."""
        held, self.held = self.held, []
        for d, params in held:
            d.callback(self.answer(params))

    def write(self, text: str | bytes) -> None:
        """The guest writes to its console."""
        data = text.encode() if isinstance(text, str) else text
        self.logs.setdefault(str(VM), bytearray()).extend(data)


class Rig:
    """A relay on a clock, one VM, two in-memory hosts; ``where`` says where the VM runs."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.hosts = {H1: MemoryHost("h1"), H2: MemoryHost("h2")}
        self.where: uuid.UUID | None = H1
        self.relay = ConsoleRelay(self.locate, clock=self.clock, interval=0.25, chunk=16)
        self.received: dict[str, list[dict]] = {}

    def locate(self, vm_id: uuid.UUID) -> ConsolePlace:
        if vm_id != VM:
            raise NotFound("vm", vm_id)
        if self.where is None:
            return ConsolePlace("web1")
        host = self.hosts[self.where]
        return ConsolePlace("web1", self.where, host.name, host)

    def host(self, host_id: uuid.UUID = H1) -> MemoryHost:
        return self.hosts[host_id]

    def watch(self, name: str, offset: int | None = None):
        """Start a watcher; :returns: its ConsoleWatch (the Deferred must have fired)."""
        pieces = self.received.setdefault(name, [])
        d = Deferred.fromCoroutine(self.relay.watch(VM, pieces.append, offset=offset))
        return _result(d)

    def text(self, name: str) -> str:
        """What a watcher would show: its pieces, cleared at each reset."""
        shown = ""
        for piece in self.received[name]:
            shown = piece["data"] if piece["reset"] else shown + piece["data"]
        return shown

    def contiguous(self, name: str) -> bool:
        """Each piece starts where the previous ended, but after a reset."""
        pieces = self.received[name]
        return all(
            b["reset"] or b["offset"] == a["next"] for a, b in zip(pieces, pieces[1:], strict=False)
        )

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.clock.advance(0.25)


def _result(d: Deferred):
    box: list = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def rig():
    made = Rig()
    yield made
    made.relay.stop()
    assert made.clock.getDelayedCalls() == []


def test_watch_starts_at_the_end_and_streams_new_output(rig):
    """Without an offset the stream starts at the log's end; new output then arrives once."""
    rig.host().write("old boot noise\n")
    watch = rig.watch("a")
    assert watch.start == 15
    rig.tick()
    assert rig.received["a"] == []
    rig.host().write("login: ")
    rig.tick()
    assert rig.received["a"] == [
        {"vm": str(VM), "data": "login: ", "offset": 15, "next": 22, "reset": False}
    ]
    rig.tick(3)
    assert len(rig.received["a"]) == 1


def test_two_watchers_share_one_poller(rig):
    """Two watchers of one VM: one stream, one read per tick, both get every piece."""
    rig.watch("a")
    rig.watch("b")
    assert list(rig.relay.streams) == [VM] and len(rig.relay.streams[VM].watchers) == 2
    before = len(rig.host().calls)
    for n in range(4):
        rig.host().write(f"tick {n}\n")
        rig.tick()
    assert len(rig.host().calls) - before == 4
    assert rig.text("a") == rig.text("b") == "tick 0\ntick 1\ntick 2\ntick 3\n"


def test_last_unwatch_stops_the_poller(rig):
    """Once the last watcher stops, nothing is scheduled and the host is not read any more."""
    a, b = rig.watch("a"), rig.watch("b")
    a.stop()
    assert rig.relay.streams
    b.stop()
    b.stop()
    assert rig.relay.streams == {} and rig.clock.getDelayedCalls() == []
    calls = len(rig.host().calls)
    rig.tick(4)
    assert len(rig.host().calls) == calls


def test_long_output_is_read_chunk_after_chunk_without_waiting(rig):
    """More than a chunk behind: the next read follows at once, not a tick later."""
    rig.watch("a", offset=0)
    rig.host().write("0123456789" * 10)
    rig.tick()
    rig.clock.advance(0)
    rig.clock.advance(0)
    assert len(rig.received["a"]) >= 3
    rig.tick(3)
    assert rig.text("a") == "0123456789" * 10 and rig.contiguous("a")


def test_half_a_character_at_the_end_does_not_spin(rig):
    """A log ending in half a character is read once a tick, not again and again at once;
    the character comes whole once the guest writes the rest."""
    euro = "€".encode()
    rig.watch("a", offset=0)
    rig.host().write(b"ab" + euro[:2])
    rig.tick()
    calls = len(rig.host().calls)
    rig.tick(4)
    assert len(rig.host().calls) - calls == 4
    rig.host().write(euro[2:])
    rig.tick()
    assert rig.text("a") == "ab€" and rig.contiguous("a")


def test_late_watcher_catches_up_then_shares(rig):
    """A watcher starting behind the stream gets the missing bytes by its own reads, then the
    shared pieces, without a gap or a repeat."""
    rig.host().write("boot\n")
    rig.watch("a", offset=0)
    rig.tick()
    rig.host().write("more than one chunk of output here\n")
    rig.tick(4)
    rig.watch("b", offset=2)
    rig.host().write("after\n")
    rig.tick(3)
    assert rig.text("b") == "ot\nmore than one chunk of output here\nafter\n"
    assert rig.contiguous("b") and rig.text("a").endswith("after\n")
    assert len(rig.relay.streams) == 1


def test_watcher_ahead_of_the_stream_waits_for_it(rig):
    """A watcher whose offset came from a fresher read than the stream's receives nothing
    twice: it waits for the stream to pass its offset."""
    rig.watch("a", offset=0)
    rig.host().hold = True
    rig.host().write("0123456789")
    rig.tick()  # the stream's read at 0 is held
    rig.watch("b", offset=10)  # b read the tail up to 10 meanwhile
    rig.host().write("abc")
    rig.host().hold = False
    rig.host().release()
    rig.tick(3)
    assert rig.text("b") == "abc" and rig.contiguous("b")
    assert rig.text("a") == "0123456789abc"


def test_watcher_offset_beyond_the_log_resets(rig):
    """An offset the log never reached (it was recreated) resets that watcher to 0."""
    rig.host().write("fresh\n")
    rig.watch("a")
    rig.watch("b", offset=9999)
    rig.tick()
    assert rig.received["b"][0]["reset"] is True
    assert rig.text("b") == "fresh\n"


def test_stream_follows_the_vm_to_another_host(rig):
    """After the VM moves, the stream reads the new host's log from 0 and says reset."""
    rig.watch("a")
    rig.host(H1).write("on h1\n")
    rig.tick()
    rig.where = H2
    rig.host(H2).write("on h2\n")
    rig.tick()
    assert rig.received["a"][-1] == {
        "vm": str(VM),
        "data": "on h2\n",
        "offset": 0,
        "next": 6,
        "reset": True,
    }
    rig.host(H2).write("more\n")
    rig.tick()
    assert rig.text("a") == "on h2\nmore\n" and rig.contiguous("a")


def test_stream_waits_while_the_vm_is_down_and_starts_over(rig):
    """While the VM runs nowhere nothing is read; its next run's log comes with reset."""
    rig.host().write("first run\n")
    rig.watch("a", offset=0)
    rig.tick()
    rig.where = None
    calls = len(rig.host().calls)
    rig.tick(4)
    assert len(rig.host().calls) == calls
    rig.host().logs[str(VM)] = bytearray(b"second run, longer than the first\n")
    rig.where = H1
    rig.tick()
    [first_of_run] = [p for p in rig.received["a"] if p["reset"]]
    assert first_of_run["offset"] == 0 and first_of_run["data"].startswith("second")
    assert rig.text("a") == "second run, longer than the first\n"


def test_a_stop_seen_in_vm_changes_starts_over(rig):
    """A stop and restart between two polls is still a reset, told by the VM's changes."""
    rig.host().write("first\n")
    rig.watch("a", offset=0)
    rig.tick()
    rig.relay.vm_changed(VM, running=False)
    rig.host().logs[str(VM)] = bytearray(b"second run grew past the old offset\n")
    rig.tick()
    assert [p["offset"] for p in rig.received["a"] if p["reset"]] == [0]
    assert rig.text("a") == "second run grew past the old offset\n"


def test_lost_link_is_retried_and_logged_once(rig):
    """A host that cannot be reached is read again at each tick, with one warning, and the
    stream goes on where it was once the host answers again."""
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        rig.watch("a", offset=0)
        rig.host().down = True
        rig.host().write("while away\n")
        rig.tick(6)
        rig.host().down = False
        rig.tick()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    warnings = [e for e in logged if "not reachable" in str(e.get("reason", ""))]
    assert len(warnings) == 1
    assert rig.text("a") == "while away\n" and not rig.received["a"][0]["reset"]


def test_watch_of_a_vm_that_runs_nowhere_starts_at_zero(rig):
    """Watching a down VM answers offset 0; its first run arrives with reset."""
    rig.where = None
    watch = rig.watch("a")
    assert watch.start == 0
    rig.where = H1
    rig.host().write("booting\n")
    rig.tick()
    assert rig.received["a"] == [
        {"vm": str(VM), "data": "booting\n", "offset": 0, "next": 8, "reset": True}
    ]


def test_watch_refused_when_the_vm_has_no_serial_console(rig):
    """The agent's 75 on the first read refuses the watch and leaves no stream behind."""
    rig.host().refuse = RemoteError(75, "Operation not supported: no file-backed serial console")
    with pytest.raises(ConsoleUnavailable, match="code 75"):
        rig.watch("a")
    assert rig.relay.streams == {}


def test_unknown_vm_is_not_found(rig):
    """Reading or watching an unknown VM fails with NotFound and creates nothing."""
    other = uuid.uuid4()
    with pytest.raises(NotFound):
        _result(Deferred.fromCoroutine(rig.relay.watch(other, print)))
    with pytest.raises(NotFound):
        _result(Deferred.fromCoroutine(rig.relay.read(other)))
    assert rig.relay.streams == {}


def test_read_names_the_host_and_refuses_when_down_or_unreachable(rig):
    """A one-off read answers the host's id; a down VM or a lost host is ConsoleUnavailable."""
    rig.host().write("hello\n")
    answer = _result(Deferred.fromCoroutine(rig.relay.read(VM)))
    assert answer["data"] == "hello\n" and answer["host"] == str(H1)
    rig.host().down = True
    with pytest.raises(ConsoleUnavailable, match="h1 is not reachable"):
        _result(Deferred.fromCoroutine(rig.relay.read(VM)))
    rig.where = None
    with pytest.raises(ConsoleUnavailable, match="not running on any host"):
        _result(Deferred.fromCoroutine(rig.relay.read(VM)))


def test_a_failing_watcher_does_not_stop_the_others(rig):
    """A listener that raises is logged; the other watchers still get their pieces."""

    def broken(piece: dict) -> None:
        raise RuntimeError("boom")

    _result(Deferred.fromCoroutine(rig.relay.watch(VM, broken)))
    rig.watch("a")
    rig.host().write("x\n")
    rig.tick()
    assert rig.text("a") == "x\n"
