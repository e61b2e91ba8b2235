"""Two beats started at once schedule each job once per interval: one sends, the other
stands by (and takes over when the first one dies)."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from jobs.models import JobRun
from jobs.registry import JOBS
from tests.celery_processes import Processes, wait_for, wait_for_log

INTERVAL = 2  # seconds
WINDOW = 10  # seconds watched with both beats up


def runs_between(start, end):
    counts = {job.name: 0 for job in JOBS}
    for name in JobRun.objects.filter(started_at__gte=start, started_at__lt=end).values_list(
        "job_name", flat=True
    ):
        counts[name] += 1
    return counts


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_beats_started_at_once_run_each_job_once_per_interval(tmp_path):
    every_two_seconds = IntervalSchedule.objects.create(every=INTERVAL, period="seconds")
    processes = Processes(tmp_path)
    PeriodicTask.objects.exclude(name__in=[job.title for job in JOBS]).update(enabled=False)
    PeriodicTask.objects.filter(name__in=[job.title for job in JOBS]).update(
        interval=every_two_seconds, queue=processes.queue, enabled=True, last_run_at=None
    )
    PeriodicTasks.update_changed()
    try:
        _, worker_log = processes.worker()
        wait_for_log(worker_log, "ready.", timeout=30)
        first, first_log = processes.beat("beat-1")
        second, second_log = processes.beat("beat-2")
        wait_for(
            lambda: JobRun.objects.filter(job_name="expire_grants").exists(),
            timeout=30, message="no job ran", every=0.2,
        )  # fmt: skip

        start = timezone.now()
        time.sleep(WINDOW)
        both_up = runs_between(start, timezone.now())

        logs = {first: first_log, second: second_log}
        active = [p for p, log in logs.items() if "Sending due task" in log.read_text()]
        assert len(active) == 1, "both beats sent tasks"
        standby = second if active[0] is first else first
        assert "another beat is active; standing by" in logs[standby].read_text()

        # The active beat dies; the standby takes over within a few seconds.
        processes.kill(active[0])
        wait_for_log(logs[standby], "this process is now the active scheduler", timeout=15)
        wait_for_log(logs[standby], "Sending due task", timeout=15)
        takeover = timezone.now()
        time.sleep(3 * INTERVAL)
        after_failover = runs_between(takeover, timezone.now())
    finally:
        processes.stop_all()

    for name, count in both_up.items():
        # one beat: ~WINDOW / INTERVAL runs; two sending beats would make twice as many
        assert WINDOW / INTERVAL - 2 <= count <= WINDOW / INTERVAL + 1, (name, both_up)
    for name, count in after_failover.items():
        assert 1 <= count <= 3 + 1, (name, after_failover)
    assert not JobRun.objects.filter(status__in=["failed", "skipped"]).exists()
    assert JobRun.objects.filter(started_at__lt=start - timedelta(seconds=60)).count() == 0
