"""Property tests (hypothesis): the chosen host passes every filter; the ledger never overbooks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.decide.model import (
    HOST_UP,
    HostView,
    VmRequest,
    memory_capacity_mib,
    with_pending,
)
from engine.decide.plugins import units_for
from engine.decide.policies import BUILTIN_POLICIES, Policy, make_policy
from engine.decide.scheduler import PendingResources, place, schedule

STATUSES = [HOST_UP, HOST_UP, HOST_UP, "Maintenance", "NonResponsive"]


@st.composite
def host_lists(draw: st.DrawFn, *, overbooked: bool = True) -> list[HostView]:
    """Up to 12 hosts with unique ids; unless ``overbooked``, none promises beyond capacity."""
    count = draw(st.integers(0, 12))
    hosts = []
    for i in range(count):
        total = draw(st.integers(512, 16384))
        limit = total * 2 if overbooked else total // 2
        hosts.append(
            HostView(
                id=f"h{i}",
                name=draw(st.sampled_from(["alpha", "beta", "gamma", f"host{i}"])),
                status=draw(st.sampled_from(STATUSES)),
                cpus=draw(st.integers(1, 16)),
                memory_total_mib=total,
                memory_free_mib=draw(st.integers(0, total)),
                memory_committed_mib=draw(st.integers(0, limit)),
                memory_reserved_mib=draw(st.integers(0, total // 4)),
                pending_memory_mib=draw(st.integers(0, total // 4)),
                pending_vcpus=draw(st.integers(0, 8)),
                pending_vms=draw(st.integers(0, 3)),
                cpu_load_percent=draw(st.floats(0, 100, allow_nan=False)),
                vm_count=draw(st.integers(0, 30)),
                vcpus_committed=draw(st.integers(0, 64)),
                cpu_over_commit_seconds=draw(st.sampled_from([0.0, 60.0, 120.0, 900.0])),
            )
        )
    return hosts


def vms(n: int, host_ids: list[str]) -> st.SearchStrategy[VmRequest]:
    """VM ``n``: any size, maybe pinned, migrating or avoiding hosts among ``host_ids``."""
    some_host = st.sampled_from([*host_ids, "elsewhere"]) if host_ids else st.just("elsewhere")
    return st.builds(
        VmRequest,
        id=st.just(f"v{n}"),
        name=st.just(f"vm{n}"),
        memory_mib=st.integers(1, 8192),
        vcpus=st.integers(1, 16),
        pinned_host=st.one_of(st.none(), st.none(), some_host),
        ha_priority=st.integers(0, 100),
        current_host=st.one_of(st.none(), some_host),
        avoid_hosts=st.frozensets(some_host, max_size=2),
    )


policies = st.builds(
    make_policy,
    st.sampled_from(sorted(BUILTIN_POLICIES)),
    memory_over_commit_percent=st.sampled_from([50, 100, 150, 200]),
)


def effective(host: HostView, ledger: PendingResources, vm: VmRequest) -> HostView:
    """:returns: ``host`` with the ledger's reservations, minus the VM's own, added."""
    extra = ledger.for_host(host.id)
    own = ledger.reservation(vm.id)
    if own is not None and own.host_id == host.id:
        extra = extra - own.amount
    return with_pending(host, extra)


@settings(deadline=None)
@given(data=st.data(), hosts=host_lists(), policy=policies)
def test_the_chosen_host_passes_every_filter(
    data: st.DataObject, hosts: list[HostView], policy: Policy
) -> None:
    """Whatever the cluster, a chosen host passes every filter and has the best score; with no
    choice, every host was refused by at least one filter."""
    ids = [h.id for h in hosts]
    ledger = PendingResources()
    for n in range(data.draw(st.integers(0, 4))):
        if ids:
            ledger.reserve(data.draw(vms(100 + n, ids)), data.draw(st.sampled_from(ids)))
    vm = data.draw(vms(0, ids))
    decision = schedule(vm, hosts, policy, ledger)
    units = units_for(policy)
    assert set(decision.explanations) == set(ids)
    by_id = {h.id: h for h in hosts}
    for host_id in ids:
        view = effective(by_id[host_id], ledger, vm)
        refused = [f.name for f in units.filters if f.refusal(vm, view, policy) is not None]
        assert (host_id in decision.scores) == (not refused)
        for name in refused:
            assert any(e.startswith(f"refused by {name}: ") for e in decision.explanations[host_id])
    if decision.host is None:
        assert decision.scores == {}
    else:
        assert decision.scores[decision.host] == max(decision.scores.values())
        assert decision.ranking[0] == decision.host


@settings(deadline=None)
@given(data=st.data(), hosts=host_lists(), policy=policies)
def test_decisions_do_not_depend_on_the_snapshot_order(
    data: st.DataObject, hosts: list[HostView], policy: Policy
) -> None:
    """Any permutation of the hosts gives the same choice, ranking and explanations."""
    vm = data.draw(vms(0, [h.id for h in hosts]))
    shuffled = data.draw(st.permutations(hosts))
    first, second = schedule(vm, hosts, policy), schedule(vm, shuffled, policy)
    assert (first.host, first.ranking, first.explanations) == (
        second.host,
        second.ranking,
        second.explanations,
    )


@settings(deadline=None)
@given(data=st.data(), hosts=host_lists(overbooked=False), policy=policies)
def test_the_ledger_never_lets_promises_exceed_capacity(
    data: st.DataObject, hosts: list[HostView], policy: Policy
) -> None:
    """Through any sequence of concurrent starts and releases, no host's committed, reserved and
    pending memory ever exceeds its capacity under the overcommit ratio."""
    ledger = PendingResources()
    ids = [h.id for h in hosts]
    started: list[str] = []
    for n in range(data.draw(st.integers(1, 40))):
        if started and data.draw(st.integers(0, 3)) == 0:
            vm_id = data.draw(st.sampled_from(started))
            ledger.release(vm_id)
            started.remove(vm_id)
        else:
            vm = data.draw(vms(n, ids))
            if place(vm, hosts, policy, ledger).host is not None:
                started.append(vm.id)
        for h in hosts:
            promised = (
                h.memory_committed_mib
                + h.memory_reserved_mib
                + h.pending_memory_mib
                + ledger.for_host(h.id).memory_mib
            )
            if ledger.for_host(h.id):
                assert promised <= memory_capacity_mib(h, policy.memory_over_commit_percent)
    assert sorted(r.vm_id for r in ledger) == sorted(started)
