"""Tests for engine.decide.affinity and its scheduler plugins: groups, checks, filters, weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decide.affinity import (
    AffinityError,
    AffinityGroup,
    Polarity,
    check_groups,
    violations,
    with_affinity,
)
from engine.decide.model import HOST_UP, HostView, VmRequest
from engine.decide.policies import make_policy
from engine.decide.scheduler import PendingResources, place_all, schedule

NONE = make_policy("none")
PLACEMENT = {"w1": "a", "w2": "b", "d1": "a", "d2": "a", "x1": "c"}
NAMES = {"w1": "web-1", "w2": "web-2", "w3": "web-3", "a": "host-a", "b": "host-b", "c": "host-c"}


def make_host(id: str, **changes: Any) -> HostView:
    """:returns: an idle Up host ``host-<id>`` with 4 CPUs and 8 GiB, changed by ``changes``."""
    return dataclasses.replace(HostView(id, f"host-{id}", HOST_UP, 4, 8192, 8192), **changes)


HOSTS = [make_host("a"), make_host("b"), make_host("c")]


def request(vm_id: str, groups: list[AffinityGroup], placement=PLACEMENT, **kw) -> VmRequest:
    """:returns: a 1 GiB request for ``vm_id`` with its affinity among ``groups``."""
    vm = VmRequest(vm_id, NAMES.get(vm_id, vm_id), 1024, 1)
    return with_affinity(vm, groups, placement, NAMES, **kw)


# -- groups ---------------------------------------------------------------------------------


def test_group_normalises_polarities_and_members() -> None:
    """Polarities may be strings and members any iterable; both are normalised."""
    g = AffinityGroup("web", ["w1", "w2"], "negative", {"a"}, "NEGATIVE", hard=True)
    assert g.vm_polarity is Polarity.NEGATIVE and g.host_polarity is Polarity.NEGATIVE
    assert g.vms == frozenset({"w1", "w2"}) and g.hosts == frozenset({"a"})
    assert g.host_rule_hard and g.has_vm_rule and g.has_host_rule


def test_group_without_host_rule_and_separate_host_enforcement() -> None:
    """Host polarity ``none`` drops the host rule; ``hosts_hard`` overrides ``hard``."""
    g = AffinityGroup("web", {"w1"}, "positive", {"a"}, "none", hard=True)
    assert not g.has_host_rule
    soft_hosts = AffinityGroup("db", {"d1"}, hosts={"a"}, hard=True, hosts_hard=False)
    assert soft_hosts.hard and not soft_hosts.host_rule_hard


@pytest.mark.parametrize("kwargs", [{"name": ""}, {"name": "g", "vm_polarity": "sideways"}])
def test_bad_groups_are_refused(kwargs: dict[str, Any]) -> None:
    """A group needs a name and a known polarity."""
    with pytest.raises(AffinityError):
        AffinityGroup(**kwargs)


def test_with_affinity_carries_groups_and_running_peers() -> None:
    """A request gets its own groups and where the running members are; others are ignored."""
    web = AffinityGroup("web", {"w1", "w2", "w3"}, "negative", hard=True)
    other = AffinityGroup("db", {"d1", "d2"}, "positive")
    req = request("w1", [other, web])
    assert req.affinity_groups == (web,)
    assert [(p.vm_id, p.vm_name, p.host_id, p.host_name) for p in req.affinity_peers] == [
        ("w2", "web-2", "b", "host-b")
    ]


def test_with_affinity_leaves_out_members_on_leaving_hosts() -> None:
    """Members on a host being evacuated do not count: they are leaving too."""
    web = AffinityGroup("web", {"w1", "w2"}, "positive", hard=True)
    assert request("w1", [web], leaving={"b"}).affinity_peers == ()


# -- filters in the scheduler ---------------------------------------------------------------


def test_hard_apart_refuses_the_hosts_of_other_members() -> None:
    """A hard apart group refuses the host where another member runs, naming group and member."""
    web = AffinityGroup("web", {"w1", "w2", "w3"}, "negative", hard=True)
    decision = schedule(request("w3", [web]), HOSTS, NONE)
    assert decision.host == "c"
    assert decision.explanations["b"] == [
        "refused by vm_affinity: group 'web' (hard, apart) has web-2 on this host"
    ]
    assert decision.explanations["a"][0].startswith("refused by vm_affinity: group 'web'")


def test_hard_together_refuses_every_other_host() -> None:
    """A hard together group allows only the host holding the members."""
    db = AffinityGroup("db", {"d1", "d2", "d3"}, "positive", hard=True)
    decision = schedule(request("d3", [db]), HOSTS, NONE)
    assert decision.host == "a"
    assert decision.explanations["b"] == [
        "refused by vm_affinity: group 'db' (hard, together) has d1, d2 on host-a, not here"
    ]


def test_hard_host_rules_allow_and_forbid_hosts() -> None:
    """A hard 'only on' rule refuses hosts outside the set; 'never on' refuses those inside."""
    only = AffinityGroup("rack1", {"x2"}, hosts={"b"}, hard=True)
    decision = schedule(request("x2", [only]), HOSTS, NONE)
    assert decision.host == "b"
    assert decision.explanations["a"] == [
        "refused by host_affinity: group 'rack1' (hard, only on its hosts): "
        "this host is not one of them"
    ]
    never = AffinityGroup("norack1", {"x2"}, hosts={"a", "b"}, host_polarity="negative", hard=True)
    assert schedule(request("x2", [never]), HOSTS, NONE).host == "c"


def test_a_vm_without_groups_is_explained_as_before() -> None:
    """The affinity filters and weights skip VMs outside groups: same text, same scores."""
    decision = schedule(VmRequest("v", "plain", 512, 1), HOSTS[:2], NONE)
    assert decision.explanations["a"][0] == (
        "passed filters: status, excluded, pinning, cpu, memory, cpu_overloaded"
    )
    assert decision.scores == {"a": 3, "b": 3}


def test_soft_rules_never_refuse_but_weigh() -> None:
    """Soft groups refuse nothing; the soft apart weight steers the VM off the member's host."""
    web = AffinityGroup("web", {"w1", "w2", "w3"}, "negative")
    hosts = [make_host("a"), make_host("b"), make_host("c", cpu_load_percent=30)]
    decision = schedule(request("w3", [web]), hosts, NONE)
    assert set(decision.scores) == {"a", "b", "c"}
    assert decision.host == "c"
    assert any("vm_affinity ×10: group 'web' (soft, apart): web-1 here" in e for e in
               decision.explanations["a"])  # fmt: skip


