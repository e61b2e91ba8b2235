"""The notifications outbox: queue a message in the transaction that causes it, and
let the `send_notifications` job email it.

Queueing is idempotent on `dedupe_key`, so a threshold crossing seen twice (a
retried request, a sweep after the real-time check) mails once. Sending is
at-least-once: each message is sent while its row is locked and marked sent in
the same transaction, so only a crash between the mail server's answer and the
commit can send it twice. Failures are retried with exponential backoff, then the
message is marked failed (staff can retry it from the admin).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction
from django.utils import timezone

from billing.models import Customer
from wallets import errors
from wallets.models import Notification

MAX_ATTEMPTS = 8
FIRST_RETRY = timedelta(minutes=1)
LONGEST_WAIT = timedelta(hours=6)


def backoff(attempts: int) -> timedelta:
    """1 min, 2, 4, 8 … after each failed attempt, at most 6 hours."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_WAIT)


def enqueue_notification(
    *,
    customer: Customer | None,
    kind: str,
    subject: str,
    body: str,
    dedupe_key: str,
    recipient: str = "",
) -> Notification:
    """Queue a message once per `dedupe_key`: a second call with the same key returns
    the first notification and queues nothing. Call it inside the transaction that
    causes the message, so the two commit (or vanish) together. Delivery is by the
    `send_notifications` beat job (every minute by default)."""
    if not dedupe_key or not dedupe_key.strip() or len(dedupe_key) > 255:
        raise errors.WalletError("dedupe_key must be a non-empty string of at most 255 characters.")
    if not kind or len(kind) > 50:
        raise errors.WalletError("kind must be a non-empty string of at most 50 characters.")
    if not subject or not subject.strip():
        raise errors.WalletError("a notification needs a subject.")
    if customer is None and not recipient:
        raise errors.WalletError("a notification needs a customer or a recipient address.")
    notification, _ = Notification.objects.get_or_create(
        dedupe_key=dedupe_key,
        defaults={
            "customer": customer,
            "kind": kind,
            "subject": subject.strip()[:200],
            "body": body,
            "recipient": recipient,
        },
    )
    return notification


@dataclass(frozen=True)
class SendBatch:
    looked_at: int
    sent: int
    cursor: int | None  # id of the last notification looked at
    errors: tuple[str, ...] = ()

    @property
    def processed(self) -> int:
        return self.sent

    @property
    def failed(self) -> int:
        return len(self.errors)


def send_due_notifications(
    *, limit: int = 100, after_id: int = 0, now: datetime | None = None
) -> SendBatch:
    """Send up to `limit` queued notifications that are due, each in its own
    transaction holding its row lock (a second sender skips it)."""
    now = now or timezone.now()
    ids = list(
        Notification.objects.filter(
            status=Notification.Status.QUEUED, next_attempt_at__lte=now, pk__gt=after_id
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    problems: list[str] = []
    connection = mail.get_connection()
    try:
        for pk in ids:
            with transaction.atomic(durable=True):
                message = (
                    Notification.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("customer")
                    .filter(pk=pk, status=Notification.Status.QUEUED)
                    .first()
                )
                if message is None:
                    continue  # sent meanwhile, or another sender holds it
                problem = _send(message, connection, timezone.now())
                if problem:
                    problems.append(f"notification {pk} ({message.dedupe_key}): {problem}")
                else:
                    sent += 1
    finally:
        connection.close()
    return SendBatch(
        looked_at=len(ids), sent=sent, cursor=ids[-1] if ids else None, errors=tuple(problems)
    )


def _send(message: Notification, connection: BaseEmailBackend, now: datetime) -> str:
    """Send one locked notification and record the outcome; returns a problem or ""."""
    to = message.recipient or (message.customer.email if message.customer else "")
    message.attempts += 1
    if not to:
        message.status = Notification.Status.FAILED
        message.last_error = "No email address: give the customer one, then retry."
        message.save(update_fields=["status", "attempts", "last_error"])
        return message.last_error
    try:
        mail.EmailMessage(
            subject=message.subject, body=message.body, from_email=settings.DEFAULT_FROM_EMAIL,
            to=[to], connection=connection,
        ).send()  # fmt: skip
    except Exception as exc:  # any backend error (SMTP, socket, TLS) is a failed attempt
        message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        if message.attempts >= MAX_ATTEMPTS:
            message.status = Notification.Status.FAILED
        else:
            message.next_attempt_at = now + backoff(message.attempts)
        message.save(update_fields=["status", "attempts", "last_error", "next_attempt_at"])
        return message.last_error
    message.status = Notification.Status.SENT
    message.sent_at = now
    message.last_error = ""
    message.save(update_fields=["status", "attempts", "last_error", "sent_at"])
    return ""


def send_due_notification_batches(
    *, batch_size: int = 100, now: datetime | None = None
) -> Iterator[SendBatch]:
    now = now or timezone.now()
    cursor = 0
    while True:
        batch = send_due_notifications(limit=batch_size, after_id=cursor, now=now)
        if batch.cursor is None:
            return
        yield batch
        cursor = batch.cursor


def retry_notifications(*, notification_ids: list[int]) -> int:
    """Queue failed notifications again, with a fresh count of attempts."""
    return Notification.objects.filter(
        pk__in=notification_ids, status=Notification.Status.FAILED
    ).update(
        status=Notification.Status.QUEUED, attempts=0, next_attempt_at=timezone.now(), last_error=""
    )
