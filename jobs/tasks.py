"""Celery tasks of the job platform: thin, they call a service through run_job."""

from __future__ import annotations

from celery import shared_task

from jobs import services
from jobs.runner import run_job, summary


@shared_task
def prune_job_runs(batch_size: int | None = None) -> dict[str, int | str]:
    run = run_job(
        "prune_job_runs",
        lambda size: services.prune_job_runs(batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)