def test_soft_together_pulls_to_the_members_host() -> None:
    """With equal hosts, a soft together group picks the members' host."""
    db = AffinityGroup("db", {"d1", "d2", "d3"}, "positive")
    assert schedule(request("d3", [db]), HOSTS, NONE).host == "a"


def test_soft_host_rule_prefers_its_hosts() -> None:
    """A soft 'only on' rule makes its host win over equal others."""
    pref = AffinityGroup("pref", {"x2"}, hosts={"c"})
    decision = schedule(request("x2", [pref]), HOSTS, NONE)
    assert decision.host == "c"
    assert any("host_affinity ×20: breaks group 'pref'" in e for e in decision.explanations["a"])


def test_place_all_keeps_apart_members_apart_through_the_ledger() -> None:
    """VMs of a hard apart group started together land on different hosts: the ledger's
    reservations count as members' positions."""
    web = AffinityGroup("web", {"n1", "n2", "n3"}, "negative", hard=True)
    vms = [request(f"n{i}", [web], placement={}) for i in (1, 2, 3)]
    decisions = place_all(vms, HOSTS, NONE, PendingResources())
    assert sorted(d.host for d in decisions) == ["a", "b", "c"]


def test_place_all_gathers_a_together_group_through_the_ledger() -> None:
    """VMs of a hard together group started together all go where the first one went."""
    db = AffinityGroup("db", {"n1", "n2", "n3"}, "positive", hard=True)
    hosts = [
        make_host("a", cpu_load_percent=50),
        make_host("b"),
        make_host("c", cpu_load_percent=9),
    ]
    vms = [request(f"n{i}", [db], placement={}) for i in (1, 2, 3)]
    decisions = place_all(vms, hosts, NONE, PendingResources())
    assert {d.host for d in decisions} == {"b"}


