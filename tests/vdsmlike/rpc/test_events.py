"""Tests of event_time and the EventBus."""

from __future__ import annotations

import json

import pytest

from vdsmlike.rpc.events import EventBus, event_time


class Recorder:
    """A subscriber that keeps what it is sent."""

    def __init__(self):
        self.texts = []

    def send_event(self, text):
        self.texts.append(text)

    def events(self):
        return [json.loads(t) for t in self.texts]


class FakeMonotonic:
    def __init__(self, now=10.0):
        self.now = now

    def __call__(self):
        return self.now


def test_event_time_is_vdsm_offset_plus_milliseconds():
    """event_time is 2**31 - 1 plus monotonic milliseconds."""
    assert event_time(lambda: 1.5) == 2**31 - 1 + 1500


def test_publish_adds_notify_time_and_encodes_a_notification():
    """A published event reaches a subscriber as a JSON-RPC notification with notify_time."""
    bus, sub = EventBus(monotonic=FakeMonotonic(2.0)), Recorder()
    bus.subscribe(sub, ["*"])
    params = {"v1": {"status": "Up"}}
    bus.publish("|virt|VM_status|v1", params)
    assert sub.events() == [
        {
            "jsonrpc": "2.0",
            "method": "|virt|VM_status|v1",
            "params": {"v1": {"status": "Up"}, "notify_time": 2**31 - 1 + 2000},
        }
    ]
    assert "notify_time" not in params


def test_notify_times_strictly_increase_with_a_stuck_clock():
    """Events published within one millisecond still get increasing notify times."""
    bus, sub = EventBus(monotonic=FakeMonotonic()), Recorder()
    bus.subscribe(sub, ["*"])
    for i in range(5):
        bus.publish("|e|x|1", {"i": i})
    times = [e["params"]["notify_time"] for e in sub.events()]
    assert times == sorted(set(times)) and len(times) == 5


def test_given_notify_time_is_kept_and_later_times_exceed_it():
    """A notify_time supplied by the caller is kept; the next one is above it."""
    bus, sub = EventBus(monotonic=FakeMonotonic(0.0)), Recorder()
    bus.subscribe(sub, ["*"])
    bus.publish("a", {"notify_time": 2**40})
    bus.publish("b", {})
    first, second = (e["params"]["notify_time"] for e in sub.events())
    assert first == 2**40 and second > first


def test_patterns_choose_subscribers():
    """Only subscribers whose patterns match the event id receive it, case-sensitively."""
    bus = EventBus()
    vm1, virt, nothing = Recorder(), Recorder(), Recorder()
    bus.subscribe(vm1, ["|virt|VM_status|vm1"])
    bus.subscribe(virt, ["|virt|*"])
    bus.subscribe(nothing, ["|VIRT|*"])
    bus.publish("|virt|VM_status|vm1", {})
    bus.publish("|virt|VM_status|vm2", {})
    bus.publish("|net|host_conn|no_id", {})
    assert [e["method"] for e in vm1.events()] == ["|virt|VM_status|vm1"]
    assert [e["method"] for e in virt.events()] == ["|virt|VM_status|vm1", "|virt|VM_status|vm2"]
    assert nothing.texts == []


def test_events_arrive_in_publish_order_encoded_once():
    """Every subscriber gets the same text object, in publish order."""
    bus, a, b = EventBus(), Recorder(), Recorder()
    bus.subscribe(a, ["*"])
    bus.subscribe(b, ["*"])
    for name in ["x", "y", "z"]:
        bus.publish(name, {})
    assert [e["method"] for e in a.events()] == ["x", "y", "z"]
    assert all(ta is tb for ta, tb in zip(a.texts, b.texts, strict=True))


def test_subscribe_and_unsubscribe_return_current_patterns():
    """subscribe adds patterns without duplicates; unsubscribe removes them; both report."""
    bus, sub = EventBus(), Recorder()
    assert bus.subscribe(sub, ["a*", "b*"]) == ["a*", "b*"]
    assert bus.subscribe(sub, ["b*", "c*"]) == ["a*", "b*", "c*"]
    assert bus.unsubscribe(sub, ["a*", "zz"]) == ["b*", "c*"]
    bus.publish("apple", {})
    bus.publish("cherry", {})
    assert [e["method"] for e in sub.events()] == ["cherry"]
    assert bus.unsubscribe(sub, ["b*", "c*"]) == []
    assert bus.unsubscribe(Recorder(), ["x"]) == []


def test_drop_forgets_a_subscriber():
    """A dropped subscriber receives nothing more."""
    bus, sub = EventBus(), Recorder()
    bus.subscribe(sub, ["*"])
    bus.drop(sub)
    bus.drop(sub)
    bus.publish("x", {})
    assert sub.texts == [] and bus.patterns(sub) == []


def test_failing_subscriber_does_not_stop_fan_out():
    """A subscriber that raises does not keep the others from their event."""

    class Broken:
        def send_event(self, text):
            raise RuntimeError("gone")

    bus, good = EventBus(), Recorder()
    bus.subscribe(Broken(), ["*"])
    bus.subscribe(good, ["*"])
    bus.publish("x", {})
    assert len(good.texts) == 1


def test_observers_see_every_event_with_notify_time():
    """Observers get every event, subscribed or not, with its params."""
    bus, seen = EventBus(monotonic=FakeMonotonic(1.0)), []
    bus.add_observer(lambda event_id, params: seen.append((event_id, params)))
    bus.publish("x", {"a": 1})
    assert seen == [("x", {"a": 1, "notify_time": 2**31 - 1 + 1000})]


def test_strict_bus_raises_observer_errors_after_fan_out():
    """In strict mode an observer's exception propagates, after subscribers got the event."""

    def reject(event_id, params):
        raise ValueError("bad event")

    bus, sub = EventBus(strict=True), Recorder()
    bus.subscribe(sub, ["*"])
    bus.add_observer(reject)
    with pytest.raises(ValueError):
        bus.publish("x", {})
    assert len(sub.texts) == 1
    bus.remove_observer(reject)
    bus.publish("y", {})


def test_non_json_params_raise_and_send_nothing():
    """Params that are not JSON raise and nothing is sent."""
    bus, sub = EventBus(), Recorder()
    bus.subscribe(sub, ["*"])
    with pytest.raises(TypeError):
        bus.publish("x", {"bad": object()})
    assert sub.texts == []
