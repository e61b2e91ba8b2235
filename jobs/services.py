"""Housekeeping of the job platform itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from jobs.models import JobRun
from jobs.runner import Batch

KEEP_RUNS = timedelta(days=30)


def prune_job_runs(
    *, batch_size: int, keep: timedelta = KEEP_RUNS, now: datetime | None = None
) -> Iterator[Batch]:
    """Delete runs older than `keep`, in batches; each job's last success stays (the
    health page needs it) and so does anything still marked running."""
    cutoff = (now or timezone.now()) - keep
    last_successes = (
        JobRun.objects.filter(status=JobRun.Status.SUCCEEDED)
        .order_by("job_name", "-finished_at", "-id")
        .distinct("job_name")
        .values_list("id", flat=True)
    )
    while True:
        with transaction.atomic(durable=True):
            ids = list(
                JobRun.objects.filter(started_at__lt=cutoff)
                .exclude(status=JobRun.Status.RUNNING)
                .exclude(pk__in=last_successes)
                .order_by("id")
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                return
            deleted, _ = JobRun.objects.filter(pk__in=ids).delete()
        yield Batch(processed=deleted)
