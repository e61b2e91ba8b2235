"""Celery tasks of the wallets app: thin, each runs a service as a registered job
(jobs.registry) through jobs.runner.run_job (JobRun record, advisory lock, batches).
`batch_size` overrides the registry's default, for tests and one-off runs."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from jobs.runner import run_job, summary
from wallets import notifications, recurring, services


@shared_task
def expire_grants(
    batch_size: int | None = None, connections: int | None = None
) -> dict[str, int | str]:
    """`connections`: partitions swept at once (default settings.EXPIRY_SWEEP_CONNECTIONS)."""
    parts = connections or settings.EXPIRY_SWEEP_CONNECTIONS
    run = run_job(
        "expire_grants",
        lambda size: services.expire_due_grant_batches(batch_size=size, connections=parts),
        batch_size=batch_size,
    )
    return summary(run)


@shared_task
def issue_recurring_grants(batch_size: int | None = None) -> dict[str, int | str]:
    run = run_job(
        "issue_recurring_grants",
        lambda size: recurring.issue_recurring_grant_batches(batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)


@shared_task
def send_notifications(batch_size: int | None = None) -> dict[str, int | str]:
    run = run_job(
        "send_notifications",
        lambda size: notifications.send_due_notification_batches(batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)


@shared_task
def settle_debts(batch_size: int | None = None) -> dict[str, int | str]:
    run = run_job(
        "settle_debts",
        lambda size: services.settle_effective_credit_batches(batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)


@shared_task
def revert_temporary_limits(batch_size: int | None = None) -> dict[str, int | str]:
    from wallets.services import credit_limits as limits

    run = run_job(
        "revert_temporary_limits",
        lambda size: limits.revert_lapsed_increase_batches(batch_size=size),
        batch_size=batch_size,
    )
    return summary(run)
