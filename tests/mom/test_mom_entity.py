"""The Entity a policy sees (mom.md 1.6): fields as attributes, Prop/Stat/StatAvg, controls."""

from __future__ import annotations

import copy
import pickle

import pytest

from mom.entity import Entity, EntityError
from mom.evaluator import evaluate

ROWS = [
    {"mem_free": 100, "swap": None},
    {"mem_free": 200, "swap": 5},
    {"mem_free": 600, "swap": None},
]


def guest(**kwargs) -> Entity:
    """:returns: a guest named vm1 with ``ROWS`` and the fields mem_free, swap, balloon_cur."""
    return Entity(
        kwargs.get("properties", {"uuid": "u-1", "name": "vm1"}),
        kwargs.get("statistics", ROWS),
        kwargs.get("fields", ["mem_free", "swap", "balloon_cur"]),
    )


def test_declared_fields_read_the_latest_row():
    """A declared field reads as an attribute holding its value in the newest row."""
    assert guest().mem_free == 600


def test_declared_field_missing_from_the_row_is_none():
    """A declared field the latest row lacks (an optional field not collected) is None."""
    entity = guest()
    assert entity.balloon_cur is None
    assert entity.swap is None


def test_undeclared_name_is_no_attribute():
    """A name that is not a declared field is no attribute, even if a row holds it."""
    entity = Entity({}, [{"extra": 1}], fields=["mem_free"])
    assert not hasattr(entity, "extra")
    with pytest.raises(AttributeError):
        entity.nothing  # noqa: B018


def test_no_rows_means_no_field_attributes():
    """Without any statistics row, fields are not attributes at all (as in MOM)."""
    assert not hasattr(Entity({}, [], ["mem_free"]), "mem_free")


def test_fields_default_to_every_name_in_the_rows():
    """Without ``fields``, every name in any row is declared."""
    entity = Entity({}, [{"a": 1}, {"b": 2}])
    assert entity.fields == {"a", "b"}
    assert (entity.a, entity.b) == (None, 2)


def test_methods_win_over_fields_of_the_same_name():
    """A field named like a method does not hide the method."""
    entity = Entity({}, [{"Prop": 1}])
    assert callable(entity.Prop)


def test_constructor_copies_its_inputs():
    """The Entity copies properties and rows, so later changes to them do not leak in."""
    rows = [{"a": 1}]
    properties = {"name": "x"}
    entity = Entity(properties, rows)
    rows[0]["a"] = 2
    properties["name"] = "y"
    assert (entity.a, entity.Prop("name")) == (1, "x")


def test_prop():
    """``Prop`` returns a property; a missing one is an EntityError."""
    entity = guest()
    assert entity.Prop("name") == "vm1"
    with pytest.raises(EntityError, match="Property 'pid' is not set"):
        entity.Prop("pid")


def test_stat_returns_the_latest_value_or_default():
    """``Stat`` returns the newest value; ``default`` when that row lacks the field."""
    entity = guest()
    assert entity.Stat("mem_free") == 600
    assert entity.Stat("balloon_cur") is None
    assert entity.Stat("balloon_cur", 7) == 7
    assert entity.Stat("swap", 7) is None  # present but None: no default


def test_stat_of_undeclared_field_fails():
    """``Stat`` of a field no collector declares raises EntityError."""
    with pytest.raises(EntityError, match="Field 'nope' is not declared in any collector."):
        guest().Stat("nope")


def test_stat_without_rows_is_none():
    """``Stat`` with no rows at all is None."""
    assert Entity({}, [], ["a"]).Stat("a") is None


def test_stat_avg_is_the_float_mean_of_non_none_values():
    """``StatAvg`` averages over the rows where the field is not None, as a float."""
    entity = guest()
    assert entity.StatAvg("mem_free") == 300.0
    assert entity.StatAvg("swap") == 5.0
    assert isinstance(entity.StatAvg("mem_free"), float)


def test_stat_avg_without_any_value_is_zero():
    """``StatAvg`` of a field that is None or absent in every row is 0.0."""
    assert guest().StatAvg("balloon_cur") == 0.0


def test_stat_avg_failures():
    """``StatAvg`` of an undeclared field, or with no rows, raises EntityError."""
    with pytest.raises(EntityError, match="not declared"):
        guest().StatAvg("nope")
    with pytest.raises(EntityError, match="Statistic 'a' not available"):
        Entity({}, [], ["a"]).StatAvg("a")


def test_control_and_get_control():
    """``Control`` sets a control for the controllers; ``GetControl`` reads it or None."""
    entity = guest()
    assert entity.GetControl("balloon_target") is None
    assert entity.Control("balloon_target", 1024) is None
    assert entity.GetControl("balloon_target") == 1024
    assert entity.controls == {"balloon_target": 1024}


def test_set_var_and_get_var():
    """``SetVar``/``GetVar`` keep per-entity values; an unset one is None."""
    entity = guest()
    assert entity.GetVar("x") is None
    entity.SetVar("x", 3)
    assert entity.GetVar("x") == 3


def test_latest_is_a_copy_of_the_newest_row():
    """``latest`` copies the newest row, or is empty without rows."""
    entity = guest()
    assert entity.latest() == ROWS[-1]
    entity.latest()["mem_free"] = 0
    assert entity.mem_free == 600
    assert Entity().latest() == {}


def test_entity_can_be_copied_and_pickled():
    """Copy and pickle work despite the dynamic attributes."""
    entity = guest()
    assert copy.deepcopy(entity).mem_free == 600
    assert pickle.loads(pickle.dumps(entity)).StatAvg("mem_free") == 300.0


def test_repr_names_the_entity():
    """The repr shows the guest's name (or "host")."""
    assert repr(guest()) == "<Entity vm1>"
    assert repr(Entity()) == "<Entity host>"


def test_policy_uses_every_entity_method():
    """A policy reads fields and calls each Entity method through dotted names."""
    entity = guest()
    text = """
        (guest.Control "balloon_target" (+ guest.mem_free (guest.StatAvg "mem_free")))
        (guest.SetVar "seen" (guest.Prop "name"))
        (list (guest.GetControl "balloon_target") (guest.GetVar "seen") (guest.Stat "swap" 1))
    """
    results = evaluate(text, {"guest": entity, "list": lambda *a: list(a)})
    assert results[-1] == [900.0, "vm1", None]
    assert entity.controls == {"balloon_target": 900.0}
