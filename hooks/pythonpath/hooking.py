"""Top-level ``hooking`` for hook scripts: runs ``hooks/hooking.py`` (the one implementation).

This directory is appended to the scripts' ``PYTHONPATH`` by ``hooks.scripts``.
"""

import os as _os

_REAL = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "hooking.py")
with open(_REAL, encoding="utf-8") as _f:
    exec(compile(_f.read(), _REAL, "exec"))  # noqa: S102 - re-export the real module's names
