"""Two beats started at once schedule each job once per interval: one sends, the other
stands by (and takes over when the first one dies). Counted from what the beats
sent (their logs) and what the worker ran (JobRuns), so a slow worker cannot make
the test flaky."""

import re
import time
from collections import defaultdict
from datetime import datetime, timedelta

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from jobs.models import JobRun
from jobs.registry import JOBS
from tests.celery_processes import Processes, wait_for, wait_for_log

INTERVAL = 2  # seconds
WINDOW = 10  # seconds watched with both beats up
SENT = re.compile(r"^\[(\S+ \S+): INFO/MainProcess\] Scheduler: Sending due task (.+) \((\S+)\)$")
RECEIVED = re.compile(r"Task (\S+)\[[0-9a-f-]+\] received$")


def received(log):
    """Task path of every message the worker took off the queue."""
    text = log.read_text(errors="replace")
    return [match[1] for match in map(RECEIVED.search, text.splitlines()) if match]


def sends(log):
    """(time, task path) of every task a beat sent."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = SENT.match(line)
        if match:
            found.append((datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f"), match[3]))
    return found


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_beats_started_at_once_send_each_job_once_per_interval(tmp_path):
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
        logs = {first: first_log, second: second_log}
        active = wait_for(
            lambda: [p for p, log in logs.items() if sends(log)], timeout=30, message="no beat sent"
        )
        assert len(active) == 1, "both beats sent tasks"
        leader = active[0]
        standby = second if leader is first else first
        wait_for_log(logs[standby], "another beat is active; standing by", timeout=10)
        time.sleep(WINDOW)

        assert not sends(logs[standby]), "the standby sent while the leader was alive"

        # The active beat dies; the standby takes over within seconds.
        processes.kill(leader)
        wait_for_log(logs[standby], "this process is now the active scheduler", timeout=15)
        wait_for(lambda: sends(logs[standby]), timeout=15, message="the new leader sent nothing")
        time.sleep(3 * INTERVAL)
        processes.kill(standby)

        # Every message published is run exactly once: wait for the worker to drain.
        # A beat logs "Sending due task" just before it publishes, so a SIGKILL can
        # land in between: each killed beat may have logged one send that never
        # reached the broker (at most once per job per killed beat, never more).
        sent = sends(logs[leader]) + sends(logs[standby])
        wait_for(
            lambda: len(received(worker_log)) >= len(sent) - 2
            and JobRun.objects.count() >= len(received(worker_log)),
            timeout=60, every=0.2,
            message=lambda: (
                f"the worker did not run every task sent: sent {len(sent)}, received "
                f"{len(received(worker_log))}, ran {JobRun.objects.count()}\n"
                + "\n".join(worker_log.read_text(errors="replace").splitlines()[-30:])
            ),
        )  # fmt: skip
        time.sleep(1)
        delivered = received(worker_log)
    finally:
        processes.stop_all()

    by_task = defaultdict(list)
    for moment, task in sent:
        by_task[task].append(moment)
    runs = defaultdict(int)
    for name in JobRun.objects.values_list("job_name", flat=True):
        runs[name] += 1
    assert JobRun.objects.count() == len(delivered), "a delivered message ran twice or never"
    for job in JOBS:
        moments = sorted(by_task[job.task])
        ran = runs[job.name]
        assert ran == delivered.count(job.task), (job.name, ran, delivered.count(job.task))
        assert len(moments) - 2 <= ran <= len(moments), (job.name, ran, len(moments))
        leader_sends = sorted(m for m, task in sends(logs[leader]) if task == job.task)
        # one beat sends once per interval: never two sends of a job within one interval
        gaps = [b - a for a, b in zip(leader_sends, leader_sends[1:], strict=False)]
        assert all(gap > timedelta(seconds=INTERVAL - 0.5) for gap in gaps), (job.name, gaps)
        span = (leader_sends[-1] - leader_sends[0]).total_seconds()
        assert len(leader_sends) <= span / INTERVAL + 1.5, (job.name, len(leader_sends), span)
        assert len(leader_sends) >= WINDOW / INTERVAL - 1, (job.name, leader_sends)
        assert any(task == job.task for _, task in sends(logs[standby])), job.name
    assert not JobRun.objects.filter(status__in=["failed", "skipped"]).exists()
