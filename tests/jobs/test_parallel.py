"""jobs.parallel: a job's partitions at once, each in a thread on its own connection."""

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connection

from jobs import registry
from jobs.models import JobRun
from jobs.parallel import Parallel
from jobs.runner import Batch, lock_is_held, run_job

JOB = "expire_grants"


def test_every_outcome_of_every_part_comes_out_in_the_callers_thread():
    seen_in = set()

    def part(k):
        def outcomes():
            for n in range(50):
                seen_in.add(threading.current_thread().name)
                yield (k, n)

        return outcomes

    got = list(Parallel([part(k) for k in range(3)], name="p"))
    assert sorted(got) == [(k, n) for k in range(3) for n in range(50)]
    for k in range(3):  # each part's own order is kept
        assert [n for part_k, n in got if part_k == k] == list(range(50))
    assert seen_in == {"p-0", "p-1", "p-2"}


def test_a_failing_part_winds_the_others_down_then_raises_in_the_caller():
    release = threading.Event()
    finished = []

    def failing():
        yield "a1"
        release.wait(5)
        raise ValueError("batch 2 of part a failed")

    def steady():
        try:
            for n in range(1000):
                if n == 3:
                    release.set()
                yield f"b{n}"
                if n > 3:
                    threading.Event().wait(0.001)
        finally:
            finished.append(True)

    got = []
    with pytest.raises(ValueError, match="batch 2 of part a failed"):
        for outcome in Parallel([failing, steady]):
            got.append(outcome)
    assert "a1" in got and {"b0", "b1", "b2", "b3"} <= set(got)
    assert len(got) < 1001  # the steady part stopped early...
    assert finished == [True]  # ...and was closed; every batch it yielded came out


def test_wind_down_lets_each_part_finish_its_batch_and_every_outcome_is_still_seen():
    made = {0: 0, 1: 0}

    def part(k):
        def outcomes():
            for n in range(10_000):
                made[k] += 1
                yield k, n
                threading.Event().wait(0.001)  # a batch takes a while

        return outcomes

    parallel = Parallel([part(0), part(1)])
    got = [next(parallel)]
    parallel.wind_down()
    got.extend(parallel)
    assert len(got) == made[0] + made[1] < 20_000


@pytest.mark.django_db(transaction=True)
def test_each_part_runs_on_its_own_connection_which_is_closed_at_its_end():
    def part():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            yield cursor.fetchone()[0]

    pids = list(Parallel([part, part]))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mine = cursor.fetchone()[0]
        assert len(set(pids)) == 2 and mine not in pids
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db(transaction=True)
def test_a_run_over_parts_counts_the_batches_of_every_part():
    def work(size):
        return Parallel([lambda: [Batch(processed=size)] * 4, lambda: [Batch(processed=1)] * 3])

    run = run_job(JOB, work, batch_size=5)
    run.refresh_from_db()
    assert (run.status, run.batches, run.items_processed) == ("succeeded", 7, 23)


@pytest.mark.django_db(transaction=True)
def test_past_its_time_budget_a_run_over_parts_still_counts_the_batches_they_finish(
    monkeypatch,
):
    job = registry.get(JOB)
    monkeypatch.setitem(registry._BY_NAME, JOB, replace(job, time_budget=timedelta(0)))
    yielded = []

    def part(k):
        def batches():
            for _ in range(10_000):
                yielded.append(k)
                yield Batch(processed=1)
                threading.Event().wait(0.001)  # a batch takes a while

        return batches

    run = run_job(JOB, lambda size: Parallel([part(0), part(1)]))
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.batches == run.items_processed == len(yielded) < 20_000


@pytest.mark.django_db(transaction=True)
def test_a_part_that_fails_fails_the_run_after_counting_the_others_and_frees_the_lock():
    def broken():
        yield Batch(processed=2)
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="went away"):
        run_job(JOB, lambda size: Parallel([broken, lambda: [Batch(processed=1)] * 3]))
    run = JobRun.objects.get(job_name=JOB)
    assert run.status == "failed" and "RuntimeError: the database went away" in run.error_summary
    assert run.items_processed >= 2
    assert not lock_is_held(registry.get(JOB).lock_name)
