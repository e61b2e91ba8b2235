"""The notifications outbox."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Notification(models.Model):
    """The outbox: a message to a customer, queued in the same transaction as whatever
    caused it and sent by the `send_notifications` job. `dedupe_key` makes queueing
    idempotent (e.g. `threshold:<wallet>:<threshold>:<crossing>`)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    customer = models.ForeignKey(
        "billing.Customer",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="notifications",
    )
    kind = models.CharField(max_length=50, help_text="e.g. low_balance, credit_expiring")
    recipient = models.EmailField(blank=True, help_text="Empty: the customer's email address.")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    dedupe_key = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=6, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="notification_due",
                condition=Q(status="queued"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}"
