"""The ``hooking`` module that hook scripts import: VDSM's script-side API.

Scripts import it as ``import hooking`` or ``from vdsm.hook import hooking`` (the runner puts
``hooks/pythonpath`` on ``PYTHONPATH``; the modules there re-export this file). Pure standard
library: scripts run with a plain ``python3`` that may not have the agent's virtualenv.

The API is VDSM's (``../shared/reference/vdsm.md`` section 4.3):

- :func:`read_domxml` / :func:`write_domxml`: the DOM in ``$_hook_domxml``;
- :func:`read_json` / :func:`write_json`: the object in ``$_hook_json``;
- :func:`log`, :func:`exit_hook`, :func:`tobool`, :func:`execCmd`;
- :func:`load_vm_launch_flags_from_file` / :func:`dump_vm_launch_flags_to_file`: the libvirt
  create flags in ``$VDSMLIKE_RUNTIME_DIR/<vmId>/launchflags`` (default ``/run/vdsmlike``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any
from xml.dom import minidom

__all__ = [
    "read_domxml",
    "write_domxml",
    "read_json",
    "write_json",
    "log",
    "exit_hook",
    "tobool",
    "execCmd",
    "load_vm_launch_flags_from_file",
    "dump_vm_launch_flags_to_file",
]

DEFAULT_RUNTIME_DIR = "/run/vdsmlike"


def read_domxml() -> minidom.Document:
    """:returns: the DOM parsed from the file named by ``$_hook_domxml``."""
    with open(os.environ["_hook_domxml"], "rb") as f:
        return minidom.parseString(f.read().decode("utf-8"))


def write_domxml(domxml: minidom.Document) -> None:
    """Write ``domxml`` (UTF-8) back to the file named by ``$_hook_domxml``."""
    with open(os.environ["_hook_domxml"], "wb") as f:
        f.write(domxml.toxml(encoding="utf-8"))


def read_json() -> Any:
    """:returns: the object parsed from the file named by ``$_hook_json``."""
    with open(os.environ["_hook_json"], "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def write_json(data: Any) -> None:
    """Write ``data`` as JSON to the file named by ``$_hook_json``."""
    with open(os.environ["_hook_json"], "w", encoding="utf-8") as f:
        f.write(json.dumps(data))


def log(message: str) -> None:
    """Write ``message`` and a newline to stderr (the agent logs it with the script's name)."""
    sys.stderr.write(message + "\n")


def exit_hook(message: str, return_code: int = 2) -> None:
    """Write ``message`` to stderr and exit with ``return_code`` (2: error, stop the point)."""
    sys.stderr.write(message + "\n")
    sys.exit(return_code)


def tobool(value: Any) -> bool:
    """:returns: True for ``True``, ``"true"`` (any case) and non-zero integers (or their
    strings); False for everything else, including None and unparsable values."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    try:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return int(value) != 0
    except (TypeError, ValueError):
        return False


def execCmd(  # noqa: N802 - VDSM's name
    command: list[str],
    sudo: bool = False,
    cwd: str | None = None,
    data: bytes | str | None = None,
    raw: bool = False,
    env: dict[str, str] | None = None,
    **_ignored: Any,
) -> tuple[int, Any, Any]:
    """Run ``command`` and wait for it.

    :param command: the argv.
    :param sudo: prefix ``sudo -n``.
    :param cwd: working directory.
    :param data: bytes (or str, UTF-8) fed to stdin; otherwise stdin is empty.
    :param raw: return stdout and stderr as bytes instead of lists of lines.
    :param env: the environment (default: inherited).
    :returns: ``(rc, out, err)``; out and err are lists of byte lines (as VDSM's) unless
        ``raw``. Other VDSM keyword arguments (``nice``, ``ioclass``, ...) are accepted and
        ignored.
    """
    argv = (["sudo", "-n"] if sudo else []) + list(command)
    if isinstance(data, str):
        data = data.encode("utf-8")
    done = subprocess.run(argv, cwd=cwd, env=env, input=data or b"", capture_output=True)
    if raw:
        return done.returncode, done.stdout, done.stderr
    return done.returncode, done.stdout.splitlines(), done.stderr.splitlines()


def _launch_flags_path(vm_id: str) -> str:
    """:returns: ``$VDSMLIKE_RUNTIME_DIR/<vm_id>/launchflags``."""
    if not vm_id or "/" in vm_id or vm_id in (".", ".."):
        raise ValueError(f"invalid vm id: {vm_id!r}")
    base = os.environ.get("VDSMLIKE_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR
    return os.path.join(base, vm_id, "launchflags")


def load_vm_launch_flags_from_file(vm_id: str) -> int:
    """:returns: the launch flags stored for ``vm_id``, or 0 (``VIR_DOMAIN_NONE``) if none."""
    try:
        with open(_launch_flags_path(vm_id)) as f:
            return int(f.readline().strip() or 0)
    except FileNotFoundError:
        return 0


def dump_vm_launch_flags_to_file(vm_id: str, flags: int) -> None:
    """Store ``flags`` (e.g. 1, ``VIR_DOMAIN_START_PAUSED``) as the launch flags of ``vm_id``."""
    path = _launch_flags_path(vm_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"{int(flags)}\n")
