"""Pure: fencing's admin-API shapes (``PowerManagement``, ``FenceResult``), secrets left out.

A power driver declares which of its options are secrets (``secret_options``); any option whose
name looks like one (``password``, ``passwd``, ``secret``, ``token``, a name ending in ``key``)
is treated as one as well, so a driver that forgets to declare its BMC password still never
has it sent back. The API then names the secret options that are set, never their values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from engine.store.rows import HostPowerManagement

from .result import FenceResult

_SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|key$|credential", re.IGNORECASE)


def secret_names(options: Mapping[str, Any], declared: Iterable[str] = ()) -> set[str]:
    """:returns: the options of ``options`` that hold secrets (declared, or by their name)."""
    marked = set(declared)
    return {name for name in options if name in marked or _SECRET_NAME.search(name)}


def without_secrets(options: Mapping[str, Any], declared: Iterable[str] = ()) -> dict[str, Any]:
    """:returns: ``options`` with the secret ones left out."""
    hidden = secret_names(options, declared)
    return {name: value for name, value in options.items() if name not in hidden}


def power_management(
    row: HostPowerManagement, declared: Iterable[str] = (), *, updated: str | None = None
) -> dict[str, Any]:
    """
    The API's ``PowerManagement``: the settings, with secret options named but not given.

    :param declared: the driver's ``secret_options``.
    :param updated: the row's update time as a wire time.
    """
    hidden = secret_names(row.options, declared)
    return {
        "host_id": str(row.host_id),
        "enabled": row.enabled,
        "driver": row.driver,
        "options": {k: v for k, v in row.options.items() if k not in hidden},
        "secret_options": sorted(hidden),
        "fencing_enabled": row.fencing_enabled,
        "updated": updated,
    }


def fence_result(result: FenceResult) -> dict[str, Any]:
    """The API's ``FenceResult``."""
    return result.as_dict()


def summary(row: HostPowerManagement, declared: Iterable[str] = ()) -> str:
    """One line for the audit log, e.g. "enabled, driver process (cgroup, start); fencing
    enabled" (option names only: values may be long, and secrets never appear)."""
    if not row.driver:
        head = "disabled, no driver"
    else:
        names = ", ".join(sorted(row.options)) or "no options"
        head = f"{'enabled' if row.enabled else 'disabled'}, driver {row.driver} ({names})"
    return f"{head}; fencing {'enabled' if row.fencing_enabled else 'disabled'}"
