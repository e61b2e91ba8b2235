"""Celery tasks of the billing app: thin, they take ids and call a service."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from billing import stripe_services, stripe_webhooks

# Give the task enqueued on commit its chance before the sweep takes an event.
EVENT_GRACE = timedelta(seconds=30)
# A charge attempt waits up to STRIPE_TIMEOUT (with the library's own retries).
CHARGE_GRACE = timedelta(minutes=5)


@shared_task
def process_stripe_event(event_id: str) -> str:
    """Apply one stored webhook event; idempotent, so a redelivery is harmless."""
    return stripe_webhooks.process_stripe_event(event_id=event_id).status


@shared_task
def sweep_stripe() -> dict[str, int]:
    """Every minute (beat): events still waiting, charges without a definite answer,
    money effects left undone. Each part works in bounded batches."""
    return {
        "events": stripe_webhooks.retry_waiting_events(older_than=EVENT_GRACE),
        "charges": stripe_services.retry_pending_charges(older_than=CHARGE_GRACE),
        "effects": stripe_services.apply_due_effects(),
    }
