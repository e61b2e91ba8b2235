"""The leader scheduler in-process: a task sent just before the heap is rebuilt is
not sent a second time (django-celery-beat kept the stale entry; see
LeaderDatabaseScheduler.reserve); a task the broker refused stays due and goes out
once when it answers; a database session ended under the beat does not stop it."""

import logging
from datetime import timedelta

import pytest
from celery.beat import SchedulingError
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from kombu.exceptions import OperationalError as BrokerUnavailable

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
    scheduler._finalize.cancel()  # its sync at exit would run after the test database is gone
    connection.close()  # a test may have ended its session under it


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


# --- outages: a refused send stays due; a broken database connection is not fatal ------


def refusing_broker(scheduler):
    """apply_async as Celery's raises it while Redis is down; `scheduler.broker_up()`
    puts the recording one back."""
    record = scheduler.apply_async
    scheduler.refused = []

    def refuse(entry, *args, **kwargs):
        scheduler.refused.append(entry.name)
        # what kombu raises once its publish retries are spent, wrapped as Celery does
        down = BrokerUnavailable("Error 111 connecting to unix socket: Connection refused.")
        raise SchedulingError(f"Couldn't apply scheduled task {entry.name}: {down}") from down

    scheduler.apply_async = refuse
    scheduler.broker_up = lambda: setattr(scheduler, "apply_async", record)


def test_a_task_the_broker_refused_stays_due_and_is_sent_once_when_it_answers(scheduler, caplog):
    before = PeriodicTask.objects.get(name="tick-test").last_run_at
    scheduler.broker_retry_interval = 0
    refusing_broker(scheduler)
    with caplog.at_level(logging.INFO, logger="jobs.beat"):
        run_ticks(scheduler, 6)
        scheduler.sync()
        assert len(scheduler.refused) >= 3, "the beat did not keep trying"
        assert PeriodicTask.objects.get(name="tick-test").last_run_at == before, (
            "a refused send advanced last_run_at: the job would wait a whole interval"
        )
        scheduler.broker_up()
        run_ticks(scheduler, 6)
    assert scheduler.sent == ["tick-test"], "sent once when the broker is back, not per tick"
    scheduler.sync()
    assert PeriodicTask.objects.get(name="tick-test").last_run_at > before
    refused = [r for r in caplog.records if "the broker refused" in r.getMessage()]
    assert len(refused) == 1, "one line per outage"
    assert any("takes tasks again" in r.getMessage() for r in caplog.records)


def test_while_the_broker_refuses_the_beat_tries_only_every_retry_interval(scheduler):
    scheduler.broker_retry_interval = 60
    refusing_broker(scheduler)
    delays = [scheduler.tick() for _ in range(5)]
    assert scheduler.refused == ["tick-test"]
    assert all(0 < d <= scheduler.max_interval for d in delays[1:]), delays
    scheduler._broker_retry_at = 0  # the interval has passed
    run_ticks(scheduler, 3)
    assert scheduler.refused == ["tick-test", "tick-test"]


def test_a_task_that_cannot_be_sent_at_all_is_not_retried_every_tick(scheduler, caplog):
    """Not the broker's fault (a bad argument, say): as Celery does, log it and wait
    for the next run, instead of retrying it forever ahead of every other job."""
    attempts = []

    def broken(entry, *args, **kwargs):
        attempts.append(entry.name)
        raise SchedulingError(f"Couldn't apply scheduled task {entry.name}: bad args") from (
            ValueError("bad args")
        )

    scheduler.apply_async = broken
    scheduler.broker_retry_interval = 0
    with caplog.at_level(logging.INFO, logger="jobs.beat"):
        run_ticks(scheduler, 6)
    assert attempts == ["tick-test"]
    assert any("could not send 'tick-test'" in r.getMessage() for r in caplog.records)


def terminate_django_session():
    """What `pg_ctl stop -m immediate` does to an idle connection: the server ends it."""
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])  # and wait for it
    finally:
        other.close()


def test_regaining_leadership_reconnects_before_reading_the_schedule(scheduler, caplog):
    """Issue 14: the beat died about a second after PostgreSQL returned, reading the
    schedule through Django's connection to the server that had gone away."""
    scheduler._leader = False
    scheduler.alive_check_interval = 0
    terminate_django_session()
    with caplog.at_level(logging.INFO, logger="jobs.beat"):
        run_ticks(scheduler)
    assert scheduler.sent == ["tick-test"]
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]


def test_a_database_error_in_a_tick_does_not_stop_the_beat(scheduler, caplog):
    scheduler._initial_read = True  # the next tick reads the whole schedule
    terminate_django_session()
    with caplog.at_level(logging.INFO, logger="jobs.beat"):
        delay = scheduler.tick()  # raised OperationalError before
        assert 0 < delay <= scheduler.database_retry_interval
        assert not scheduler._leader, "kept the leadership through a database error"
        scheduler.alive_check_interval = 0
        run_ticks(scheduler)
    assert scheduler.sent == ["tick-test"]
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "the database is unavailable" in m]) == 1, messages
    assert any("the database answers again" in m for m in messages), messages
    assert any("now the active scheduler" in m for m in messages), messages


def test_a_beat_started_while_the_database_is_down_waits_for_it(tmp_path, caplog):
    """It used to exit at start (setup_schedule reads the database)."""
    PeriodicTask.objects.update(enabled=False)
    every_minute = IntervalSchedule.objects.create(every=60, period="seconds")
    PeriodicTask.objects.create(name="tick-test", task="jobs.tasks.prune_job_runs",
                                interval=every_minute,
                                last_run_at=timezone.now() - timedelta(minutes=2))  # fmt: skip
    saved, saved_options = (
        connection.settings_dict.copy(),
        dict(connection.settings_dict["OPTIONS"]),
    )
    connection.close()
    connection.settings_dict["HOST"] = str(tmp_path)  # a folder where no server listens
    connection.settings_dict["OPTIONS"] = {**saved_options, "host": str(tmp_path)}
    try:
        with caplog.at_level(logging.INFO, logger="jobs.beat"):
            scheduler = LeaderDatabaseScheduler(app=app)
            assert scheduler.tick() > 0
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        connection.settings_dict["OPTIONS"] = saved_options
    sent: list[str] = []
    scheduler.apply_async = lambda entry, *args, **kwargs: sent.append(entry.name)
    try:
        run_ticks(scheduler)
    finally:
        scheduler._drop_lock_connection()
        scheduler._finalize.cancel()
    assert sent == ["tick-test"]
    assert any("the database is unavailable" in r.getMessage() for r in caplog.records)
