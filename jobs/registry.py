"""Every scheduled job, in one place.

A job is a Celery task (in the app that owns its data, thin: it calls a service
through `jobs.runner.run_job`) plus one entry here. `migrate` and
`manage.py install_schedules` install each entry's default beat schedule as a
django-celery-beat PeriodicTask named `title`; from then on staff own the
schedule in the admin (Periodic tasks), and the "Jobs health" page watches it.

Task paths are strings: this module imports no app of ours, so every app may
use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Job:
    name: str  # JobRun.job_name and the advisory lock's key
    task: str  # dotted path of the Celery task
    every: timedelta  # default interval between runs
    title: str  # the PeriodicTask's name in the admin
    description: str
    batch_size: int = 1000  # items per batch; each batch is one database transaction
    # A run stops starting new batches after this long; the next run continues.
    # Well below CELERY_TASK_TIME_LIMIT and the broker's visibility timeout.
    time_budget: timedelta = timedelta(minutes=10)

    @property
    def lock_name(self) -> str:
        return f"job:{self.name}"


JOBS: tuple[Job, ...] = (
    Job(
        name="expire_grants",
        task="wallets.tasks.expire_grants",
        every=timedelta(minutes=5),
        title="Expire due credit grants (breakage)",
        description=(
            "Books the remainder of every grant past its expiry date to breakage and "
            "lowers the wallet balance: one expiry transaction per grant, set-based "
            "batches, idempotency key expire:grant:<id>."
        ),
        batch_size=2000,
    ),
    Job(
        name="settle_debts",
        task="wallets.tasks.settle_debts",
        every=timedelta(minutes=5),
        title="Settle debt from credit now in force",
        description=(
            "Credit that was not yet effective when it was granted pays no debt at once; "
            "once it is in force this job pays each owing wallet's debt from its "
            "unrestricted credit (settle_debt, key settle:in-force:<wallet>:<last tx>)."
        ),
        batch_size=200,
    ),
    Job(
        name="issue_recurring_grants",
        task="wallets.tasks.issue_recurring_grants",
        every=timedelta(hours=1),
        title="Issue recurring credit grants",
        description=(
            "Issues each active recurring grant rule's grant once per billing period "
            "(idempotency key recurring:<rule>:<period start>), catching up missed periods."
        ),
        batch_size=100,
    ),
    Job(
        name="revert_temporary_limits",
        task="wallets.tasks.revert_temporary_limits",
        every=timedelta(minutes=1),
        title="Revert temporary credit-limit increases at Valid Until",
        description=(
            "The effective limit already drops at Valid Until (read time); this records "
            "each lapsed increase in the credit limit history at its Valid Until, queues "
            "the warnings the lapse crossed and tells the customer (key "
            "revert:<wallet>:<valid until>: once per increase)."
        ),
        batch_size=200,
    ),
    Job(
        name="send_notifications",
        task="wallets.tasks.send_notifications",
        every=timedelta(minutes=1),
        title="Send queued notifications",
        description=(
            "Emails queued notifications from the outbox; failures are retried with "
            "exponential backoff, then marked failed."
        ),
        batch_size=100,
    ),
    Job(
        name="stripe_sweep",
        task="billing.tasks.sweep_stripe",
        every=timedelta(minutes=1),
        # the name the Stripe migration (billing 0004) installed it under
        title="Stripe: retry waiting webhooks, pending charges and money effects",
        description=(
            "Webhook events still waiting, charges without a definite answer, money "
            "effects left undone."
        ),
        batch_size=100,
    ),
    Job(
        name="close_billing_periods",
        task="billing.tasks.close_billing_periods",
        every=timedelta(hours=1),
        title="Close billing periods into usage invoices",
        description=(
            "Issues a usage invoice for every complete billing period with uninvoiced usage "
            "(a line per product item, prepaid credits applied, amount due), oldest first."
        ),
        batch_size=200,
    ),
    Job(
        name="bill_subscriptions",
        task="billing.subscriptions.tasks.bill_subscriptions",
        every=timedelta(hours=1),
        title="Bill prepaid subscriptions",
        description=(
            "Debits each active prepaid subscription's upcoming period from its wallet (one "
            "debit per subscription and period, key subscription:<id>:<period start>), "
            "catching up missed periods in order; deactivates those whose wallet cannot pay "
            "and reactivates (and bills) those on hold whose wallet now can."
        ),
        batch_size=100,
    ),
    Job(
        name="auto_top_up",
        task="billing.subscriptions.tasks.auto_top_up",
        every=timedelta(minutes=5),
        title="Automatic top-up of wallets below their threshold",
        description=(
            "Charges the saved card of each wallet whose available funds fell below its "
            "automatic top-up threshold: one charge per crossing, none while one is in "
            "flight, daily caps, back-off after declines (1 h, 6 h, 24 h), pause after N."
        ),
        batch_size=100,
    ),
    Job(
        name="expire_refill_cards",
        task="refillcards.tasks.expire_cards",
        every=timedelta(minutes=5),
        title="Expire refill cards past their valid until",
        description=(
            "Marks active refill cards whose valid until has passed as expired (a "
            "conditional UPDATE per batch; redemption also refuses them on its own)."
        ),
        batch_size=5000,
    ),
    Job(
        name="prune_job_runs",
        task="jobs.tasks.prune_job_runs",
        every=timedelta(days=1),
        title="Prune old job runs",
        description="Deletes job runs older than 30 days (the last success of each job stays).",
        batch_size=5000,
    ),
)

_BY_NAME = {job.name: job for job in JOBS}


def get(name: str) -> Job:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no job named {name!r} in jobs.registry.JOBS") from None
