"""Load ``schema/engine.yml``: the admin API's verbs, types, notifications and error codes.

The file has the agent schema's format (``schema/README.md``), so the agent's compiler,
:class:`vdsmlike.api.schema.Schema`, binds params and checks results and notifications for the
engine too: the file's ``verbs:`` and ``types:`` are given as its verb document and its
``events:`` (the notifications of ``Engine.subscribe``) as its event document. The ``errors:``
section, which the compiler ignores, is read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vdsmlike.api.schema import FORMAT, Schema, SchemaFileError, default_schema_dir

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class ErrorDoc:
    """One error code as ``errors:`` documents it."""

    code: int
    name: str
    message: str
    description: str


@dataclass(frozen=True)
class EngineSchema:
    """
    The compiled engine API schema.

    :ivar schema: verbs and notifications, compiled (``bind_params``, ``check_result``,
        ``check_event``, ``describe``).
    :ivar errors: every error code the API answers, by code.
    :ivar version: the API version (the file's ``version:``).
    """

    schema: Schema
    errors: Mapping[int, ErrorDoc]
    version: str


def default_path() -> Path:
    """:returns: ``engine.yml`` in the schema directory (``$VDSMLIKE_SCHEMA_DIR`` or the repo's)."""
    return default_schema_dir() / "engine.yml"


def load(path: str | os.PathLike[str] | None = None, *, strict: bool = True) -> EngineSchema:
    """
    Read and compile ``engine.yml``.

    :param path: the file; :func:`default_path` by default.
    :param strict: as :class:`~vdsmlike.api.schema.Schema`'s (tests validate every result).
    :raises SchemaFileError: if the file is malformed; ``OSError`` if it cannot be read.
    """
    with open(path or default_path(), encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_YamlLoader)  # noqa: S506 (a safe loader)
    if not isinstance(document, dict):
        raise SchemaFileError("engine schema: not a YAML mapping")
    verbs = {key: document.get(key) for key in ("format", "version", "types", "verbs")}
    events = {"format": FORMAT, "events": document.get("events") or {}}
    return EngineSchema(
        schema=Schema(verbs, events, strict=strict),
        errors=_read_errors(document.get("errors")),
        version=str(document.get("version")),
    )


def _read_errors(section: Any) -> dict[int, ErrorDoc]:
    """:returns: the ``errors:`` section; :raises SchemaFileError: if it is malformed."""
    if not isinstance(section, dict):
        raise SchemaFileError("engine schema: errors is a mapping of code to its description")
    docs = {}
    for code, entry in section.items():
        if not isinstance(code, int) or not isinstance(entry, dict):
            raise SchemaFileError(f"errors.{code}: a code is an integer with a mapping")
        missing = {"name", "message", "description"} - entry.keys()
        if missing:
            raise SchemaFileError(f"errors.{code}: missing {sorted(missing)}")
        docs[code] = ErrorDoc(code, entry["name"], entry["message"], entry["description"])
    return docs
