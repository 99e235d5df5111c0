"""Every schema verb has a handler and every handler a schema entry."""

from vdsmlike.api.host import HostApi
from vdsmlike.api.migration import MigrationApi
from vdsmlike.api.mom import MomApi
from vdsmlike.api.schema import Schema
from vdsmlike.api.verbs import collect
from vdsmlike.api.vm import VmApi

CONNECTION_VERBS = {"Host.subscribe", "Host.unsubscribe"}  # served by the RPC layer per connection


def implemented_verbs() -> set[str]:
    return (
        set(collect(HostApi(None, None, None), VmApi(None, None), MomApi(None), MigrationApi(None)))
        | CONNECTION_VERBS
    )


def test_every_schema_verb_is_implemented():
    """No verb in schema/agent.yml lacks an implementation."""
    missing = set(Schema.load().verbs()) - implemented_verbs()
    assert not missing, f"schema verbs without a handler: {sorted(missing)}"


def test_every_implemented_verb_is_in_the_schema():
    """No handler serves a verb that schema/agent.yml does not describe."""
    undocumented = implemented_verbs() - set(Schema.load().verbs())
    assert not undocumented, f"handlers without a schema: {sorted(undocumented)}"


def test_handler_parameters_match_schema_parameters():
    """Each handler accepts exactly the params its schema entry declares."""
    import inspect

    schema = Schema.load()
    handlers = collect(
        HostApi(None, None, None), VmApi(None, None), MomApi(None), MigrationApi(None)
    )
    for name, handler in handlers.items():
        declared = [p["name"] for p in schema.describe(name)["params"]]
        accepted = list(inspect.signature(handler).parameters)
        assert sorted(declared) == sorted(accepted), name
