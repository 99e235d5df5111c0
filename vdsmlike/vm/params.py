"""
Checks for VDSM's legacy ``VM.create`` and hotplug params, each naming the key it refuses.

Pure: no I/O. Every function returns a clean value or raises
:class:`~vdsmlike.vm.xmlsafe.InvalidVmParams` with a message such as
``"memSize must be a positive integer (MiB), got '-5'"``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from typing import Any

from .metadata import is_env_name
from .xmlsafe import InvalidVmParams, check_xml_chars

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def is_uuid(value: str) -> bool:
    """:returns: whether ``value`` is a UUID in the 8-4-4-4-12 form (any case)."""
    return bool(_UUID.match(value.lower()))


def is_mac(value: str) -> bool:
    """:returns: whether ``value`` is a unicast MAC address ``xx:xx:xx:xx:xx:xx`` (any case)."""
    return bool(_MAC.match(value.lower())) and not int(value[:2], 16) & 1


def mapping(value: Any, key: str) -> dict[str, Any]:
    """:returns: ``value`` if it is a dict. :raises InvalidVmParams: otherwise."""
    if not isinstance(value, dict):
        raise InvalidVmParams(f"{key} must be an object, got {type(value).__name__}")
    return value


def text(value: Any, key: str, *, empty: bool = False) -> str:
    """:returns: ``value`` if it is a string XML can carry (non-empty unless ``empty``)."""
    if not isinstance(value, str):
        raise InvalidVmParams(f"{key} must be a string, got {type(value).__name__}")
    if not empty and not value.strip():
        raise InvalidVmParams(f"{key} must not be empty")
    return check_xml_chars(key, value)


def uuid(value: Any, key: str) -> str:
    """:returns: ``value`` as a lower-case UUID. :raises InvalidVmParams: for anything else."""
    if not isinstance(value, str) or not is_uuid(value.strip()):
        raise InvalidVmParams(f"{key} must be a UUID, got {value!r}")
    return value.strip().lower()


def integer(value: Any, key: str, *, minimum: int, maximum: int, what: str) -> int:
    """
    :param what: how the message describes a good value, e.g. ``"a positive integer (MiB)"``.
    :returns: ``value`` as an int, from an int or a decimal string, within the bounds.
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INTEGER.match(value.strip()):
        number = int(value.strip())
    if number is None or not minimum <= number <= maximum:
        raise InvalidVmParams(f"{key} must be {what}, got {_show(value)}")
    return number


def boolean(value: Any, key: str) -> bool:
    """:returns: ``value`` as a bool, from a bool or ``"true"``/``"false"`` (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidVmParams(f"{key} must be true or false, got {_show(value)}")


def choice(value: Any, key: str, allowed: Iterable[str]) -> str:
    """:returns: ``value`` if it is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise InvalidVmParams(f"{key} must be one of {', '.join(allowed)}, got {_show(value)}")
    return str(value)


def path(value: Any, key: str) -> str:
    """:returns: ``value`` if it is an absolute, normalized-looking path."""
    value = text(value, key)
    if not posixpath.isabs(value) or "\n" in value:
        raise InvalidVmParams(f"{key} must be an absolute path, got {value!r}")
    return value


def name(value: Any, key: str, *, pattern: str = r"[A-Za-z0-9][A-Za-z0-9._:-]*") -> str:
    """:returns: ``value`` if it is a plain identifier (network, bridge, machine type...)."""
    value = text(value, key)
    if not re.fullmatch(pattern, value):
        raise InvalidVmParams(f"{key} has characters that are not allowed: {value!r}")
    return value


def mac(value: Any, key: str) -> str:
    """:returns: ``value`` as a lower-case unicast MAC address."""
    if not isinstance(value, str) or not is_mac(value.strip()):
        raise InvalidVmParams(
            f"{key} must be a unicast MAC address like 52:54:00:12:34:56, got {_show(value)}"
        )
    return value.strip().lower()


def custom(value: Any, key: str) -> dict[str, str]:
    """
    :returns: custom properties, checked: names usable as environment variables (hook scripts
        receive them so), values strings.
    """
    props = mapping(value, key)
    for prop, prop_value in props.items():
        if not isinstance(prop, str) or not is_env_name(prop):
            raise InvalidVmParams(
                f"{key} property name {prop!r} is not a valid environment variable name "
                "([A-Za-z_][A-Za-z0-9_]*); hook scripts receive custom properties as such"
            )
        text(prop_value, f"{key}.{prop}", empty=True)
    return dict(props)


def _show(value: Any) -> str:
    return repr(str(value)) if isinstance(value, int | float) else repr(value)
