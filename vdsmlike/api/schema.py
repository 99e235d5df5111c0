"""Pure: load ``schema/agent.yml`` and ``schema/events.yml``; bind params, check results and events.

The schema files are the one source of the agent's verbs (see ``schema/README.md``). This module
reads them once and compiles a JSON Schema (Draft 2020-12) validator for every param, result and
event. References to named types (``$ref: "#/types/UUID"``) are inlined at load so that no
validation pays for a lookup; only a type that refers to itself keeps a ``$ref``, resolved in
one registry of all types. Then, on the hot path of every request, it answers:

- :meth:`Schema.bind_params`: name positional params, reject unknown and missing ones, check
  types, fill defaults; ``InvalidParams`` (-32602) or ``MethodNotFound`` (-32601).
- :meth:`Schema.check_result` and :meth:`Schema.check_event`: ``SchemaViolation``.

A :class:`Schema` built with ``strict=False`` is VDSM's advisory mode: a violation is logged and
the call goes on. An unknown verb is refused in both modes.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from twisted.logger import Logger

from .errors import InvalidParams, MethodNotFound

SCHEMA_DIR_ENV = "VDSMLIKE_SCHEMA_DIR"
"""Environment variable naming a directory that holds ``agent.yml`` and ``events.yml``."""

FORMAT = 1
"""The schema file format this module reads (the files' ``format:`` key)."""

TYPES_URI = "urn:vdsmlike:schema:types"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_LOCAL_REF = "#/types/"
_PRIMITIVES = frozenset({"string", "integer", "number", "boolean", "object", "array", "null"})
_VERB_KEYS = frozenset({"description", "added", "params", "result", "errors", "deprecated"})
_PARAM_KEYS = frozenset({"name", "description", "type", "default"})
_RESULT_KEYS = frozenset({"description", "type"})
_EVENT_KEYS = frozenset({"description", "added", "params", "keyed_by_id", "deprecated"})
_ANNOTATIONS = frozenset({"description", "title", "examples", "$comment"})
_PLAIN_KEY = re.compile(r"[\w-]+")
_MESSAGE_LIMIT = 300
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SchemaViolation(AssertionError):
    """A result or an event does not match the schema; the message names the path."""


class SchemaFileError(ValueError):
    """A schema file is malformed: a missing key, an unknown type, a bad JSON Schema fragment."""


@dataclass(frozen=True)
class _Verb:
    """
    One verb, compiled: its params in order, a validator per param and one for the result.

    Params are checked one by one rather than as one object: that halves the cost of binding
    ``VM.create`` and gives the same paths (``vmParams.memSize``) in messages.
    """

    name: str
    doc: Mapping[str, Any]
    names: tuple[str, ...]
    required: tuple[str, ...]
    nullable: frozenset[str]
    defaults: tuple[tuple[str, Any], ...]
    param_validators: Mapping[str, Draft202012Validator]
    result_validator: Draft202012Validator


@dataclass(frozen=True)
class _Event:
    """One event, compiled: its id pattern and params validator."""

    pattern: str
    doc: Mapping[str, Any]
    keyed_by_id: bool
    validator: Draft202012Validator


def default_schema_dir() -> Path:
    """
    Where the schema files are: ``$VDSMLIKE_SCHEMA_DIR``, else ``<repo>/schema``.

    :returns: the directory holding ``agent.yml`` and ``events.yml``.
    """
    override = os.environ.get(SCHEMA_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "schema"


def _read_yaml(path: Path) -> dict[str, Any]:
    """Parse one schema file; :raises SchemaFileError: if it is not a YAML mapping."""
    with open(path, encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_YamlLoader)  # noqa: S506 (a safe loader)
    if not isinstance(document, dict):
        raise SchemaFileError(f"{path}: not a YAML mapping")
    return document


def _fail(where: str, problem: str) -> SchemaFileError:
    """:returns: a ``SchemaFileError`` naming the place in the file."""
    return SchemaFileError(f"{where}: {problem}")


def _resolve_refs(
    fragment: Any, types: Mapping[str, Any], where: str, inlining: tuple[str, ...] = ()
) -> Any:
    """
    Copy a JSON Schema fragment, replacing each ``$ref: "#/types/Name"`` by the named type.

    Inlining spares the validators a registry lookup per ``$ref`` on every request (it was
    half the cost of binding ``VM.create``); a type that refers to itself keeps a ``$ref``
    into the registry, so recursive types still work.

    :param inlining: the types being inlined around this fragment (to stop at recursion).
    :raises SchemaFileError: for a reference to an unknown type or of another form.
    """
    if isinstance(fragment, list):
        return [_resolve_refs(item, types, where, inlining) for item in fragment]
    if not isinstance(fragment, dict):
        return fragment
    resolved = {
        key: _resolve_refs(value, types, where, inlining)
        for key, value in fragment.items()
        if not (key == "$ref" and isinstance(value, str))
    }
    ref = fragment.get("$ref")
    if not isinstance(ref, str):
        return resolved
    uri = _type_uri(ref, types, where)
    name = ref[len(_LOCAL_REF) :]
    if name in inlining:
        return {**resolved, "$ref": uri}
    target = _resolve_refs(types[name], types, where, (*inlining, name))
    if not resolved.keys() - _ANNOTATIONS:
        return target
    return {**resolved, "allOf": [target, *resolved.get("allOf", [])]}


def _type_uri(ref: str, types: Mapping[str, Any], where: str) -> str:
    """:returns: the registry URI of ``#/types/Name``; :raises SchemaFileError: if unknown."""
    name = ref[len(_LOCAL_REF) :] if ref.startswith(_LOCAL_REF) else None
    if name not in types:
        raise _fail(where, f"$ref {ref!r} does not name a type (write '#/types/<Name>')")
    return f"{TYPES_URI}#/$defs/{name}"


def _expand_type(written: Any, types: Mapping[str, Any], where: str) -> dict[str, Any]:
    """
    Turn the ``type:`` of a param, result or event into a JSON Schema.

    :param written: a type name (``UUID``), a JSON primitive (``string``), a one-element list
        (``[UUID]``: an array of it) or a JSON Schema fragment.
    """
    if isinstance(written, str):
        if written in types:
            return _resolve_refs({"$ref": _LOCAL_REF + written}, types, where)
        if written in _PRIMITIVES:
            return {"type": written}
        raise _fail(where, f"unknown type {written!r}")
    if isinstance(written, list) and len(written) == 1:
        return {"type": "array", "items": _expand_type(written[0], types, where)}
    if isinstance(written, dict):
        return _resolve_refs(written, types, where)
    raise _fail(where, f"a type is a name, [name] or a mapping, not {written!r}")


def _compile(schema: dict[str, Any], registry: Registry, where: str) -> Draft202012Validator:
    """:returns: a validator for ``schema``; :raises SchemaFileError: if it is no JSON Schema."""
    schema = {"$schema": _DIALECT, **schema}
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        raise _fail(where, f"bad JSON Schema: {error.message}") from None
    return Draft202012Validator(schema, registry=registry)


def _build_registry(types: Mapping[str, Any]) -> Registry:
    """:returns: a registry holding every named type under ``urn:vdsmlike:schema:types``."""
    defs = {
        name: _resolve_refs(body, types, f"types.{name}", (name,)) for name, body in types.items()
    }
    for name, body in defs.items():
        try:
            Draft202012Validator.check_schema({"$schema": _DIALECT, **body})
        except SchemaError as error:
            raise _fail(f"types.{name}", f"bad JSON Schema: {error.message}") from None
    document = {"$schema": _DIALECT, "$id": TYPES_URI, "$defs": defs}
    return Registry().with_resource(TYPES_URI, DRAFT202012.create_resource(document)).crawl()


def _merge_types(*documents: Mapping[str, Any]) -> dict[str, Any]:
    """:returns: the ``types:`` of all files in one namespace; :raises SchemaFileError: on clash."""
    merged: dict[str, Any] = {}
    for document in documents:
        for name, body in (document.get("types") or {}).items():
            if name in merged:
                raise _fail(f"types.{name}", "defined twice")
            if not isinstance(body, dict):
                raise _fail(f"types.{name}", "a type is a JSON Schema mapping")
            merged[name] = body
    return merged


def _check_keys(entry: Any, allowed: frozenset[str], needed: Iterable[str], where: str) -> None:
    """:raises SchemaFileError: if ``entry`` is no mapping, lacks a key or has an unknown one."""
    if not isinstance(entry, dict):
        raise _fail(where, "expected a mapping")
    for key in needed:
        if key not in entry:
            raise _fail(where, f"missing {key!r}")
    for key in entry:
        if key not in allowed:
            raise _fail(where, f"unknown key {key!r}")
    if "added" in entry and not isinstance(entry["added"], str):
        raise _fail(where, "'added' must be a quoted version string such as \"0.1\"")


def _compile_verb(name: str, entry: Any, types: Mapping[str, Any], registry: Registry) -> _Verb:
    """:returns: one compiled verb; :raises SchemaFileError: if its entry is malformed."""
    where = f"verbs.{name}"
    _check_keys(entry, _VERB_KEYS, ("description", "added", "params", "result", "errors"), where)
    if "." not in name:
        raise _fail(where, "a verb name is Namespace.verbName")
    codes = entry["errors"]
    if not isinstance(codes, list) or not all(isinstance(code, int) for code in codes):
        raise _fail(where, "errors is a list of VDSM error codes (integers)")
    result = entry["result"]
    _check_keys(result, _RESULT_KEYS, _RESULT_KEYS, f"{where}.result")
    schemas, required, defaults = _read_params(entry["params"], types, where)
    validators = {
        param: _compile(schema, registry, f"{where}.params.{param}")
        for param, schema in schemas.items()
    }
    verb = _Verb(
        name=name,
        doc=entry,
        names=tuple(schemas),
        required=tuple(required),
        nullable=frozenset(param for param, default in defaults if default is None),
        defaults=tuple(defaults),
        param_validators=validators,
        result_validator=_compile(
            _expand_type(result["type"], types, f"{where}.result"), registry, f"{where}.result"
        ),
    )
    _check_defaults(verb, where)
    return verb


def _read_params(
    params: Any, types: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], list[str], list[tuple[str, Any]]]:
    """
    Read a verb's ``params:`` list.

    :returns: ``({name: JSON Schema}, required names, [(name, default)])``, in schema order.
    """
    if not isinstance(params, list):
        raise _fail(where, "params is a list")
    schemas: dict[str, Any] = {}
    required: list[str] = []
    defaults: list[tuple[str, Any]] = []
    for index, param in enumerate(params):
        at = f"{where}.params[{index}]"
        _check_keys(param, _PARAM_KEYS, ("name", "description", "type"), at)
        name = param["name"]
        if not isinstance(name, str) or name in schemas:
            raise _fail(at, f"param name {name!r} is not a string or is listed twice")
        schemas[name] = _expand_type(param["type"], types, at)
        if "default" in param:
            defaults.append((name, param["default"]))
        else:
            required.append(name)
    return schemas, required, defaults


def _check_defaults(verb: _Verb, where: str) -> None:
    """:raises SchemaFileError: if a default other than null does not match its param's type."""
    for name, default in verb.defaults:
        problem = _first_violation(verb.param_validators[name], default, (name,))
        if default is not None and problem is not None:
            raise _fail(where, f"default does not match its type: {problem}")


def _compile_event(
    pattern: str, entry: Any, types: Mapping[str, Any], registry: Registry
) -> _Event:
    """:returns: one compiled event; :raises SchemaFileError: if its entry is malformed."""
    where = f"events.{pattern}"
    _check_keys(entry, _EVENT_KEYS, ("description", "added", "params"), where)
    if not pattern.startswith("|") or pattern.count("|") != 3:
        raise _fail(where, "an event id is |component|operation|<object id or *>")
    _check_keys(
        entry["params"],
        frozenset({"description", "type"}),
        ("description", "type"),
        f"{where}.params",
    )
    schema = _expand_type(entry["params"]["type"], types, f"{where}.params")
    validator = _compile(schema, registry, f"{where}.params")
    return _Event(pattern, entry, bool(entry.get("keyed_by_id", False)), validator)


def _format_path(path: Iterable[str | int]) -> str:
    """:returns: ``vmParams.drives[0].path``; keys that are not plain words are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _extra_property(error: ValidationError) -> str | None:
    """:returns: the first property an ``additionalProperties: false`` error is about."""
    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema, dict) else {}
    for key in error.instance:
        if key not in known and not any(re.search(p, key) for p in patterns):
            return key
    return None


def _required_choices(branches: Any) -> list[str] | None:
    """:returns: ``[a, b]`` for ``[{required: [a]}, {required: [b]}]``, else None."""
    if not isinstance(branches, list):
        return None
    choices = []
    for branch in branches:
        if not (isinstance(branch, dict) and branch.keys() == {"required"}):
            return None
        choices.extend(branch["required"])
    return choices


def _refine(error: ValidationError) -> tuple[list[str], str]:
    """
    Say some of jsonschema's messages more plainly.

    :returns: ``(path to append, message)``: the missing or unknown property and
        "missing required property" / "unknown property", "needs exactly one of a, b" for a
        ``oneOf`` of ``required`` branches, or ``([], error.message)``.
    """
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        if missing:
            return [missing[0]], "missing required property"
    elif error.validator == "additionalProperties" and isinstance(instance, dict):
        extra = _extra_property(error)
        if extra is not None:
            return [extra], "unknown property"
    elif error.validator == "not" and set(error.validator_value) == {"required"}:
        return [], f"give at most one of {', '.join(error.validator_value['required'])}"
    elif error.validator in ("oneOf", "anyOf"):
        choices = _required_choices(error.validator_value)
        if choices:
            exactly = "exactly " if error.validator == "oneOf" else ""
            return [], f"needs {exactly}one of {', '.join(choices)}"
    return [], error.message


def _explain(error: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """
    Explain one validation error, shortened for the wire.

    :param prefix: path of the validated value inside the whole (a param's name).
    :returns: ``path: violation``.
    """
    more, message = _refine(error)
    path = _format_path([*prefix, *error.absolute_path, *more])
    text = f"{path}: {message}" if path else message
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _first_violation(
    validator: Draft202012Validator, instance: Any, prefix: tuple[str, ...] = ()
) -> str | None:
    """:returns: the most relevant violation of ``instance``, explained, or None if valid."""
    if validator.is_valid(instance):
        return None
    error = best_match(validator.iter_errors(instance))
    return _explain(error, prefix) if error is not None else "invalid"


class Schema:
    """
    The agent's verbs and events, loaded from the schema files and compiled once.

    :param agent: the parsed ``agent.yml``.
    :param events: the parsed ``events.yml``, or None for no events.
    :param strict: raise on violations (the default); False is VDSM's advisory mode, which logs
        each violation and goes on.
    :raises SchemaFileError: if a document is malformed.
    """

    log = Logger()

    def __init__(
        self,
        agent: Mapping[str, Any],
        events: Mapping[str, Any] | None = None,
        *,
        strict: bool = True,
    ) -> None:
        events = events or {"format": FORMAT}
        for document, label in ((agent, "agent"), (events, "events")):
            if document.get("format") != FORMAT:
                raise SchemaFileError(f"{label} schema: format must be {FORMAT}")
        types = _merge_types(agent, events)
        registry = _build_registry(types)
        self._strict = strict
        self._verbs = {
            name: _compile_verb(name, entry, types, registry)
            for name, entry in (agent.get("verbs") or {}).items()
        }
        self._events = {
            pattern: _compile_event(pattern, entry, types, registry)
            for pattern, entry in (events.get("events") or {}).items()
        }
        self._event_regexes = [(re.compile(translate(p)), e) for p, e in self._events.items()]

    @classmethod
    def load(
        cls,
        agent_path: str | os.PathLike[str] | None = None,
        events_path: str | os.PathLike[str] | None = None,
        *,
        strict: bool = True,
    ) -> Schema:
        """
        Read and compile the schema files.

        :param agent_path: ``agent.yml``; default ``default_schema_dir() / "agent.yml"``.
        :param events_path: ``events.yml``; default the ``events.yml`` beside the agent file,
            if there is one.
        :param strict: see :class:`Schema`.
        :raises SchemaFileError: if a file is malformed; ``OSError`` if it cannot be read.
        """
        agent_file = Path(agent_path) if agent_path else default_schema_dir() / "agent.yml"
        events_file = Path(events_path) if events_path else agent_file.with_name("events.yml")
        if events_path is None and not events_file.exists():
            return cls(_read_yaml(agent_file), None, strict=strict)
        return cls(_read_yaml(agent_file), _read_yaml(events_file), strict=strict)

    @property
    def strict(self) -> bool:
        """True if violations raise, False in advisory mode."""
        return self._strict

    def verbs(self) -> frozenset[str]:
        """:returns: the wire names of all verbs (``Host.ping2``, ``VM.create``, ...)."""
        return frozenset(self._verbs)

    def event_names(self) -> frozenset[str]:
        """:returns: the event id patterns (``|virt|VM_status|*``, ...)."""
        return frozenset(self._events)

    def bind_params(self, verb: str, params: Any) -> dict[str, Any]:
        """
        Name, check and complete the params of one request.

        :param verb: the wire name of the verb.
        :param params: a dict (named), a list (positional, in schema order) or None.
        :returns: a new dict of keyword arguments for the handler, defaults filled in.
        :raises MethodNotFound: if the verb is unknown, in either mode.
        :raises InvalidParams: if the params are neither a dict, a list nor None, or there are
            more positional params than the verb takes (in either mode); in strict mode also for
            an unknown, missing or mistyped param, with its path in the message.
        """
        compiled = self._verb(verb)
        named = self._name(compiled, params)
        problem = self._params_problem(compiled, named)
        if problem is not None:
            self._report(InvalidParams(problem), verb)
        return self._with_defaults(compiled, named)

    def check_result(self, verb: str, result: Any) -> None:
        """
        Check a handler's result against the verb's ``result:``.

        :raises MethodNotFound: if the verb is unknown.
        :raises SchemaViolation: in strict mode, if the result does not match.
        """
        problem = _first_violation(self._verb(verb).result_validator, result)
        if problem is not None:
            self._report(SchemaViolation(f"{verb} result: {problem}"), verb)

    def check_event(self, event_id: str, params: Any) -> None:
        """
        Check an event's params against the event whose pattern matches its id.

        :param event_id: the concrete id, e.g. ``|virt|VM_status|<vmId>``.
        :raises SchemaViolation: in strict mode, if no event matches the id, if the params do
            not match, or if a ``keyed_by_id`` event's params lack the id's object id as a key.
        """
        event = self._match_event(event_id)
        problem: str | None = "unknown event"
        if event is not None:
            problem = _first_violation(event.validator, params)
            problem = problem or self._key_problem(event, event_id, params)
        if problem is not None:
            self._report(SchemaViolation(f"{event_id}: {problem}"), event_id)

    def describe(self, verb: str) -> dict[str, Any]:
        """
        Describe one verb for documentation and help.

        :returns: ``{name, description, added, params: [{name, description, type, required,
            default?}], result: {description, type}, errors}``, types as written in the file.
        :raises MethodNotFound: if the verb is unknown.
        """
        doc = self._verb(verb).doc
        params = [
            {**copy.deepcopy(param), "required": "default" not in param} for param in doc["params"]
        ]
        return {
            "name": verb,
            "description": doc["description"],
            "added": doc["added"],
            "params": params,
            "result": copy.deepcopy(doc["result"]),
            "errors": list(doc["errors"]),
        }

    def _verb(self, verb: str) -> _Verb:
        """:returns: the compiled verb; :raises MethodNotFound: if there is none."""
        try:
            return self._verbs[verb]
        except (KeyError, TypeError):
            raise MethodNotFound(str(verb)) from None

    @staticmethod
    def _name(compiled: _Verb, params: Any) -> dict[str, Any]:
        """:returns: the params as a new dict; :raises InvalidParams: if they cannot be named."""
        if params is None:
            return {}
        if isinstance(params, dict):
            return dict(params)
        if isinstance(params, list | tuple):
            if len(params) > len(compiled.names):
                raise InvalidParams(
                    f"{compiled.name} takes at most {len(compiled.names)} params, got {len(params)}"
                )
            return dict(zip(compiled.names, params, strict=False))
        raise InvalidParams(f"params must be an object or an array, not {type(params).__name__}")

    @staticmethod
    def _params_problem(compiled: _Verb, named: dict[str, Any]) -> str | None:
        """
        Find the first unknown, missing or mistyped param.

        A null value of a param whose default is null counts as "not given".

        :returns: the problem, explained, or None.
        """
        validators = compiled.param_validators
        for name in named:
            if name not in validators:
                takes = ", ".join(compiled.names) or "no params"
                return f"{name}: unknown param; {compiled.name} takes {takes}"
        for name in compiled.required:
            if name not in named:
                return f"{name}: missing required param"
        for name, value in named.items():
            if value is None and name in compiled.nullable:
                continue
            problem = _first_violation(validators[name], value, (name,))
            if problem is not None:
                return problem
        return None

    @staticmethod
    def _with_defaults(compiled: _Verb, named: dict[str, Any]) -> dict[str, Any]:
        """:returns: ``named`` with each absent optional param set to its default."""
        for name, default in compiled.defaults:
            if name not in named:
                named[name] = (
                    copy.deepcopy(default) if isinstance(default, list | dict) else default
                )
        return named

    def _match_event(self, event_id: str) -> _Event | None:
        """:returns: the event whose pattern matches ``event_id``, or None."""
        if not isinstance(event_id, str):
            return None
        event = self._events.get(event_id.rpartition("|")[0] + "|*")
        if event is not None:
            return event
        for regex, candidate in self._event_regexes:
            if regex.fullmatch(event_id):
                return candidate
        return None

    @staticmethod
    def _key_problem(event: _Event, event_id: str, params: Any) -> str | None:
        """:returns: a problem if a ``keyed_by_id`` event's params lack the id's object id."""
        object_id = event_id.rpartition("|")[2]
        if event.keyed_by_id and object_id not in params:
            return f"params have no key {object_id!r}, the object id of the event id"
        return None

    def _report(self, error: Exception, subject: str) -> None:
        """Raise ``error`` in strict mode; log it in advisory mode."""
        if self._strict:
            raise error
        self.log.warn(
            "schema inconsistency (advisory mode) in {subject}: {problem}",
            subject=subject,
            problem=str(error),
        )
