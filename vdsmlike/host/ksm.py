"""KSM's knobs in sysfs (``/sys/kernel/mm/ksm/<knob>``): checked as supervdsm checks them, written
off the reactor.

``Host.setKsmTune`` is how MOM's KSM controller tunes the kernel's same-page merging through
VDSM, which hands the values to supervdsm (root) to write. The knobs and their bounds are
supervdsm's: ``run`` and ``merge_across_nodes`` below 3, ``pages_to_scan`` and
``sleep_millisecs`` below 2**32, no other key. Every value is checked before the first write,
so a refused request writes nothing. The directory is configurable (``[vars] ksm_dir``), so tests
write to a fake tree; a knob missing there is an error, never a new file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail

from ..interfaces import IBlockingRunner

DEFAULT_KSM_DIR = "/sys/kernel/mm/ksm"
#: Each knob supervdsm lets VDSM set, and the bound its value must stay below.
KSM_LIMITS = {
    "run": 3,
    "merge_across_nodes": 3,
    "pages_to_scan": 2**32,
    "sleep_millisecs": 2**32,
}


class InvalidKsmParams(ValueError):
    """A KSM knob or value supervdsm would refuse; the message names it."""


def check_ksm_params(params: Mapping[str, Any]) -> dict[str, int]:
    """
    Check KSM tuning params (pure).

    :returns: the params as ``{knob: int}``, in the order given.
    :raises InvalidKsmParams: for an unknown knob, or a value that is not a whole number or is
        outside ``0 <= value < KSM_LIMITS[knob]``.
    """
    checked: dict[str, int] = {}
    for key, value in params.items():
        if key not in KSM_LIMITS:
            raise InvalidKsmParams(
                f"invalid key in ksm tuning params: {key!r} (known: {', '.join(KSM_LIMITS)})"
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidKsmParams(f"ksm tuning param {key} must be an integer, got {value!r}")
        if not 0 <= value < KSM_LIMITS[key]:
            raise InvalidKsmParams(
                f"invalid value ({value}) for ksm tuning param {key}: "
                f"must be at least 0 and below {KSM_LIMITS[key]}"
            )
        checked[key] = value
    return checked


class KsmSysfs:
    """
    Writes KSM's knobs in one directory.

    :param directory: the KSM sysfs directory (:data:`DEFAULT_KSM_DIR` on a real host).
    :param runner: runs the blocking writes, one request at a time.
    """

    def __init__(self, directory: str = DEFAULT_KSM_DIR, *, runner: IBlockingRunner) -> None:
        self.directory = directory
        self._runner = runner

    def tune(self, params: Mapping[str, Any]) -> Deferred[None]:
        """
        Check ``params`` and write each value to ``<directory>/<knob>``.

        :returns: a Deferred firing with None once every value is written; failing with
            :class:`InvalidKsmParams` (nothing written) or the ``OSError`` of the first write
            that failed (the knobs before it are written).
        """
        try:
            checked = check_ksm_params(params)
        except InvalidKsmParams:
            return fail()
        return self._runner.run("ksm", self._write, checked)

    def _write(self, values: dict[str, int]) -> None:
        for key, value in values.items():
            # No O_CREAT: a knob this kernel lacks is an error, not a new file in a fake tree.
            fd = os.open(os.path.join(self.directory, key), os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, f"{value}\n".encode())
            finally:
                os.close(fd)
