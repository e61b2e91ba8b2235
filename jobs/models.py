"""One row per run of a scheduled job: what it did, and whether it finished."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone


class JobRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped: already running"
        INTERRUPTED = "interrupted", "Interrupted (worker lost)"

    job_name = models.CharField(max_length=100)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    batches = models.PositiveIntegerField(default=0)
    items_processed = models.PositiveBigIntegerField(default=0)
    items_failed = models.PositiveBigIntegerField(default=0)
    error_summary = models.TextField(blank=True)
    task_id = models.CharField(max_length=255, blank=True, help_text="Celery task id, if any.")
    worker = models.CharField(max_length=255, blank=True, help_text="host:pid that ran it.")

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["job_name", "-started_at"], name="jobrun_recent"),
            models.Index(
                fields=["job_name", "-finished_at"],
                name="jobrun_last_success",
                condition=models.Q(status="succeeded"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.job_name} {self.started_at:%Y-%m-%d %H:%M:%S} ({self.get_status_display()})"

    @property
    def duration(self) -> timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None


class JobHealth(JobRun):
    """Not a table: the admin's "Jobs health" page hangs off this proxy."""

    class Meta:
        proxy = True
        verbose_name = "jobs health"
        verbose_name_plural = "jobs health"
