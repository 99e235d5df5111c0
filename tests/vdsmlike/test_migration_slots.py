"""Pure: per-host migration slots (VDSM's max_outgoing/max_incoming_migrations)."""

from __future__ import annotations

import pytest

from vdsmlike.vm.migration_slots import MigrationSlots, Slots


def test_vdsms_default_limits():
    """A host takes 2 outgoing and 2 incoming migrations by default."""
    slots = MigrationSlots()
    assert (slots.outgoing.limit, slots.incoming.limit) == (2, 2)


def test_take_refuses_beyond_the_limit():
    """take() gives slots up to the limit and refuses the next (incoming: error 82)."""
    slots = Slots(2)
    assert slots.take("a") and slots.take("b")
    assert not slots.take("c")
    assert slots.take("a"), "a holder asking again still holds its slot"
    assert slots.holders == ["a", "b"] and slots.waiting == []


def test_waiters_get_slots_in_arrival_order():
    """wait() queues beyond the limit; each release hands the slot to the first in line."""
    slots = Slots(2)
    assert [slots.wait(k) for k in "abcd"] == [True, True, False, False]
    assert slots.waiting == ["c", "d"]
    assert slots.release("b") == ["c"]
    assert slots.release("a") == ["d"]
    assert slots.holders == ["c", "d"] and slots.waiting == []


def test_nobody_jumps_the_line():
    """While someone waits, a newcomer does not get a freed slot first."""
    slots = Slots(1)
    slots.wait("a")
    slots.wait("b")
    assert not slots.take("c")


def test_leaving_the_line():
    """A waiter that gives up leaves the line and wakes nobody."""
    slots = Slots(1)
    for key in "abc":
        slots.wait(key)
    assert slots.release("b") == []
    assert slots.release("a") == ["c"]


def test_limit_changes():
    """A raised limit lets waiters in; a lowered one keeps current holders until they leave."""
    slots = Slots(1)
    for key in "abc":
        slots.wait(key)
    assert slots.set_limit(3) == ["b", "c"]
    assert slots.set_limit(1) == []
    assert slots.holders == ["a", "b", "c"]
    slots.wait("d")
    assert slots.release("a") == [] and slots.release("b") == []
    assert slots.release("c") == ["d"]


def test_releasing_an_unknown_key_changes_nothing():
    """Releasing a key that holds nothing is harmless."""
    slots = Slots(1)
    slots.take("a")
    assert slots.release("zzz") == [] and slots.holders == ["a"]


@pytest.mark.parametrize("limit", [0, -1])
def test_limits_are_at_least_one(limit):
    """A limit below 1 is refused."""
    with pytest.raises(ValueError):
        Slots(limit)
    with pytest.raises(ValueError):
        Slots(1).set_limit(limit)
