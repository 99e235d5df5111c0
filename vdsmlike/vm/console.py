"""``SerialConsole``: read a VM's serial log for ``VM.getConsoleOutput``, off the reactor thread.

The guest's serial port is file-backed: VMs built from legacy params write to
``<serial_dir>/<vmId>.log``, and a domain XML may name any file (``DomainSpec.serial_path``,
the first ``<serial type='file'>`` or ``<console type='file'>``). Reading it blocks (a disk, an
NFS mount), so each read runs on the agent's blocking runner, serialized per VM, and reads at
most ``size`` plus 3 bytes whatever the file's size. Which bytes, the UTF-8 cut and the reset
rule are :mod:`.consolewindow`'s pure decisions.

Reading changes nothing, so any VM the container lists may be read: Down VMs (the log of their
last run) and external ones included.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from twisted.logger import Logger

from ..api import errors
from ..interfaces import IBlockingRunner
from . import consolewindow
from .container import VmContainer


def read_log(path: str, offset: int | None, size: int) -> dict[str, Any]:
    """
    Read a window of a serial log (blocking: call it on a worker thread).

    A log that does not exist yet reads as empty. The file is opened non-blocking and must be
    a regular file, so a FIFO or a device put in its place cannot hang the worker.

    :returns: the ``VM.getConsoleOutput`` result (see :func:`.consolewindow.answer`).
    :raises OSError: when the file cannot be opened or read, or is not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        window = consolewindow.plan(0, offset, size)
        return consolewindow.answer(window, b"")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        window = consolewindow.plan(info.st_size, offset, size)
        chunk = os.pread(fd, window.length, window.start) if window.length else b""
        return consolewindow.answer(window, chunk)
    finally:
        os.close(fd)


class SerialConsole:
    """
    Reads the serial logs of the container's VMs.

    :param container: the VMs of this host (their serial paths).
    :param runner: where the blocking reads run; keyed ``("console", vmId)``, so reads of one VM
        queue behind each other but never behind that VM's libvirt calls.
    """

    log = Logger()

    def __init__(self, container: VmContainer, runner: IBlockingRunner) -> None:
        self._vms = container
        self._runner = runner

    async def read(
        self, vm_id: str, *, offset: int | None = None, size: int = consolewindow.DEFAULT_SIZE
    ) -> dict[str, Any]:
        """
        Read what the VM's guest wrote to its serial console.

        :param offset: the first byte wanted; None for the last ``size`` bytes.
        :param size: the most bytes wanted, 0 to :data:`.consolewindow.MAX_SIZE`.
        :returns: ``{"data", "offset", "next", "size", "reset"}`` (see
            :func:`.consolewindow.answer`).
        :raises errors.NoSuchVM: for a VM the container does not list.
        :raises errors.InvalidParams: for a negative offset or a size out of range.
        :raises errors.UnsupportedOperation: when the VM has no file-backed serial console.
        :raises errors.UnexpectedError: when the file cannot be read.
        """
        vm = self._vms.get(vm_id)
        _check(offset, size)
        path = vm.spec.serial_path
        if not path:
            raise errors.UnsupportedOperation(
                "the VM has no file-backed serial console", vmId=vm.vm_id
            )
        try:
            return await self._runner.run(("console", vm.vm_id), read_log, path, offset, size)
        except OSError as e:
            self.log.warn(
                "vm {vm_id}: cannot read serial log {path}: {error}",
                vm_id=vm.vm_id,
                path=path,
                error=e,
            )
            raise errors.UnexpectedError(
                f"cannot read the serial console log: {e.strerror or e}", vmId=vm.vm_id
            ) from None


def _check(offset: int | None, size: int) -> None:
    """Refuse what the schema refuses too (it only advises when not strict)."""
    if offset is not None and (not _integer(offset) or offset < 0):
        raise errors.InvalidParams(f"offset: must be a non-negative integer, got {offset!r}")
    if not _integer(size) or not 0 <= size <= consolewindow.MAX_SIZE:
        raise errors.InvalidParams(
            f"size: must be an integer from 0 to {consolewindow.MAX_SIZE}, got {size!r}"
        )


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
