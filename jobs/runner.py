"""Run a scheduled job: one JobRun row, one advisory lock, bounded batches.

    @shared_task
    def expire_grants(batch_size: int | None = None) -> dict:
        return run_job("expire_grants", services.expire_due_grant_batches,
                       batch_size=batch_size).summary()

`work(batch_size)` returns an iterable of batch outcomes (anything with
`processed`, `failed` and `errors`); the service commits each batch in its own
transaction before yielding it, so a run killed at any point leaves only whole
batches behind, and the next run carries on from there. The outcomes may come from
several partitions swept at once on their own connections (`jobs.parallel`); the
run counts them all the same.

Overlap: a run holds a session-level PostgreSQL advisory lock on its job's name
(`pg_try_advisory_lock`), released in `finally` and by PostgreSQL itself when the
session ends (a killed worker's connection closes). A second run of the same job
while one is running does no work and records a "skipped" JobRun. Session-level
locks need a real session: behind PgBouncer, run workers in session pooling mode
(or give them a direct connection).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils import timezone

from jobs import registry
from jobs.models import JobRun

logger = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 20
MAX_SUMMARY_CHARS = 4000


class Outcome(Protocol):
    """What one batch did. Services return their own dataclasses of this shape."""

    @property
    def processed(self) -> int: ...

    @property
    def failed(self) -> int: ...

    @property
    def errors(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Batch:
    processed: int = 0
    failed: int = 0
    errors: Sequence[str] = field(default_factory=tuple)


Work = Callable[[int], Iterable[Outcome]]


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_try_advisory_lock(bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(name: str, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[bool]:
    """Try to take a session-level advisory lock; yields whether we got it.
    Never waits: a job that is already running is simply not started again."""
    key = lock_key(name)
    conn = connections[using]
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        row = cursor.fetchone()
    acquired = bool(row and row[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:
                # The session is gone, and PostgreSQL released the lock with it.
                logger.warning("could not release the advisory lock %s", name, exc_info=True)


def lock_is_held(name: str, *, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether any session holds the job's lock right now (for health and tests)."""
    key = lock_key(name)
    with connections[using].cursor() as cursor:
        cursor.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                              AND objsubid = 1
                              AND ((classid::bigint << 32) | objid::bigint) = %s)""",
            [key],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def _summary(errors: list[str], more: int) -> str:
    lines = errors[:MAX_ERRORS_KEPT]
    if more:
        lines.append(f"… and {more} more")
    return "\n".join(lines)[:MAX_SUMMARY_CHARS]


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _task_id() -> str:
    from celery import current_task

    request = getattr(current_task, "request", None)
    return (getattr(request, "id", None) or "") if current_task else ""


def run_job(name: str, work: Work, *, batch_size: int | None = None) -> JobRun:
    """Run `work` as job `name` unless it is already running; record the run."""
    job = registry.get(name)
    size = batch_size or job.batch_size
    with advisory_lock(job.lock_name) as acquired:
        now = timezone.now()
        if not acquired:
            logger.info("job %s is already running; this run is skipped", name)
            return JobRun.objects.create(
                job_name=name, status=JobRun.Status.SKIPPED, started_at=now, finished_at=now,
                task_id=_task_id(), worker=_worker(),
            )  # fmt: skip
        # Holding the lock, no other run of this job is alive: any run still marked
        # running died without finishing (worker killed). Its committed batches stand.
        JobRun.objects.filter(job_name=name, status=JobRun.Status.RUNNING).update(
            status=JobRun.Status.INTERRUPTED,
            error_summary="The worker was lost (killed or crashed) before the run finished; "
            "its committed batches stand and a later run did the rest.",
        )
        run = JobRun.objects.create(
            job_name=name, status=JobRun.Status.RUNNING, started_at=now, task_id=_task_id(),
            worker=_worker(),
        )  # fmt: skip
        errors: list[str] = []
        more = 0
        deadline = time.monotonic() + job.time_budget.total_seconds()
        batches = iter(work(size))
        winding_down = False
        try:
            for outcome in batches:
                run.batches += 1
                run.items_processed += outcome.processed
                run.items_failed += outcome.failed
                for message in outcome.errors:
                    if len(errors) < MAX_ERRORS_KEPT:
                        errors.append(message)
                    else:
                        more += 1
                run.error_summary = _summary(errors, more)
                run.save(
                    update_fields=["batches", "items_processed", "items_failed", "error_summary"]
                )
                if not winding_down and time.monotonic() > deadline:
                    logger.info("job %s used its time budget; the next run continues", name)
                    # Work running in parallel (jobs.parallel) finishes the batches it
                    # is in, and they are still counted; anything else stops here.
                    wind_down = getattr(batches, "wind_down", None)
                    if wind_down is None:
                        break
                    wind_down()
                    winding_down = True
        except Exception as exc:
            run.status = JobRun.Status.FAILED
            run.finished_at = timezone.now()
            errors.append(f"{type(exc).__name__}: {exc}")
            run.error_summary = _summary(errors, more)
            run.save()
            logger.exception("job %s failed", name)
            raise
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        run.status = JobRun.Status.SUCCEEDED
        run.finished_at = timezone.now()
        run.save()
        return run


def summary(run: JobRun) -> dict[str, int | str]:
    """What a task returns (and Celery logs)."""
    return {
        "job": run.job_name,
        "status": run.status,
        "batches": run.batches,
        "processed": run.items_processed,
        "failed": run.items_failed,
    }