def test_conflicting_groups_refuse_every_host_without_looping() -> None:
    """Groups that contradict each other make the VM unplaceable, with every reason given."""
    together = AffinityGroup("t", {"w2", "w3"}, "positive", hard=True)
    apart = AffinityGroup("s", {"w2", "w3"}, "negative", hard=True)
    placement = {"w2": "b"}
    assert check_groups([together, apart]) != []
    decision = schedule(request("w3", [together, apart], placement=placement), HOSTS, NONE)
    assert decision.host is None
    assert all(e[0].startswith("refused by vm_affinity") for e in decision.explanations.values())


# -- checking definitions -------------------------------------------------------------------


def test_consistent_groups_pass_the_check() -> None:
    """Groups without contradictions give no problems."""
    groups = [
        AffinityGroup("t", {"a1", "a2"}, "positive", hard=True),
        AffinityGroup("s", {"a1", "b1"}, "negative", hard=True),
        AffinityGroup("h", {"a1"}, hosts={"h1", "h2"}, hard=True),
    ]
    assert check_groups(groups, hosts=["h1", "h2", "h3"]) == []


def test_together_and_apart_conflict_even_through_a_chain() -> None:
    """a with b and b with c (hard) make a and c together; a hard apart group on them conflicts."""
    groups = [
        AffinityGroup("ab", {"a", "b"}, "positive", hard=True),
        AffinityGroup("bc", {"b", "c"}, "positive", hard=True),
        AffinityGroup("apart", {"a", "c"}, "negative", hard=True),
    ]
    assert check_groups(groups, {"a": "vm-a", "c": "vm-c"}) == [
        "vm-a and vm-c must run together (hard: 'ab', 'bc') and apart (hard: 'apart')"
    ]


def test_soft_contradictions_are_allowed() -> None:
    """Soft rules may pull both ways; that is not an error."""
    groups = [
        AffinityGroup("t", {"a", "b"}, "positive"),
        AffinityGroup("s", {"a", "b"}, "negative"),
    ]
    assert check_groups(groups) == []


def test_host_rules_that_leave_no_host_conflict() -> None:
    """Disjoint hard 'only on' sets for one chain leave it no host."""
    groups = [
        AffinityGroup("t", {"a", "b"}, "positive", hard=True),
        AffinityGroup("r1", {"a"}, hosts={"h1"}, hard=True),
        AffinityGroup("r2", {"b"}, hosts={"h2"}, hard=True),
    ]
    problems = check_groups(groups)
    assert len(problems) == 1 and "leave no host for a, b" in problems[0]


def test_never_on_every_host_conflicts_when_hosts_are_known() -> None:
    """A hard 'never on' rule covering every host of the cluster leaves none."""
    groups = [AffinityGroup("n", {"a"}, hosts={"h1", "h2"}, host_polarity="negative", hard=True)]
    assert check_groups(groups) == []
    assert check_groups(groups, hosts=["h1", "h2"]) == [
        "hard host rules of 'n' leave no host for a"
    ]


def test_apart_with_more_members_than_hosts_and_duplicate_names() -> None:
    """Three VMs apart on two hosts cannot work; two groups may not share a name."""
    groups = [
        AffinityGroup("s", {"a", "b", "c"}, "negative", hard=True),
        AffinityGroup("s", {"d"}, "positive"),
    ]
    assert check_groups(groups, hosts=["h1", "h2"]) == [
        "two groups are named 's'",
        "group 's' keeps 3 VMs apart but only 2 hosts may run them",
    ]


