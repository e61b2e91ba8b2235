"""Celery tasks of prepaid subscriptions and auto top-up: thin, they take ids and
call a service (the scheduled ones through jobs.runner.run_job)."""

from __future__ import annotations

from celery import shared_task

from billing.subscriptions import services, topup
from jobs.runner import run_job, summary


@shared_task
def bill_subscriptions(batch_size: int | None = None) -> dict[str, int | str]:
    run = run_job(
        "bill_subscriptions",
        lambda size: services.billing_batches(batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)


@shared_task
def auto_top_up(batch_size: int | None = None) -> dict[str, int | str]:
    run = run_job(
        "auto_top_up", lambda size: topup.top_up_batches(batch_size=size), batch_size=batch_size
    )
    return summary(run)


@shared_task
def reactivate_wallet(wallet_id: int) -> int:
    """Right after a credit to the wallet (enqueued on commit): its subscriptions on
    hold for funds that it can now pay are reactivated and billed."""
    return services.reactivate_funded(wallet_ids=[wallet_id]).billed
