"""The billing job killed halfway (SIGKILL of the process running it) and run again
bills every subscription exactly once for each period."""

import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models.subscriptions import PrepaidSubscription, SubscriptionCharge
from billing.periods import add_months
from billing.subscriptions import services
from tests.billing.subscriptions.conftest import STAFF
from tests.celery_processes import Processes, subprocess_env, wait_for
from tests.factories import CustomerFactory
from wallets import services as wallet_services
from wallets.ledger_check import find_problems
from wallets.models import LedgerTransaction

SUBSCRIPTIONS = 120
PERIODS = 4  # each is 3 periods behind plus the current one
BATCH = 5  # subscriptions per batch (one transaction): 20 charges per batch

RUN_JOB = (
    "import django; django.setup(); "
    "from billing.subscriptions import tasks; "
    f"print(tasks.bill_subscriptions(batch_size={BATCH}), flush=True)"
)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_billing_run_killed_halfway_and_rerun_bills_each_period_once(tmp_path, service):
    tv = service("TV basic", per_period="2.5")
    today = timezone.localdate()
    start = add_months(today.replace(day=1), -(PERIODS - 1))
    for n in range(SUBSCRIPTIONS):
        customer = CustomerFactory(name=f"Subscriber {n}")
        wallet = wallet_services.open_wallet(customer=customer)
        wallet_services.grant_credit(
            wallet=wallet, amount=Decimal("100"), kind="paid", name="Credits", actor=STAFF,
            idempotency_key=f"kill-{n}", effective_at=timezone.now() - timedelta(days=200),
        )  # fmt: skip
        sub = PrepaidSubscription.objects.create(
            customer=customer, wallet=wallet, name=f"TV {n}", anchor_day=1, starts_on=start,
            next_period_start=start, created_by="tests",
        )  # fmt: skip
        sub.services.set([tv])
    expected = SUBSCRIPTIONS * PERIODS

    processes = Processes(tmp_path)
    try:
        job, log = processes._start("billing", [sys.executable, "-c", RUN_JOB], subprocess_env())
        at_kill = wait_for(
            lambda: (n := SubscriptionCharge.objects.count()) >= 10 * BATCH * PERIODS and n,
            timeout=60, every=0.01,
            message=lambda: f"no charges were billed:\n{log.read_text()[-3000:]}",
        )  # fmt: skip
        processes.kill(job)
    finally:
        processes.stop_all()
    after_kill = SubscriptionCharge.objects.count()
    assert at_kill <= after_kill < expected, "the run finished before the kill"
    assert after_kill % (BATCH * PERIODS) == 0  # whole batches only
    assert find_problems() == []  # the half-done run is a consistent ledger

    list(services.billing_batches(batch_size=BATCH))  # the rerun
    list(services.billing_batches(batch_size=BATCH))  # and once more: nothing to do
    assert SubscriptionCharge.objects.count() == expected
    per_sub = set(
        PrepaidSubscription.objects.values_list("charges__period_start", "id").order_by().distinct()
    )
    assert len(per_sub) == expected
    debits = LedgerTransaction.objects.filter(idempotency_key__startswith="subscription:")
    assert debits.count() == expected
    assert {
        w for w in PrepaidSubscription.objects.values_list("wallet__credit_balance", flat=True)
    } == {Decimal("100") - PERIODS * Decimal("2.5")}
    assert find_problems() == []