# -- violations -----------------------------------------------------------------------------


def test_violations_of_each_kind_hard_first() -> None:
    """A split together group, a crowded apart group and host rules broken, hard ones first."""
    groups = [
        AffinityGroup("soft-apart", {"d1", "d2"}, "negative", priority=5),
        AffinityGroup("web", {"w1", "w2", "w3"}, "positive", hard=True),
        AffinityGroup("pin", {"x1"}, hosts={"a", "b"}, hard=True),
    ]
    placement = {"w1": "a", "w2": "b", "w3": "b", "d1": "a", "d2": "a", "x1": "c"}
    found = violations(groups, placement, NAMES)
    assert [(v.group.name, v.rule, v.vms, v.hosts, v.hard) for v in found] == [
        ("pin", "host", ("x1",), ("c",), True),
        ("web", "vm", ("w1",), ("b", "a"), True),
        ("soft-apart", "vm", ("d2",), ("a",), False),
    ]
    assert found[1].reason == (
        "group 'web' (hard, together) is split over host-b (web-2, web-3), host-a (web-1)"
    )
    assert found[0].reason == "group 'pin' (hard, only on its hosts): x1 on host-c"
    assert found[2].reason == "group 'soft-apart' (soft, apart) has d1, d2 on host-a"


def test_no_violations_when_rules_hold_and_stopped_members_do_not_count() -> None:
    """Members that do not run are ignored; kept rules give nothing."""
    groups = [
        AffinityGroup("web", {"w1", "w2", "w9"}, "negative", hard=True),
        AffinityGroup("never", {"w1"}, hosts={"b"}, host_polarity="negative"),
    ]
    assert violations(groups, PLACEMENT) == []


def test_together_ties_gather_on_the_least_loaded_host() -> None:
    """When members are split evenly, the least loaded of their hosts is the one to gather on."""
    db = AffinityGroup("db", {"p", "q"}, "positive", hard=True)
    found = violations([db], {"p": "a", "q": "b"}, load={"a": 70.0, "b": 10.0})
    assert found[0].hosts == ("b", "a") and found[0].vms == ("p",)


@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_the_scheduler_never_breaks_a_hard_rule(data: st.DataObject) -> None:
    """Whatever the groups and where their members run, a chosen host keeps every hard rule of
    the VM: no member of an apart group there, the most members of a together group there, and
    the host rules kept."""
    host_ids = ["a", "b", "c", "d"]
    others = [f"m{i}" for i in range(6)]
    placement = {m: data.draw(st.sampled_from(host_ids)) for m in others}
    groups = [
        AffinityGroup(
            f"g{i}",
            {"new", *data.draw(st.sets(st.sampled_from(others), min_size=1, max_size=3))},
            data.draw(st.sampled_from(["positive", "negative", "none"])),
            data.draw(st.sets(st.sampled_from(host_ids), max_size=3)),
            data.draw(st.sampled_from(["positive", "negative"])),
            hard=data.draw(st.booleans()),
        )
        for i in range(data.draw(st.integers(1, 3)))
    ]
    hosts = [make_host(h) for h in host_ids]
    decision = schedule(request("new", groups, placement=placement), hosts, NONE)
    if decision.host is None:
        return
    chosen = decision.host
    for g in groups:
        members = [placement[m] for m in g.vms if m in placement]
        if g.hard and g.vm_polarity is Polarity.NEGATIVE:
            assert chosen not in members
        if g.hard and g.vm_polarity is Polarity.POSITIVE and members:
            assert members.count(chosen) == max(members.count(h) for h in members)
        if g.host_rule_hard and g.hosts:
            assert (chosen in g.hosts) == (g.host_polarity is Polarity.POSITIVE)
