"""Is every scheduled job doing its work? A job is overdue when its last success is
older than twice its interval (the interval staff set in the admin, or the
registry's default for a crontab/solar/clocked schedule)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from jobs.models import JobRun
from jobs.registry import JOBS, Job
from jobs.runner import lock_is_held
from jobs.schedules import seconds_of


@dataclass(frozen=True)
class JobHealth:
    job: Job
    periodic_task: PeriodicTask | None
    interval: timedelta
    schedule: str
    last_run: JobRun | None
    last_success: JobRun | None
    running: bool
    state: str  # ok | overdue | waiting | disabled | not scheduled
    note: str

    @property
    def ok(self) -> bool:
        return self.state in ("ok", "waiting", "disabled")

    @property
    def last_success_at(self) -> datetime | None:
        return self.last_success.finished_at if self.last_success else None


def _interval(job: Job, task: PeriodicTask | None) -> tuple[timedelta, str]:
    if task is None:
        return job.every, "not scheduled"
    if task.interval is not None:
        every = timedelta(seconds=seconds_of(task.interval.every, task.interval.period))
        return every, f"every {task.interval.every} {task.interval.period}"
    schedule = task.crontab or task.solar or task.clocked
    return job.every, f"{schedule} (checked against the default {job.every})"


def job_health(*, now: datetime | None = None, jobs: Iterable[Job] = JOBS) -> list[JobHealth]:
    now = now or timezone.now()
    jobs = list(jobs)
    tasks = {
        t.name: t
        for t in PeriodicTask.objects.filter(name__in=[j.title for j in jobs]).select_related(
            "interval", "crontab", "solar", "clocked"
        )
    }
    report = []
    for job in jobs:
        task = tasks.get(job.title)
        interval, schedule = _interval(job, task)
        runs = JobRun.objects.filter(job_name=job.name)
        last_run = runs.order_by("-started_at", "-id").first()
        last_success = (
            runs.filter(status=JobRun.Status.SUCCEEDED).order_by("-finished_at", "-id").first()
        )
        allowed = 2 * interval
        if task is None:
            state, note = "not scheduled", "No periodic task: run `manage.py install_schedules`."
        elif not task.enabled:
            state, note = "disabled", "Disabled in Periodic tasks; it does not run."
        elif last_success is not None and last_success.finished_at is not None:
            late = now - last_success.finished_at
            if late > allowed:
                state = "overdue"
                note = f"Last success {_ago(late)} ago, more than twice its interval ({interval})."
            else:
                state, note = "ok", ""
        elif now - task.date_changed > allowed:
            state, note = (
                "overdue",
                f"Never succeeded, scheduled {_ago(now - task.date_changed)} ago.",
            )
        else:
            state, note = "waiting", "Not run yet."
        if last_run is not None and last_run.status == JobRun.Status.FAILED and state == "ok":
            note = "The last run failed; see its error."
        elif last_run is not None and last_run.items_failed and state == "ok":
            # Work that goes on past a failed item (one customer's invoice) still
            # succeeds; the items it could not do are named in the run's errors.
            note = f"{last_run.items_failed} item(s) failed in the last run; see its errors."
        report.append(
            JobHealth(
                job=job,
                periodic_task=task,
                interval=interval,
                schedule=schedule,
                last_run=last_run,
                last_success=last_success,
                running=lock_is_held(job.lock_name),
                state=state,
                note=note,
            )
        )
    return report


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
