"""The test-driver migration emulation: the pure transfer model and its clock-driven runner."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from vdsmlike.virt.errors import HypervisorError
from vdsmlike.vm.migration_emulation import (
    ABORTED_MESSAGE,
    TICK,
    EmulatedMigration,
    advance,
    start,
    stats,
)

MIB = 1024 * 1024


def test_an_idle_guest_moves_in_one_pass():
    """Without dirtying, all RAM goes in one pass at the bandwidth: 64 MiB at 32 MiB/s is 2 s."""
    t = start(64 * MIB, bandwidth_mib=32)
    half = advance(t, 1.0)
    assert not half.done and stats(half).data_remaining == 32 * MIB
    assert stats(half).iteration == 1 and stats(half).elapsed_ms == 1000
    done = advance(half, 1.0)
    assert done.done and stats(done).data_remaining == 0


def test_a_busy_guest_needs_more_passes():
    """A guest dirtying memory slower than the bandwidth converges after a few passes."""
    t = advance(start(64 * MIB, bandwidth_mib=64, dirty_rate=32 * MIB), 60)
    assert t.done and t.iteration >= 2
    assert t.processed > 64 * MIB


def test_a_guest_dirtying_faster_than_the_bandwidth_never_converges():
    """Dirtying faster than the link keeps passes full: no end at a short downtime..."""
    t = advance(start(32 * MIB, bandwidth_mib=64, dirty_rate=200 * MIB), 30)
    assert not t.done and t.iteration > 10
    assert stats(t).data_remaining > 0


def test_a_longer_downtime_lets_it_converge():
    """...until the downtime allows the rest to go in one pause."""
    t = advance(start(32 * MIB, bandwidth_mib=64, dirty_rate=200 * MIB, downtime_ms=600), 30)
    assert t.done


def test_unlimited_bandwidth_is_fast_but_not_instant():
    """0 MiB/s means unlimited: a GiB per second in the emulation."""
    t = start(512 * MIB, bandwidth_mib=0)
    assert not advance(t, 0.25).done and advance(t, 0.6).done


def test_the_runner_finishes_on_its_clock():
    """On a clock the transfer advances per tick; at the end the domain moves, then done fires."""
    clock = Clock()
    moved = []
    running = EmulatedMigration(start(8 * MIB, bandwidth_mib=16), lambda: moved.append(1), clock)
    clock.advance(TICK)
    assert not running.done.called and 0 < running.stats().data_processed < 8 * MIB
    for _ in range(20):
        clock.advance(TICK)
    assert moved == [1] and running.done.called and running.finished
    assert clock.getDelayedCalls() == []


def test_bandwidth_and_downtime_change_on_the_fly():
    """set_bandwidth speeds a slow transfer up; set_downtime is what stats report."""
    clock = Clock()
    running = EmulatedMigration(start(64 * MIB, bandwidth_mib=1), lambda: None, clock)
    running.set_downtime(250)
    clock.advance(TICK)
    assert not running.finished and running.stats().downtime == 250
    running.set_bandwidth(0)
    for _ in range(3):
        clock.advance(TICK)
    assert running.done.called


def test_abort_fails_with_libvirts_message():
    """An aborted transfer fails with libvirt's "canceled by client"; the domain never moves."""
    clock = Clock()
    moved = []
    running = EmulatedMigration(start(64 * MIB, bandwidth_mib=1), lambda: moved.append(1), clock)
    clock.advance(TICK)
    assert running.abort() is True
    failure = []
    running.done.addErrback(failure.append)
    assert failure[0].check(HypervisorError) and ABORTED_MESSAGE in str(failure[0].value)
    assert running.abort() is False
    clock.advance(10)
    assert moved == [] and clock.getDelayedCalls() == []


def test_without_a_clock_it_ends_at_once():
    """Synchronous adapters (no reactor) get the whole transfer at once."""
    moved = []
    running = EmulatedMigration(start(64 * MIB, bandwidth_mib=1), lambda: moved.append(1))
    assert moved == [1] and running.done.called


def test_a_failing_move_fails_the_migration():
    """If moving the domain fails, so does the migration."""

    def gone():
        raise HypervisorError("domain is not running")

    running = EmulatedMigration(start(MIB, bandwidth_mib=1), gone)
    errors = []
    running.done.addErrback(errors.append)
    assert errors and "not running" in str(errors[0].value)


@pytest.mark.parametrize("seconds", [0.0, 0.001, 1e-9])
def test_tiny_steps_do_not_stall(seconds):
    """Advancing by nothing or almost nothing is harmless."""
    t = start(MIB, bandwidth_mib=1)
    assert advance(t, seconds).remaining <= MIB
