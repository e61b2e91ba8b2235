"""The leader scheduler in-process: a task sent just before the heap is rebuilt is
not sent a second time (django-celery-beat kept the stale entry; see
LeaderDatabaseScheduler.reserve)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.celery import app
from jobs.beat import LeaderDatabaseScheduler

pytestmark = pytest.mark.django_db(transaction=True)  # the scheduler commits and reconnects


@pytest.fixture
def scheduler():
    PeriodicTask.objects.update(enabled=False)
    every_minute = IntervalSchedule.objects.create(every=60, period="seconds")
    PeriodicTask.objects.create(name="tick-test", task="jobs.tasks.prune_job_runs",
                                interval=every_minute,
                                last_run_at=timezone.now() - timedelta(minutes=2))  # fmt: skip
    scheduler = LeaderDatabaseScheduler(app=app)
    scheduler._leader = True  # as if it held the beat lock
    scheduler.alive_check_interval = 1e9
    sent: list[str] = []
    scheduler.apply_async = lambda entry, *args, **kwargs: sent.append(entry.name)
    scheduler.sent = sent
    yield scheduler
    scheduler._drop_lock_connection()


def run_ticks(scheduler, n=5):
    for _ in range(n):
        scheduler.tick()


def test_a_due_task_is_sent_once(scheduler):
    run_ticks(scheduler)
    assert scheduler.sent == ["tick-test"]


def test_a_heap_rebuilt_after_a_send_does_not_send_it_again(scheduler):
    run_ticks(scheduler)
    assert scheduler.sent == ["tick-test"]
    # What a second schedule change during populate_heap leaves behind: the heap
    # is rebuilt on the next tick from the scheduler's in-memory entries.
    scheduler._heap_invalidated = True
    run_ticks(scheduler)
    assert scheduler.sent == ["tick-test"]
