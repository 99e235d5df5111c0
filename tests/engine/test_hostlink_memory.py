"""Deterministic tests of HostLink: the agent's real WebSocket server in memory, a ``Clock``.

No sockets and no real time: bytes move through ``twisted.test.iosim`` pumps and every timer
(retries, timeouts, heartbeats, autobahn's own through ``txaio``) runs on one ``Clock``.
"""

from __future__ import annotations

from typing import Any

import pytest
import txaio
from link_harness import (
    AGENT_URL,
    CAPS,
    FakeAgent,
    LoggedFailures,
    MemoryEndpoint,
    Recorder,
    advance,
)
from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from engine.decide.hoststate import HostEvent
from engine.hostlink import CallTimeout, HostLink, LinkDown, LinkEvent, LinkEventKind
from engine.interfaces import IHostLink
from vdsmlike.api.errors import Recovering
from vdsmlike.client import LinkLost, RemoteError

K = LinkEventKind


class Rig:
    """One link to one in-memory agent, all on one Clock."""

    def __init__(self, **options: Any) -> None:
        self.clock = Clock()
        self.agent = FakeAgent(self.clock, token=options.pop("agent_token", None))
        self.endpoint = MemoryEndpoint(self.agent, self.clock)
        self.recorder = Recorder()
        settings: dict[str, Any] = dict(
            reactor=self.clock,
            endpoint=self.endpoint,
            retry_policy=backoffPolicy(initialDelay=0.5, maxDelay=10.0, jitter=lambda: 0),
            auto_ping_interval=0,
            connect_timeout=5.0,
            call_timeout=3.0,
        )
        settings.update(options)
        self.link = HostLink(AGENT_URL, settings.pop("listener", self.recorder), **settings)

    def start(self) -> None:
        """Start the link and let the first connection settle."""
        self.link.startService()
        self.endpoint.flush()

    def stop(self) -> None:
        """Stop the link; it must finish at once and leave nothing scheduled."""
        stopped = self.link.stopService()
        self.endpoint.flush()
        assert result_of(stopped) is None
        assert self.clock.getDelayedCalls() == []


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired (a Failure is returned, not raised)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def failure_of(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    """The failure of a Deferred that has failed with one of ``types``."""
    outcome = result_of(d)
    assert isinstance(outcome, Failure), f"expected a failure, got {outcome!r}"
    assert outcome.check(*types), outcome
    return outcome


@pytest.fixture(autouse=True)
def txaio_on_a_clock():
    """Point autobahn's timers at a throwaway Clock during each test, then restore them."""
    saved = txaio.config.loop
    txaio.config.loop = Clock()
    yield
    txaio.config.loop = saved


@pytest.fixture
def rig():
    """A link and an agent in memory; the link is stopped cleanly after the test."""
    built = Rig()
    with LoggedFailures() as logged:
        yield built
        if built.link.running:
            built.stop()
    assert logged.failures == [], logged.texts()


def test_provides_the_interface(rig):
    """HostLink provides IHostLink (and IService)."""
    assert verifyObject(IHostLink, rig.link)


def test_connects_subscribes_and_reports_capabilities(rig):
    """On start the link opens the WebSocket, subscribes to all events and reads capabilities."""
    rig.start()
    assert rig.recorder.kinds() == ["connected"]
    connected = rig.recorder.events[0]
    assert connected.caps == CAPS and connected.host_event is HostEvent.CONNECTED
    assert rig.link.connected and rig.link.capabilities == CAPS
    assert rig.agent.bus.patterns(rig.endpoint.servers[0]) == ["*"]


def test_call_returns_result_and_remote_errors(rig):
    """A call fires with the result; an error answer fails it with RemoteError."""
    rig.start()
    answered = rig.link.call("Test.echo", {"value": [1, "two"]})
    unknown = rig.link.call("No.such")
    rig.endpoint.flush()
    assert result_of(answered) == [1, "two"]
    assert failure_of(unknown, RemoteError).value.code == -32601


def test_call_times_out_and_late_answer_is_dropped(rig):
    """A call with no answer in time fails with CallTimeout; its late answer changes nothing."""
    rig.start()
    slow = rig.link.call("Test.hang", timeout=1.0)
    rig.endpoint.flush()
    rig.clock.advance(0.9)
    assert not slow.called
    rig.clock.advance(0.1)
    failure = failure_of(slow, CallTimeout)
    assert "Test.hang" in str(failure.value) and "1 s" in str(failure.value)
    rig.agent.answer_hung("late")
    rig.endpoint.flush()
    echo = rig.link.call("Test.echo", {"value": 3})
    rig.endpoint.flush()
    assert result_of(echo) == 3 and rig.link.connected


def test_default_call_timeout(rig):
    """Without a timeout of its own, a call waits the link's call_timeout."""
    rig.start()
    slow = rig.link.call("Test.hang")
    rig.endpoint.flush()
    rig.clock.advance(2.9)
    assert not slow.called
    rig.clock.advance(0.1)
    failure_of(slow, CallTimeout)
    rig.agent.answer_hung()


def test_call_before_connecting_fails_at_once(rig):
    """A call on a link that is not connected fails at once with LinkDown (a LinkLost)."""
    failure = failure_of(rig.link.call("Host.ping2"), LinkDown)
    assert failure.check(LinkLost)
    rig.endpoint.refuse = True
    rig.start()
    failure_of(rig.link.call("Host.ping2"), LinkDown)


def test_lost_link_fails_pending_calls_and_is_reported(rig):
    """When the agent drops the connection, pending calls fail with LinkDown and link_lost is
    reported; later calls fail at once."""
    rig.start()
    pending = [rig.link.call("Test.hang") for _ in range(3)]
    rig.endpoint.flush()
    rig.endpoint.cut()
    for d in pending:
        failure_of(d, LinkDown)
    assert rig.recorder.kinds() == ["connected", "link_lost"]
    lost = rig.recorder.events[-1]
    assert lost.reason and lost.host_event is HostEvent.LINK_LOST
    assert not rig.link.connected
    failure_of(rig.link.call("Host.ping2"), LinkDown)


def test_reconnects_after_loss_with_backoff_and_subscribes_again(rig):
    """After a loss the link reconnects after the first backoff delay and subscribes again."""
    rig.start()
    rig.endpoint.cut()
    lost_at = rig.clock.seconds()
    rig.clock.advance(0.74)
    assert len(rig.endpoint.attempts) == 1
    rig.clock.advance(0.01)
    rig.endpoint.flush()
    assert rig.endpoint.attempts == [0.0, lost_at + 0.75]
    assert rig.recorder.kinds() == ["connected", "link_lost", "connected"]
    assert rig.agent.bus.patterns(rig.endpoint.servers[1]) == ["*"]
    echo = rig.link.call("Test.echo", {"value": "again"})
    rig.endpoint.flush()
    assert result_of(echo) == "again"


def test_refused_connections_retry_with_growing_delays(rig):
    """While nothing answers, attempts go on with delays growing by 1.5 up to 10 s, each
    failure reported with its attempt number and the delay before the next."""
    rig.endpoint.refuse = True
    rig.start()
    rig.clock.pump([0.05] * 800)
    delays = [b - a for a, b in zip(rig.endpoint.attempts, rig.endpoint.attempts[1:], strict=False)]
    expected = [min(0.5 * 1.5**n, 10.0) for n in range(1, len(delays) + 1)]
    assert len(delays) >= 8
    assert delays == pytest.approx(expected, abs=0.051)
    failed = rig.recorder.of(K.CONNECT_FAILED)
    assert [e.attempt for e in failed] == list(range(1, len(failed) + 1))
    assert [e.retry_in for e in failed][: len(expected)] == pytest.approx(expected)
    assert "refused" in failed[0].reason.lower()
    assert not rig.link.connected


def test_failed_preparation_counts_as_failed_attempt(rig):
    """An agent still recovering (error 99 on getCapabilities) fails the attempt: it is
    reported, the connection is closed, and a later attempt succeeds."""
    rig.agent.caps_error = Recovering()
    rig.start()
    failed = rig.recorder.of(K.CONNECT_FAILED)
    assert len(failed) == 1 and "99" in failed[0].reason
    assert rig.endpoint.pumps[0].clientIO.disconnected
    assert not rig.link.connected
    rig.agent.caps_error = None
    advance(rig.endpoint, 0.75)
    assert rig.recorder.kinds() == ["connect_failed", "connected"]


def test_wrong_token_fails_the_handshake_clearly(rig):
    """An agent that refuses the token fails each attempt with a handshake error naming 401."""
    rig = Rig(agent_token="right", token="wrong")
    rig.start()
    failed = rig.recorder.of(K.CONNECT_FAILED)
    assert len(failed) == 1
    assert failed[0].reason.startswith("handshake failed: ") and "401" in failed[0].reason
    advance(rig.endpoint, 0.75)
    assert rig.recorder.count(K.CONNECT_FAILED) == 2 and not rig.link.connected
    rig.stop()


def test_silent_server_times_out_the_attempt(rig):
    """A server that accepts and never answers fails the attempt after connect_timeout."""
    rig.agent.factory.buildProtocol = lambda addr: Protocol()
    rig.start()
    rig.clock.advance(4.9)
    assert rig.recorder.events == []
    rig.clock.advance(0.1)
    rig.endpoint.flush()
    [failed] = rig.recorder.of(K.CONNECT_FAILED)
    assert "no answer within 5 s" in failed.reason
    assert rig.endpoint.pumps[0].clientIO.disconnected


def test_heartbeat_missed_then_answered(rig):
    """Unanswered heartbeats are reported one by one with a count; the next answer reports
    heartbeat_ok once."""
    rig.start()
    advance(rig.endpoint, 2.0)
    assert rig.agent.pings == 1 and rig.recorder.kinds() == ["connected"]
    rig.agent.ping_hangs = True
    advance(rig.endpoint, 2.0)
    assert rig.agent.pings == 2 and rig.recorder.kinds() == ["connected"]
    advance(rig.endpoint, 2.0)
    missed = rig.recorder.of(K.HEARTBEAT_MISSED)
    assert [(e.at, e.missed) for e in missed] == [(pytest.approx(6.0), 1)]
    advance(rig.endpoint, 2.0)
    assert [e.missed for e in rig.recorder.of(K.HEARTBEAT_MISSED)] == [1, 2]
    rig.agent.ping_hangs = False
    rig.agent.answer_hung()
    advance(rig.endpoint, 2.0)
    assert rig.recorder.kinds() == [
        "connected",
        "heartbeat_missed",
        "heartbeat_missed",
        "heartbeat_ok",
    ]
    assert rig.recorder.events[-1].host_event is HostEvent.HEARTBEAT_OK
    advance(rig.endpoint, 4.0)
    assert rig.recorder.count(K.HEARTBEAT_OK) == 1


def test_heartbeat_error_answer_is_not_a_miss(rig):
    """A heartbeat answered with an error (the agent is recovering) proves the agent alive."""
    rig.start()
    rig.link._heartbeat = (2.0, 2.0, "No.such")
    advance(rig.endpoint, 10.0)
    assert rig.recorder.kinds() == ["connected"]


def test_agent_events_follow_connected_in_order(rig):
    """Agent events, even those sent before the capabilities answer, reach the listener after
    connected and in the order sent."""
    rig.agent.before_caps = lambda: rig.agent.bus.publish(
        "|virt|VM_status|early", {"early": {"status": "Up"}}
    )
    rig.start()
    rig.agent.bus.publish("|virt|VM_status|later", {"later": {"status": "Down"}})
    rig.endpoint.flush()
    assert rig.recorder.kinds(agent_events=True) == ["connected", "event", "event"]
    ids = [e.event_id for e in rig.recorder.of(K.EVENT)]
    assert ids == ["|virt|VM_status|early", "|virt|VM_status|later"]
    assert rig.recorder.events[1].params["early"] == {"status": "Up"}
    assert rig.recorder.events[1].host_event is None


def test_listener_errors_are_logged_and_ignored():
    """A listener that raises is logged; the link goes on and keeps reporting."""
    seen: list[LinkEvent] = []

    def clumsy(event: LinkEvent) -> None:
        seen.append(event)
        raise RuntimeError("listener bug")

    rig = Rig(listener=clumsy)
    with LoggedFailures() as logged:
        rig.start()
        rig.endpoint.cut()
    assert [e.kind for e in seen] == [K.CONNECTED, K.LINK_LOST]
    assert len(logged.failures) == 2 and "listener bug" in logged.texts()[0]
    rig.stop()


def test_listener_may_stop_the_link_from_any_event():
    """A listener that stops the link while handling an event does so cleanly."""
    for kind, refuse in ((K.CONNECTED, False), (K.CONNECT_FAILED, True), (K.LINK_LOST, False)):
        rig, stopped = stopping_rig(kind)
        rig.endpoint.refuse = refuse
        with LoggedFailures() as logged:
            rig.start()
            if rig.link.connected:
                rig.endpoint.cut()
            rig.endpoint.flush()
        assert stopped and result_of(stopped[0]) is None, kind
        assert logged.failures == [], logged.texts()
        assert rig.clock.getDelayedCalls() == []


def stopping_rig(kind: LinkEventKind) -> tuple[Rig, list[Deferred[None]]]:
    """A rig whose listener stops the link on the first event of ``kind``."""
    stopped: list[Deferred[None]] = []

    def stopper(event: LinkEvent) -> None:
        if event.kind is kind and not stopped:
            stopped.append(rig.link.stopService())

    rig = Rig(listener=stopper)
    return rig, stopped


def test_when_connected(rig):
    """when_connected fires with the capabilities, fails after N failed attempts when asked,
    and fails with LinkDown when the link stops."""
    rig.endpoint.refuse = True
    rig.start()
    patient = rig.link.when_connected()
    impatient = rig.link.when_connected(fail_after_failures=2)
    rig.clock.advance(0.75)
    assert not impatient.called
    rig.clock.advance(1.125)
    failure = failure_of(impatient, LinkDown)
    assert "refused" in str(failure.value).lower()
    rig.endpoint.refuse = False
    advance(rig.endpoint, 1.75)
    assert result_of(patient) == CAPS
    assert result_of(rig.link.when_connected()) == CAPS
    rig.endpoint.cut()
    waiting = rig.link.when_connected()
    rig.stop()
    failure_of(waiting, LinkDown)


def test_stop_while_connected_fails_pending_calls_and_reports_nothing(rig):
    """Stopping a connected link fails pending calls with LinkDown and reports no event."""
    rig.start()
    pending = rig.link.call("Test.hang")
    rig.endpoint.flush()
    rig.stop()
    failure_of(pending, LinkDown)
    assert rig.recorder.kinds() == ["connected"]
    assert not rig.link.connected and not rig.link.running


def test_stop_during_the_handshake_is_clean(rig):
    """Stopping while an attempt is still in its handshake closes it and schedules nothing."""
    rig.agent.factory.buildProtocol = lambda addr: Protocol()
    rig.start()
    rig.clock.advance(1.0)
    rig.stop()
    assert rig.endpoint.pumps[0].clientIO.disconnected
    assert rig.recorder.events == []


def test_stop_while_waiting_to_retry_is_clean(rig):
    """Stopping between two attempts cancels the retry."""
    rig.endpoint.refuse = True
    rig.start()
    rig.stop()
    assert len(rig.endpoint.attempts) == 1


def test_restart_after_stop(rig):
    """A stopped link can be started again and connects anew."""
    rig.start()
    rig.stop()
    rig.start()
    assert rig.recorder.kinds() == ["connected", "connected"] and rig.link.connected


@pytest.mark.parametrize(("interval", "timeout"), [(0.5, None), (1.0, 1.5)])
def test_auto_ping_figures_are_checked(interval, timeout):
    """Auto-ping figures that txaio's whole-second timers cannot honour are refused."""
    with pytest.raises(ValueError, match="auto-ping"):
        Rig(auto_ping_interval=interval, auto_ping_timeout=timeout)
