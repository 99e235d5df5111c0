"""``vdsm.hook.hooking``: the same module object as top-level ``hooking``."""

import sys

import hooking

sys.modules[__name__] = hooking
