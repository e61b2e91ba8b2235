"""The job runner: JobRun records, the advisory lock, bounded batches."""

import threading
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.utils import timezone

from jobs import registry
from jobs.models import JobRun
from jobs.runner import Batch, lock_is_held, lock_key, run_job
from tests.wallets.conftest import STAFF
from wallets import services, tasks
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, LedgerTransaction

JOB = "expire_grants"


def other_session():
    """A second database session, as another worker process would have."""
    other = connections.create_connection("default")
    other.ensure_connection()
    return other


def test_lock_keys_are_stable_signed_64_bit_integers():
    assert lock_key("job:expire_grants") == lock_key("job:expire_grants")
    assert lock_key("job:a") != lock_key("job:b")
    assert all(-(2**63) <= lock_key(f"job:{n}") < 2**63 for n in range(100))


@pytest.mark.django_db
def test_a_run_records_its_batches_and_counts():
    def work(size):
        assert size == 7
        yield Batch(processed=7)
        yield Batch(processed=3, failed=1, errors=["item 12: no email address"])

    run = run_job(JOB, work, batch_size=7)
    run.refresh_from_db()
    assert (run.status, run.batches, run.items_processed, run.items_failed) == (
        "succeeded",
        2,
        10,
        1,
    )
    assert run.error_summary == "item 12: no email address"
    assert run.finished_at is not None and run.duration is not None
    assert not lock_is_held(registry.get(JOB).lock_name)


@pytest.mark.django_db
def test_a_second_run_while_one_holds_the_lock_is_a_recorded_skip():
    other = other_session()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [lock_key("job:expire_grants")])
        assert lock_is_held("job:expire_grants")
        called = []
        run = run_job(JOB, lambda size: called.append(size) or [])
        assert called == [] and run.status == "skipped"
        assert run.get_status_display() == "Skipped: already running"
        assert run.finished_at == run.started_at
    finally:
        other.close()
    # the session ended, so did its lock (the server notices the closed socket a moment later)
    deadline = time.monotonic() + 5
    while lock_is_held("job:expire_grants") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not lock_is_held("job:expire_grants")


@pytest.mark.django_db
def test_a_failing_run_is_recorded_releases_the_lock_and_raises():
    def work(size):
        yield Batch(processed=5)
        raise RuntimeError("the mail server is on fire")

    with pytest.raises(RuntimeError):
        run_job(JOB, work)
    run = JobRun.objects.get(job_name=JOB)
    assert (run.status, run.items_processed) == ("failed", 5)
    assert run.error_summary.endswith("RuntimeError: the mail server is on fire")
    assert not lock_is_held("job:expire_grants")


@pytest.mark.django_db
def test_a_run_left_running_by_a_lost_worker_is_marked_interrupted():
    lost = JobRun.objects.create(job_name=JOB, status="running", items_processed=400)
    other_job = JobRun.objects.create(job_name="send_notifications", status="running")
    run_job(JOB, lambda size: [])
    lost.refresh_from_db()
    other_job.refresh_from_db()
    assert lost.status == "interrupted" and "worker was lost" in lost.error_summary
    assert lost.items_processed == 400 and other_job.status == "running"


@pytest.mark.django_db
def test_a_run_stops_starting_batches_after_its_time_budget(monkeypatch):
    job = registry.get(JOB)
    monkeypatch.setitem(registry._BY_NAME, JOB, replace(job, time_budget=timedelta(0)))
    closed = []

    def work(size):
        try:
            for _ in range(3):
                yield Batch(processed=1)
        finally:
            closed.append(True)

    run = run_job(JOB, work)
    assert (run.status, run.batches) == ("succeeded", 1) and closed == [True]


@pytest.mark.django_db
def test_errors_are_kept_short():
    run = run_job(JOB, lambda size: [Batch(failed=30, errors=[f"item {n}" for n in range(30)])])
    lines = run.error_summary.splitlines()
    assert len(lines) == 21 and lines[-1] == "… and 10 more" and run.items_failed == 30


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweeps_one_does_the_work_the_other_records_a_skip(alice):
    wallet = services.open_wallet(customer=alice)
    now = timezone.now()
    for n in range(3):
        services.grant_credit(
            wallet=wallet, amount=Decimal("10"), kind="paid", name=f"Pack {n}", actor=STAFF,
            idempotency_key=f"g{n}", effective_at=now - timedelta(days=30),
            expires_at=now - timedelta(days=1),
        )  # fmt: skip
    # Hold the wallet's row lock elsewhere, so the first sweep waits in its batch
    # while it holds the job's advisory lock.
    blocker = other_session()
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute("SELECT id FROM wallets_wallet WHERE id = %s FOR UPDATE", [wallet.pk])
    results = {}

    def first_sweep():
        try:
            results["first"] = tasks.expire_grants()
        finally:
            connection.close()

    thread = threading.Thread(target=first_sweep)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not lock_is_held("job:expire_grants"):
            assert time.monotonic() < deadline, "the first sweep never took the job lock"
            time.sleep(0.02)
        results["second"] = tasks.expire_grants()
    finally:
        blocker.rollback()
        blocker.close()
        thread.join(timeout=30)
    assert results["second"]["status"] == "skipped" and results["second"]["processed"] == 0
    assert results["first"]["status"] == "succeeded" and results["first"]["processed"] == 3
    runs = JobRun.objects.filter(job_name=JOB).order_by("started_at")
    assert sorted(runs.values_list("status", flat=True)) == ["skipped", "succeeded"]
    assert LedgerTransaction.objects.filter(kind="expiry").count() == 3
    assert set(CreditGrant.objects.values_list("status", flat=True)) == {"expired"}
    assert find_problems() == []
