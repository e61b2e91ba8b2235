"""Install the registry's default beat schedules as django-celery-beat rows.

Idempotent: a job without a PeriodicTask (looked up by its title) gets one with
the default interval; an existing one keeps the schedule and the enabled flag staff
gave it, and only the code-owned fields (task path, description) are brought in
line. `reset=True` (`manage.py install_schedules --reset`) also restores the
default interval and enables the job. Running it again changes nothing.

Called by the data migration `jobs.0002_install_default_schedules`, after every
`migrate` (post_migrate, so a job added to the registry later needs no migration
of its own), and by `manage.py install_schedules`. Works with historical models
(pass them in) as well as the real ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from jobs.registry import JOBS, Job

UNITS = (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1))


def interval_of(every: timedelta) -> tuple[int, str]:
    """timedelta(minutes=5) → (5, "minutes"): the largest unit that divides it."""
    seconds = int(every.total_seconds())
    if seconds <= 0 or seconds != every.total_seconds():
        raise ValueError(f"a job interval must be a whole number of seconds > 0, got {every}")
    for period, size in UNITS:
        if seconds % size == 0:
            return seconds // size, period
    raise AssertionError("unreachable: every interval divides into seconds")


def seconds_of(every: int, period: str) -> float:
    """(5, "minutes") → 300.0; django-celery-beat also knows microseconds."""
    sizes = dict(UNITS) | {"microseconds": 1e-6}
    return every * sizes[period]


def _interval(IntervalSchedule: Any, every: timedelta, using: str) -> Any:
    count, period = interval_of(every)
    manager = IntervalSchedule.objects.db_manager(using)
    found = manager.filter(every=count, period=period).order_by("pk").first()
    return found or manager.create(every=count, period=period)


def install(
    *,
    PeriodicTask: Any = None,
    IntervalSchedule: Any = None,
    PeriodicTasks: Any = None,
    jobs: Iterable[Job] = JOBS,
    reset: bool = False,
    using: str = DEFAULT_DB_ALIAS,
) -> list[str]:
    """Install or update the default PeriodicTasks; returns what changed."""
    if PeriodicTask is None:
        from django_celery_beat import models as beat

        PeriodicTask, IntervalSchedule, PeriodicTasks = (
            beat.PeriodicTask,
            beat.IntervalSchedule,
            beat.PeriodicTasks,
        )
    changes: list[str] = []
    for job in jobs:
        task = PeriodicTask.objects.db_manager(using).filter(name=job.title).first()
        if task is None:
            PeriodicTask.objects.db_manager(using).create(
                name=job.title, task=job.task, interval=_interval(IntervalSchedule, job.every, using),
                description=job.description, enabled=True,
            )  # fmt: skip
            changes.append(f"installed {job.title!r} ({job.task}) every {job.every}")
            continue
        updates: dict[str, Any] = {}
        if task.task != job.task:
            updates["task"] = job.task
        if task.description != job.description:
            updates["description"] = job.description
        if reset:
            interval = _interval(IntervalSchedule, job.every, using)
            if task.interval_id != interval.pk:
                updates["interval"] = interval
            for other in ("crontab", "solar", "clocked"):
                if getattr(task, f"{other}_id") is not None:
                    updates[other] = None
            if not task.enabled:
                updates["enabled"] = True
        if updates:
            for name, value in updates.items():
                setattr(task, name, value)
            task.save(using=using, update_fields=list(updates))
            changes.append(f"updated {job.title!r}: {', '.join(sorted(updates))}")
    if changes:
        # Tell running beats to reload (the real model's signals do this on save;
        # historical models in a migration have none).
        PeriodicTasks.objects.db_manager(using).update_or_create(
            ident=1, defaults={"last_update": timezone.now()}
        )
    return changes
