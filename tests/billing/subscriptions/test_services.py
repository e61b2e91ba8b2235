"""Prepaid subscriptions: the CRM.COM lifecycle, billing once per period, catch-up,
deactivation and reactivation, staff status changes."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine

from billing.models.subscriptions import PrepaidSubscription, SubscriptionCharge
from billing.subscriptions import services, tasks
from billing.subscriptions.errors import SubscriptionError
from jobs.models import JobRun
from tests.billing.subscriptions.conftest import STAFF
from wallets import services as wallet_services
from wallets.ledger_check import find_problems
from wallets.models import LedgerTransaction, Notification

D = Decimal
pytestmark = pytest.mark.django_db


def at(*args):
    return datetime(*args, tzinfo=UTC)


def pay(customer, amount, key, kind="paid"):
    wallet = wallet_services.open_wallet(customer=customer)
    return wallet_services.grant_credit(
        wallet=wallet, amount=D(amount), kind=kind, name=f"Payment {amount}", actor=STAFF,
        idempotency_key=key,
    )  # fmt: skip


def funds(customer):
    wallet = wallet_services.open_wallet(customer=customer)
    wallet.refresh_from_db()
    return wallet.available_funds()


def run_job(when):
    with time_machine.travel(when, tick=False):
        return list(services.billing_batches(batch_size=10))


def test_the_seed_lifecycle_register_bill_deactivate_pay_reactivate(
    alice, service, eager_celery, django_capture_on_commit_callbacks
):
    """register (30.00 monthly, wallet 40.00) → billed (10.00 left) → next period cannot
    be covered → deactivated, customer notified → payment of 25.00 → reactivated and
    billed (5.00 left)."""
    tv = service("TV basic", per_period="30")
    with time_machine.travel(at(2026, 1, 1, 9), tick=False):
        pay(alice, "40", "seed-1")
        sub = services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
        assert sub.status == "active" and sub.wallet.customer == alice
        assert funds(alice) == D("10")
        assert sub.next_period_start == date(2026, 2, 1)

    run_job(at(2026, 1, 20))  # same period: nothing more
    assert funds(alice) == D("10")

    run_job(at(2026, 2, 1, 0, 5))
    sub.refresh_from_db()
    assert (sub.status, sub.hold) == ("deactivated", "funds")
    assert (
        "cannot pay 30.00 USD for 2026-02-01 – 2026-02-28: 10.00 USD available" in sub.status_reason
    )
    note = Notification.objects.get(customer=alice, kind="subscription_deactivated")
    assert note.subject == "Your subscription TV is deactivated"
    assert funds(alice) == D("10")  # nothing billed while on hold

    with time_machine.travel(at(2026, 2, 3, 12), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            pay(alice, "25", "seed-2")  # the credit enqueues the reactivation on commit
    sub.refresh_from_db()
    assert sub.status == "active" and sub.hold == ""
    assert funds(alice) == D("5")
    assert sub.next_period_start == date(2026, 3, 1)
    charges = list(sub.charges.order_by("period_start").values_list("period_start", "amount"))
    assert charges == [(date(2026, 1, 1), D("30")), (date(2026, 2, 1), D("30"))]
    history = list(sub.status_changes.order_by("id").values_list("old_status", "new_status"))
    assert history == [("", "active"), ("active", "deactivated"), ("deactivated", "active")]
    assert Notification.objects.filter(customer=alice, kind="subscription_reactivated").count() == 1
    # each debit is one usage transaction linked to the subscription and its period
    tx = SubscriptionCharge.objects.get(subscription=sub, period_start=date(2026, 2, 1)).transaction
    assert tx.idempotency_key == f"subscription:{sub.pk}:2026-02-01"
    assert tx.metadata["subscription"] == sub.pk and tx.amount == D("30")
    assert find_problems() == []


def test_the_job_reactivates_when_the_after_credit_task_was_lost(alice, service):
    tv = service("TV basic", per_period="30")
    with time_machine.travel(at(2026, 1, 1), tick=False):
        sub = services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
    sub.refresh_from_db()
    assert (sub.status, sub.hold) == ("deactivated", "funds")  # an empty wallet from the start
    with time_machine.travel(at(2026, 1, 10), tick=False):
        pay(alice, "31", "late")  # no on-commit callbacks run here: the task is "lost"
    sub.refresh_from_db()
    assert sub.status == "deactivated"
    [batch] = run_job(at(2026, 1, 10, 1))
    sub.refresh_from_db()
    assert sub.status == "active" and batch.billed == 1
    assert funds(alice) == D("1")
    assert list(sub.charges.values_list("period_start", flat=True)) == [date(2026, 1, 1)]
    assert find_problems() == []


def test_missed_periods_are_billed_in_order_and_running_twice_bills_once(alice, service):
    tv = service("TV basic", per_period="10", per_day="0.5")
    with time_machine.travel(at(2026, 1, 15), tick=False):
        pay(alice, "500", "plenty")
        sub = services.register_subscription(
            customer=alice, name="TV", services=[tv], actor=STAFF, anchor_day=1
        )
    # first period from the 15th: 10 + 17 days × 0.5
    assert sub.charges.get().amount == D("18.5")
    run_job(at(2026, 4, 2))  # the job was down for February, March and April
    run_job(at(2026, 4, 2, 1))  # and runs twice
    periods = list(sub.charges.order_by("period_start").values_list("period_start", "amount"))
    assert periods == [
        (date(2026, 1, 15), D("18.5")),
        (date(2026, 2, 1), D("24")),
        (date(2026, 3, 1), D("25.5")),
        (date(2026, 4, 1), D("25")),
    ]
    keys = LedgerTransaction.objects.filter(
        idempotency_key__startswith=f"subscription:{sub.pk}:"
    ).count()
    assert keys == 4
    assert funds(alice) == D("500") - D("93")
    assert find_problems() == []


def test_the_registered_job_runs_and_records_its_run(alice, service):
    tv = service("TV basic", per_period="5")
    with time_machine.travel(at(2026, 1, 1), tick=False):
        pay(alice, "100", "p")
        services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
    with time_machine.travel(at(2026, 2, 1, 0, 30), tick=False):
        tasks.bill_subscriptions()
        tasks.bill_subscriptions()
    runs = list(JobRun.objects.filter(job_name="bill_subscriptions").order_by("id"))
    assert [(r.status, r.items_processed) for r in runs] == [("succeeded", 1), ("succeeded", 0)]
    assert funds(alice) == D("90")


def test_staff_deactivation_is_not_undone_by_funds_and_needs_a_reason(alice, service):
    tv = service("TV basic", per_period="10")
    with time_machine.travel(at(2026, 1, 1), tick=False):
        pay(alice, "100", "p")
        sub = services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
    with pytest.raises(SubscriptionError, match="reason: say why"):
        services.deactivate_subscription(subscription=sub, reason="  ", actor=STAFF)
    with pytest.raises(SubscriptionError, match="printable"):
        services.deactivate_subscription(subscription=sub, reason="bad\x00", actor=STAFF)
    services.deactivate_subscription(subscription=sub, reason="Moving house", actor=STAFF)
    run_job(at(2026, 3, 5))
    sub.refresh_from_db()
    assert (sub.status, sub.hold, sub.status_reason) == ("deactivated", "staff", "Moving house")
    assert sub.charges.count() == 1  # on hold: February and March not billed

    with time_machine.travel(at(2026, 3, 5, 10), tick=False):
        services.reactivate_subscription(subscription=sub, reason="Back home", actor=STAFF)
    sub.refresh_from_db()
    assert sub.status == "active" and sub.next_period_start == date(2026, 4, 1)
    assert list(sub.charges.order_by("period_start").values_list("period_start", flat=True)) == [
        date(2026, 1, 1), date(2026, 3, 1),
    ]  # fmt: skip
    with pytest.raises(SubscriptionError, match="only a deactivated one"):
        services.reactivate_subscription(subscription=sub, reason="again", actor=STAFF)
    services.cancel_subscription(subscription=sub, reason="Contract ended", actor=STAFF)
    run_job(at(2026, 6, 1))
    assert sub.charges.count() == 2
    assert find_problems() == []


def test_staff_reactivation_is_refused_when_the_wallet_cannot_pay(alice, service):
    tv = service("TV basic", per_period="10")
    with time_machine.travel(at(2026, 1, 1), tick=False):
        pay(alice, "12", "p")
        sub = services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
        services.deactivate_subscription(subscription=sub, reason="Paused", actor=STAFF)
    with time_machine.travel(at(2026, 2, 2), tick=False):
        with pytest.raises(SubscriptionError, match="cannot pay 10.00 USD"):
            services.reactivate_subscription(subscription=sub, reason="Back", actor=STAFF)
    sub.refresh_from_db()
    assert sub.status == "deactivated" and sub.charges.count() == 1
    assert find_problems() == []


def test_registration_refuses_services_without_a_rate_in_the_currency(alice, service):
    eur_only = service("Radio", per_period="3", currency="EUR")
    with pytest.raises(SubscriptionError, match="services: Radio has no rate in USD"):
        services.register_subscription(customer=alice, name="R", services=[eur_only], actor=STAFF)
    with pytest.raises(SubscriptionError, match="anchor_day"):
        services.register_subscription(
            customer=alice, name="R", services=[eur_only], actor=STAFF, anchor_day=31
        )
    with pytest.raises(SubscriptionError, match="services: choose at least one"):
        services.register_subscription(customer=alice, name="R", services=[], actor=STAFF)
    assert not PrepaidSubscription.objects.exists()


def test_a_refill_card_credit_reactivates_like_any_other_credit(
    alice, service, eager_celery, django_capture_on_commit_callbacks
):
    """Refill-card redemption books a `refill_card` grant through wallets.services
    (refillcards.services.redeem_card on its branch): the same after-credit path."""
    tv = service("TV basic", per_period="30")
    with time_machine.travel(at(2026, 1, 1), tick=False):
        sub = services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
    with time_machine.travel(at(2026, 1, 5), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            pay(alice, "30", "voucher-1", kind="refill_card")
    sub.refresh_from_db()
    assert sub.status == "active" and funds(alice) == D("0")
    assert find_problems() == []
