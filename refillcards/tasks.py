"""Celery tasks of the refill cards app: thin, each calls a service."""

from __future__ import annotations

from celery import shared_task

from jobs.runner import run_job, summary
from refillcards import services


@shared_task
def generate_series(series_id: int, batch_size: int | None = None) -> int:
    """Generate the rest of a large series, one batch per transaction. Safe to run
    twice or after a crash: it carries on from the cards already stored."""
    return services.generate_all(series_id, batch_size=batch_size)


@shared_task
def expire_cards(batch_size: int | None = None) -> dict[str, int | str]:
    run = run_job(
        "expire_refill_cards",
        lambda size: services.expire_due_card_batches(batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)
