"""``schema/engine.yml`` against the code: every verb has a handler taking exactly its params,
every error code exists on both sides, and the API's guide mentions them all."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from api_harness import FakeEngine
from twisted.internet.task import Clock

from engine.api import errors
from engine.api.schema import default_path, load
from engine.api.verbs import shared_handlers
from engine.api.websocket import EngineServerProtocol
from vdsmlike.api.schema import Schema

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "engine-api.md"


def handlers():
    """Every verb's handler: the shared ones and the connection's."""
    shared = shared_handlers(FakeEngine(Clock()), None, Clock(), "0.1")
    protocol = EngineServerProtocol()
    own = {name: getattr(protocol, method)
           for name, method in EngineServerProtocol.CONNECTION_VERBS.items()}
    assert not shared.keys() & own.keys()
    return {**shared, **own}


def test_schema_loads_with_the_agent_compiler():
    """engine.yml compiles with vdsmlike's schema compiler and the agent's schema still does."""
    schema = load()
    assert "Hosts.list" in schema.schema.verbs() and schema.version == "0.1"
    assert "|engine|vm|*" in schema.schema.event_names()
    assert "Host.getStats" in Schema.load().verbs()
    assert default_path().name == "engine.yml"


def test_every_verb_is_implemented_and_every_handler_described():
    """The schema's verbs and the handlers are the same set."""
    assert set(load().schema.verbs()) == set(handlers())


def test_handlers_take_exactly_the_schema_params():
    """Each handler's keyword parameters are its verb's params."""
    schema = load().schema
    for name, handler in handlers().items():
        declared = [p["name"] for p in schema.describe(name)["params"]]
        accepted = list(inspect.signature(handler).parameters)
        assert sorted(declared) == sorted(accepted), name


def test_error_codes_agree():
    """The schema's errors section lists exactly the API's error classes, names and messages."""
    documented = load().errors
    assert set(documented) == set(errors.ERRORS)
    for code, cls in errors.ERRORS.items():
        assert documented[code].name == cls.__name__, code
        assert documented[code].message == cls.message, code


def test_verbs_list_known_codes():
    """Every code a verb lists is documented; guarded verbs list 401, open ones do not."""
    engine = load()
    for name in engine.schema.verbs():
        codes = engine.schema.describe(name)["errors"]
        assert set(codes) <= set(engine.errors), name
        assert (401 in codes) == (name not in {"Auth.login", "Engine.ping"}), name


def test_guide_mentions_everything():
    """docs/engine-api.md has a row per verb with its params, every error code and every
    notification."""
    text = GUIDE.read_text()
    engine = load()
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines()
            if line.startswith("| `")}
    for name in engine.schema.verbs():
        assert name in rows, name
        for param in engine.schema.describe(name)["params"]:
            assert f"`{param['name']}`" in rows[name], (name, param["name"])
    for code in engine.errors:
        assert re.search(rf"(?<![\w-]){re.escape(str(code))}(?!\d)", text), code
    for pattern in engine.schema.event_names():
        assert pattern.rpartition("|")[0] in text, pattern
