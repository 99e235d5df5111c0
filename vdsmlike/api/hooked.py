"""Running VDSM's API-level hook points (``before_/after_get_caps`` and friends) around a verb.

``before_<name>`` gets ``{}`` and may refuse the call (VDSM's error 78); ``after_<name>`` gets the
result and may change it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..interfaces import IHookRunner
from . import errors


async def around_hooks(hooks: IHookRunner, name: str, produce: Callable[[], Any]) -> Any:
    """
    Produce a verb's result between the ``before_<name>`` and ``after_<name>`` hook points.

    :raises errors.ApiHookError: when a ``before_<name>`` hook fails.
    :returns: the result as the ``after_<name>`` hooks left it.
    """
    try:
        await hooks.run(f"before_{name}", {})
    except errors.HookError as e:
        raise errors.ApiHookError(e.detail) from None
    result = await hooks.run(f"after_{name}", produce())
    return result.payload
