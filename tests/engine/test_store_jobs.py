"""PostgresStore on real PostgreSQL: jobs, idempotency keys and outcomes."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from engine.store.errors import Conflict, InvalidValue, NotFound
from engine.store.rows import JobStatus


@pytest_twisted.ensureDeferred
async def test_create_and_get(store):
    """A new job is pending at 0% with no outcome, and reads back by id."""
    vm_id = uuid.uuid4()
    job, created = await store.create_job("VMs.start", target_kind="vm", target_id=vm_id)
    assert created
    assert (job.action, job.target_kind, job.target_id) == ("VMs.start", "vm", vm_id)
    assert (job.status, job.progress, job.result, job.error) == (JobStatus.PENDING, 0, None, None)
    assert await store.get_job(job.id) == job


@pytest_twisted.ensureDeferred
async def test_idempotency_key_returns_the_same_job(store):
    """A request repeated with its idempotency key finds the first job instead of a new one."""
    vm_id = uuid.uuid4()
    first, created = await store.create_job("VMs.start", target_kind="vm", target_id=vm_id,
                                            idempotency_key="req-1")
    await store.update_job(first.id, status=JobStatus.RUNNING, progress=40)
    again, created_again = await store.create_job("VMs.start", target_kind="vm",
                                                  target_id=vm_id, idempotency_key="req-1")
    assert created and not created_again
    assert again.id == first.id and again.progress == 40
    assert len(await store.list_jobs()) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_with_one_key(store):
    """Several concurrent creates with one key make one job, reported as created once."""
    vm_id = uuid.uuid4()
    results = await gatherResults([
        store.create_job("VMs.stop", target_kind="vm", target_id=vm_id, idempotency_key="k")
        for _ in range(6)
    ])
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1


@pytest_twisted.ensureDeferred
async def test_key_reused_for_another_request(store):
    """An idempotency key reused for a different action or target is a ``Conflict``."""
    vm_id = uuid.uuid4()
    await store.create_job("VMs.start", target_kind="vm", target_id=vm_id, idempotency_key="k")
    with pytest.raises(Conflict):
        await store.create_job("VMs.stop", target_kind="vm", target_id=vm_id,
                               idempotency_key="k")
    with pytest.raises(Conflict):
        await store.create_job("VMs.start", target_kind="vm", target_id=uuid.uuid4(),
                               idempotency_key="k")


@pytest_twisted.ensureDeferred
async def test_without_key_every_request_is_a_job(store):
    """Jobs created without a key are all distinct."""
    for _ in range(3):
        await store.create_job("Hosts.add", target_kind="host")
    assert len(await store.list_jobs()) == 3


@pytest_twisted.ensureDeferred
async def test_progress_and_outcome(store):
    """A job runs, reports progress, and ends with a JSON result or an error."""
    ok, _ = await store.create_job("VMs.start", target_kind="vm")
    await store.update_job(ok.id, status=JobStatus.RUNNING, progress=10)
    done = await store.update_job(ok.id, status=JobStatus.SUCCEEDED, progress=100,
                                  result={"host": "h2", "took": 1.5})
    assert (done.status, done.progress, done.result) == (JobStatus.SUCCEEDED, 100, {"host": "h2",
                                                                                     "took": 1.5})
    assert done.updated >= done.created
    bad, _ = await store.create_job("VMs.migrate", target_kind="vm")
    failed = await store.update_job(bad.id, status=JobStatus.FAILED, error="no host fits",
                                    result="refused")
    assert (failed.status, failed.error, failed.result) == (JobStatus.FAILED, "no host fits",
                                                            "refused")


@pytest_twisted.ensureDeferred
async def test_final_states_never_change(store):
    """A job that succeeded or failed cannot be updated again (``Conflict``)."""
    job, _ = await store.create_job("VMs.stop", target_kind="vm")
    await store.update_job(job.id, status=JobStatus.SUCCEEDED)
    with pytest.raises(Conflict):
        await store.update_job(job.id, status=JobStatus.RUNNING)
    assert (await store.get_job(job.id)).status is JobStatus.SUCCEEDED


@pytest_twisted.ensureDeferred
async def test_bad_updates(store):
    """Unknown jobs, progress past 100 and fixed fields are refused with typed errors."""
    with pytest.raises(NotFound):
        await store.update_job(uuid.uuid4(), progress=5)
    with pytest.raises(NotFound):
        await store.get_job(uuid.uuid4())
    job, _ = await store.create_job("VMs.stop", target_kind="vm")
    with pytest.raises(InvalidValue):
        await store.update_job(job.id, progress=101)
    with pytest.raises(TypeError):
        await store.update_job(job.id, action="VMs.start")


@pytest_twisted.ensureDeferred
async def test_list_filters(store):
    """Jobs list newest first, filtered by status and target, up to a limit."""
    vm_a, vm_b = uuid.uuid4(), uuid.uuid4()
    first, _ = await store.create_job("VMs.start", target_kind="vm", target_id=vm_a)
    second, _ = await store.create_job("VMs.start", target_kind="vm", target_id=vm_b)
    third, _ = await store.create_job("VMs.stop", target_kind="vm", target_id=vm_a)
    await store.update_job(second.id, status=JobStatus.RUNNING)
    assert {j.id for j in await store.list_jobs()} == {first.id, second.id, third.id}
    assert [j.id for j in await store.list_jobs(status=JobStatus.RUNNING)] == [second.id]
    assert {j.id for j in await store.list_jobs(target_id=vm_a)} == {first.id, third.id}
    assert len(await store.list_jobs(limit=2)) == 2
