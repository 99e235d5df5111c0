"""The event bus: JSON-RPC notifications fanned out to subscribers chosen by shell-style patterns.

An event is ``{"jsonrpc": "2.0", "method": "<event id>", "params": {..., "notify_time": N}}``
(``reference/vdsm.md`` §2.4). VDSM sends every event to every subscriber and leaves filtering to
the client; we filter on the agent with ``fnmatch`` patterns (``*`` = everything), so a console
watching one VM does not receive the whole host. Call the bus from the reactor thread only.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.logger import Logger

from . import jsonrpc

EVENT_TIME_OFFSET = 2**31 - 1

Observer = Callable[[str, dict[str, Any]], None]


def event_time(monotonic: Callable[[], float] = time.monotonic) -> int:
    """
    VDSM's ``event_time()``: ``2**31 - 1`` plus monotonic milliseconds.

    :param monotonic: the clock in seconds; inject a fake one in tests.
    :returns: the time used for ``notify_time`` and ``statusTime``.
    """
    return EVENT_TIME_OFFSET + int(monotonic() * 1000)


class EventSubscriber(Protocol):
    """Anything that can receive encoded events: a WebSocket connection, a test recorder."""

    def send_event(self, text: str) -> None:
        """Send one encoded notification."""


class _Subscription:
    """One subscriber's patterns and the regular expression they compile to."""

    def __init__(self) -> None:
        self.patterns: list[str] = []
        self._regex: re.Pattern[str] | None = None

    def update(self, patterns: list[str]) -> None:
        self.patterns = patterns
        joined = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
        self._regex = re.compile(joined) if patterns else None

    def matches(self, event_id: str) -> bool:
        return self._regex is not None and self._regex.match(event_id) is not None


class EventBus:
    """
    Publishes events to subscribers and in-process observers.

    :param monotonic: the clock for ``notify_time`` (``time.monotonic`` by default).
    :param strict: when true, an observer's exception propagates out of `publish` (after every
        subscriber got the event); otherwise it is logged. Tests validating events use strict.
    """

    log = Logger()

    def __init__(
        self, *, monotonic: Callable[[], float] = time.monotonic, strict: bool = False
    ) -> None:
        self._monotonic = monotonic
        self._strict = strict
        self._last_time = 0
        self._subscriptions: dict[EventSubscriber, _Subscription] = {}
        self._observers: list[Observer] = []

    def next_time(self) -> int:
        """:returns: an `event_time` strictly greater than every one this bus handed out."""
        self._last_time = max(event_time(self._monotonic), self._last_time + 1)
        return self._last_time

    def publish(self, event_id: str, params: dict[str, Any]) -> None:
        """
        Send an event to every matching subscriber, then to the observers.

        :param event_id: e.g. ``|virt|VM_status|<vmId>``.
        :param params: the event's params; ``notify_time`` is added when absent (the dict given
            is not modified).
        :raises TypeError, ValueError: if ``params`` is not JSON (nothing is sent).
        """
        if "notify_time" in params:
            self._last_time = max(self._last_time, params["notify_time"])
        else:
            params = {**params, "notify_time": self.next_time()}
        text = jsonrpc.encode_notification(event_id, params)
        for subscriber, subscription in list(self._subscriptions.items()):
            if subscription.matches(event_id):
                self._deliver(subscriber, text, event_id)
        self._notify_observers(event_id, params)

    def _deliver(self, subscriber: EventSubscriber, text: str, event_id: str) -> None:
        try:
            subscriber.send_event(text)
        except Exception:
            self.log.failure(
                "sending {event_id} to {subscriber} failed",
                event_id=event_id,
                subscriber=subscriber,
            )

    def _notify_observers(self, event_id: str, params: dict[str, Any]) -> None:
        first_error: Exception | None = None
        for observer in list(self._observers):
            try:
                observer(event_id, params)
            except Exception as e:
                self.log.failure(
                    "event observer {observer} failed on {event_id}",
                    observer=observer,
                    event_id=event_id,
                )
                first_error = first_error or e
        if self._strict and first_error is not None:
            raise first_error

    def subscribe(self, subscriber: EventSubscriber, patterns: Iterable[str]) -> list[str]:
        """
        Add patterns to a subscriber's set (duplicates are ignored).

        :returns: the subscriber's patterns now, in the order they were first added.
        """
        subscription = self._subscriptions.setdefault(subscriber, _Subscription())
        current = list(subscription.patterns)
        current.extend(p for p in dict.fromkeys(patterns) if p not in current)
        subscription.update(current)
        return list(current)

    def unsubscribe(self, subscriber: EventSubscriber, patterns: Iterable[str]) -> list[str]:
        """
        Remove patterns from a subscriber's set; unknown patterns are ignored.

        :returns: the remaining patterns (the subscriber is dropped when none remain).
        """
        subscription = self._subscriptions.get(subscriber)
        if subscription is None:
            return []
        removed = set(patterns)
        remaining = [p for p in subscription.patterns if p not in removed]
        if remaining:
            subscription.update(remaining)
        else:
            del self._subscriptions[subscriber]
        return remaining

    def patterns(self, subscriber: EventSubscriber) -> list[str]:
        """:returns: the subscriber's current patterns (empty if not subscribed)."""
        subscription = self._subscriptions.get(subscriber)
        return list(subscription.patterns) if subscription else []

    def drop(self, subscriber: EventSubscriber) -> None:
        """Forget a subscriber entirely (its connection is gone); unknown ones are ignored."""
        self._subscriptions.pop(subscriber, None)

    def add_observer(self, callback: Observer) -> None:
        """Call ``callback(event_id, params)`` for every event published, after the fan-out."""
        self._observers.append(callback)

    def remove_observer(self, callback: Observer) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        if callback in self._observers:
            self._observers.remove(callback)
