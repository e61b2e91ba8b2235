"""Celery tasks of the billing app: thin, they take ids and call a service."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from celery import shared_task

from billing.stripe import services as stripe_services
from billing.stripe import webhooks as stripe_webhooks
from jobs.runner import Batch, run_job

logger = logging.getLogger(__name__)

# Give the task enqueued on commit its chance before the sweep takes an event.
EVENT_GRACE = timedelta(seconds=30)
# A charge attempt waits up to STRIPE_TIMEOUT (with the library's own retries).
CHARGE_GRACE = timedelta(minutes=5)


@shared_task
def process_stripe_event(event_id: str) -> str:
    """Apply one stored webhook event; idempotent, so a redelivery is harmless."""
    return stripe_webhooks.process_stripe_event(event_id=event_id).status


def enqueue_stripe_event(event_id: str) -> None:
    """Hand a stored event to a worker. A broker that is down is logged, not raised:
    the event is already stored, and the sweep processes it after EVENT_GRACE."""
    try:
        process_stripe_event.delay(event_id)
    except Exception:
        logger.exception("Could not enqueue Stripe event %s; the sweep will take it", event_id)


@shared_task
def sweep_stripe() -> dict[str, int]:
    """Every minute (beat; job "stripe_sweep" in jobs.registry): events still waiting,
    charges without a definite answer, money effects left undone. Each part works in
    bounded batches. Returns the counts (all zero when another run was going)."""
    counts = {"events": 0, "charges": 0, "effects": 0}

    def work(batch_size: int) -> Iterator[Batch]:
        counts["events"] = stripe_webhooks.retry_waiting_events(older_than=EVENT_GRACE)
        yield Batch(processed=counts["events"])
        counts["charges"] = stripe_services.retry_pending_charges(older_than=CHARGE_GRACE)
        yield Batch(processed=counts["charges"])
        counts["effects"] = stripe_services.apply_due_effects()
        yield Batch(processed=counts["effects"])

    run_job("stripe_sweep", work)
    return counts


@shared_task
def close_billing_periods(batch_size: int | None = None) -> dict[str, int | str]:
    """Hourly (job "close_billing_periods"): usage invoices for complete periods."""
    from billing.usage.invoicing import close_due_period_batches
    from jobs.runner import summary
    from wallets.actors import Actor

    actor = Actor.job("close_billing_periods")
    run = run_job(
        "close_billing_periods",
        lambda size: close_due_period_batches(actor=actor, batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)
