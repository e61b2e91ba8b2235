"""The notifications outbox: idempotent queueing, sending with retries and backoff."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.test import override_settings

from jobs.models import JobRun
from wallets import errors, tasks
from wallets.models import Notification
from wallets.notifications import (
    MAX_ATTEMPTS,
    backoff,
    enqueue_notification,
    retry_notifications,
    send_due_notification_batches,
)

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
FAILING = "tests.wallets.email_backends.RefusingBackend"


def low_balance(customer, key="low:1", **kwargs):
    with time_machine.travel(NOW - timedelta(minutes=1), tick=False):
        return enqueue_notification(
            customer=customer, kind="low_balance", subject="Your balance is low",
            body="Your available funds fell below 10.00 USD.", dedupe_key=key, **kwargs,
        )  # fmt: skip


def send(when=NOW, **kwargs):
    with time_machine.travel(when, tick=False):
        return list(send_due_notification_batches(**kwargs))


def test_queueing_is_idempotent_on_the_dedupe_key(alice):
    first = low_balance(alice)
    again = low_balance(alice)
    assert again == first and Notification.objects.count() == 1
    assert first.status == "queued" and first.attempts == 0


def test_queueing_needs_a_key_and_someone_to_tell(alice):
    with pytest.raises(errors.WalletError, match="dedupe_key"):
        low_balance(alice, key=" ")
    with pytest.raises(errors.WalletError, match="customer or a recipient"):
        low_balance(None)


def test_queued_notifications_are_emailed_once(alice, bob):
    low_balance(alice, "k1")
    low_balance(bob, "k2", recipient="billing@bob.example")
    batches = send(batch_size=1)
    assert [b.sent for b in batches] == [1, 1]
    assert sorted(m.to[0] for m in mail.outbox) == sorted([alice.email, "billing@bob.example"])
    assert mail.outbox[0].subject == "Your balance is low"
    assert set(Notification.objects.values_list("status", "attempts", "sent_at")) == {
        ("sent", 1, NOW)
    }
    assert send() == [] and len(mail.outbox) == 2


@override_settings(EMAIL_BACKEND=FAILING)
def test_a_failure_is_retried_with_backoff_then_marked_failed(alice):
    note = low_balance(alice)
    moment = NOW
    for attempt in range(1, MAX_ATTEMPTS + 1):
        (batch,) = send(moment)
        assert batch.sent == 0 and batch.failed == 1
        note.refresh_from_db()
        assert note.attempts == attempt and "SMTPServerDisconnected" in note.last_error
        if attempt < MAX_ATTEMPTS:
            assert note.status == "queued" and note.next_attempt_at == moment + backoff(attempt)
            assert send(note.next_attempt_at - timedelta(seconds=1)) == []  # not yet
            moment = note.next_attempt_at
    assert note.status == "failed"
    assert [backoff(n) for n in (1, 2, 3, 10)] == [
        timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4), timedelta(hours=6),
    ]  # fmt: skip

    with time_machine.travel(moment + timedelta(days=1), tick=False):
        assert retry_notifications(notification_ids=[note.pk]) == 1
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        (batch,) = send(moment + timedelta(days=1))
    note.refresh_from_db()
    assert batch.sent == 1 and note.status == "sent" and note.attempts == 1


def test_a_customer_without_an_email_address_fails_at_once(alice):
    alice.email = ""
    alice.save()
    note = low_balance(alice)
    (batch,) = send()
    note.refresh_from_db()
    assert batch.failed == 1 and note.status == "failed" and "No email address" in note.last_error
    assert mail.outbox == []


def test_the_task_records_the_run(alice):
    low_balance(alice, "a")
    low_balance(alice, "b")
    with time_machine.travel(NOW, tick=False):
        assert tasks.send_notifications()["processed"] == 2
    run = JobRun.objects.get(job_name="send_notifications")
    assert (run.status, run.items_processed, run.items_failed) == ("succeeded", 2, 0)
