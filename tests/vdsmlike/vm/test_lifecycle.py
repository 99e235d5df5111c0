"""Interpreting libvirt domain events: which VM events they mean and how a VM exited."""

from vdsmlike.virt.events import DomainEvent, LifecycleEvent, StoppedDetail, SuspendedDetail
from vdsmlike.vm.lifecycle import Exit, Requests, interpret
from vdsmlike.vm.states import ExitCode, ExitReason, VmEvent

VM = "11111111-2222-3333-4444-555555555555"


def stopped(detail, **requests):
    return interpret(DomainEvent(VM, LifecycleEvent.STOPPED, int(detail)), Requests(**requests))


def test_destroy_we_asked_for_is_an_admin_shutdown():
    """A STOPPED/DESTROYED event after VM.destroy exits normally with reason 6."""
    meaning = stopped(StoppedDetail.DESTROYED, destroy=True)
    assert meaning.events == (VmEvent.STOPPED,)
    assert meaning.exit == Exit.of(ExitReason.ADMIN_SHUTDOWN)
    assert meaning.exit.code == ExitCode.NORMAL


def test_destroy_from_outside_is_an_error():
    """A domain destroyed behind the agent's back exits with an error, reason 2."""
    meaning = stopped(StoppedDetail.DESTROYED)
    assert meaning.exit.code == ExitCode.ERROR
    assert meaning.exit.reason == ExitReason.LOST_QEMU_CONNECTION


def test_guest_powering_itself_off_is_a_user_shutdown():
    """A guest that shuts itself down exits normally with reason 7."""
    meaning = stopped(StoppedDetail.SHUTDOWN)
    assert meaning.exit.reason == ExitReason.USER_SHUTDOWN
    assert meaning.exit.code == ExitCode.NORMAL


def test_shutdown_we_asked_for_is_an_admin_shutdown():
    """A guest that powers off after VM.shutdown exits with reason 6."""
    assert stopped(StoppedDetail.SHUTDOWN, shutdown=True).exit.reason == ExitReason.ADMIN_SHUTDOWN


def test_crash_is_an_error():
    """A crashed domain exits with an error."""
    meaning = stopped(StoppedDetail.CRASHED)
    assert meaning.exit.code == ExitCode.ERROR
    assert "crash" in meaning.exit.message


def test_io_error_pause_carries_pause_code():
    """A pause caused by an I/O error reports pauseCode EIO; a user pause NOERR."""
    io = interpret(DomainEvent(VM, LifecycleEvent.SUSPENDED, SuspendedDetail.IOERROR), Requests())
    user = interpret(DomainEvent(VM, LifecycleEvent.SUSPENDED, SuspendedDetail.PAUSED), Requests())
    assert (io.events, io.pause_code) == ((VmEvent.PAUSED,), "EIO")
    assert user.pause_code == "NOERR"


def test_reboot_event_means_reboot_then_up():
    """libvirt's reboot event is a reboot that has already happened."""
    meaning = interpret(DomainEvent(VM, "reboot"), Requests())
    assert meaning.events == (VmEvent.REBOOT_REQUESTED, VmEvent.REBOOTED)


def test_defined_event_means_nothing():
    """Events that do not change a running VM map to no VM event."""
    assert interpret(DomainEvent(VM, LifecycleEvent.DEFINED), Requests()).events == ()


def test_shutdown_finished_event_waits_for_stopped():
    """QEMU's SHUTDOWN event (also sent on destroy) changes nothing; STOPPED ends the VM."""
    for detail in (0, 1, 2):
        meaning = interpret(
            DomainEvent(VM, LifecycleEvent.SHUTDOWN, detail), Requests(destroy=True)
        )
        assert meaning.events == ()
