"""Our default MOM policy set (mom/policies/) evaluated on recorded host and guest data: the
controls it sets, case by case (golden), including runtime parameter changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mom.collectors.guest import GUEST_FIELDS, GUEST_OPTIONAL
from mom.collectors.host import KSM_FILES, HostCpu, HostMemory
from mom.entity import Entity
from mom.policy import PolicyStore, parameters_policy
from mom.service import DEFAULT_POLICY_DIR, PARAMETERS_POLICY

DATA = json.loads((Path(__file__).parent / "data" / "default-policy-cases.json").read_text())
HOST_FIELDS = (
    HostMemory.fields
    | HostCpu.fields
    | {f"ksm_{n}" for n in KSM_FILES}
    | {"ksm_shareable", "ksmd_cpu_usage"}
)


def entity(recorded: dict, fields) -> Entity:
    return Entity(recorded["properties"], recorded["stats"], fields)


def default_store() -> PolicyStore:
    store = PolicyStore()
    loaded = store.load_dir(DEFAULT_POLICY_DIR)
    assert all(loaded.values()), loaded
    return store


def test_the_default_set_loads_in_name_order():
    """Every shipped policy parses, and they run in name order (defines first)."""
    store = default_store()
    assert list(store.named()) == sorted(store.named())
    assert list(store.named())[:2] == ["00-defines", PARAMETERS_POLICY]


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["name"] for c in DATA["cases"]])
def test_default_policy_controls(case):
    """The default set, given recorded data and parameters, sets exactly the expected controls."""
    store = default_store()
    assert store.set_policy(PARAMETERS_POLICY, parameters_policy(case["parameters"]) or "0")
    host = entity(DATA[case["host"]], HOST_FIELDS)
    guests = {n: entity(DATA["guests"][n], GUEST_FIELDS | GUEST_OPTIONAL) for n in case["guests"]}
    assert store.evaluate(host, list(guests.values()))
    expect = case["expect"]
    assert host.controls == pytest.approx(expect["host"])
    for name, guest in guests.items():
        assert guest.controls == pytest.approx(expect.get(name, {})), name


def test_parameters_change_the_next_evaluation():
    """Setting balloonEnabled at runtime turns ballooning on for the next cycle, and back off."""
    store = default_store()
    host = entity(DATA["host_short"], HOST_FIELDS)

    def target():
        guest = entity(DATA["guests"]["idle"], GUEST_FIELDS | GUEST_OPTIONAL)
        assert store.evaluate(host, [guest])
        return guest.controls.get("balloon_target")

    assert target() is None
    store.set_policy(PARAMETERS_POLICY, parameters_policy({"balloonEnabled": True}))
    assert target() == pytest.approx(900000.0)
    store.set_policy(PARAMETERS_POLICY, parameters_policy({"balloonEnabled": False}))
    assert target() is None


def test_a_parameter_that_is_not_defined_fails_the_evaluation():
    """As in VDSM, setting an undefined name makes every evaluation fail (controllers skip)."""
    store = default_store()
    assert store.set_policy(PARAMETERS_POLICY, parameters_policy({"noSuchKnob": 1}))
    host = entity(DATA["host_relaxed"], HOST_FIELDS)
    assert not store.evaluate(host, [])


def test_parameters_text_is_vdsm_repr_and_refuses_what_a_policy_cannot_read():
    """Parameters become (set name repr) lines; bad names and values are refused."""
    text = parameters_policy({"b": True, "a": 5, "c": "test", "d": 0.5})
    assert text == "(set a 5)\n(set b True)\n(set c 'test')\n(set d 0.5)"
    for bad in ({"a b": 1}, {"x": [1]}, {"x": "it's"}, {"x": float("nan")}):
        with pytest.raises(ValueError):
            parameters_policy(bad)
