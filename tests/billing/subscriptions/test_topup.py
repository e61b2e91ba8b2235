"""Automatic top-up against localstripe: keeps a subscription alive, one charge per
crossing under a burst, back-off and pause after declines, a webhook delivered five
times credits once, daily caps and top up to target."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connections

from billing.models import StripeCharge
from billing.models.subscriptions import AutoTopUp, AutoTopUpAttempt
from billing.stripe import services as stripe_services
from billing.subscriptions import services, topup
from billing.subscriptions.errors import SubscriptionError
from tests.billing.stripe_fakes import intent_payload, post_event, stripe_event
from tests.billing.subscriptions.conftest import STAFF
from wallets import services as wallet_services
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, Notification

D = Decimal
pytestmark = pytest.mark.usefixtures("stripe_settings")


def at(*args):
    return datetime(*args, tzinfo=UTC)


def pay(customer, amount, key):
    wallet = wallet_services.open_wallet(customer=customer)
    return wallet_services.grant_credit(
        wallet=wallet, amount=D(amount), kind="paid", name=f"Payment {amount}", actor=STAFF,
        idempotency_key=key,
    )  # fmt: skip


def funds(customer):
    wallet = wallet_services.open_wallet(customer=customer)
    wallet.refresh_from_db()
    return wallet.available_funds()


def card(customer, pm="pm_card_visa", make_default=None):
    stripe_services.attach_payment_method(
        customer=customer, payment_method_id=pm, make_default=make_default
    )
    customer.refresh_from_db()
    return customer


def auto(customer, **kwargs):
    fields = {"threshold": D("35"), "amount": D("50"), "daily_max_amount": D("500")}
    return topup.configure_auto_top_up(
        wallet=wallet_services.open_wallet(customer=customer), actor=STAFF, **{**fields, **kwargs}
    )


def attempts(customer):
    return list(
        AutoTopUpAttempt.objects.filter(auto_top_up__customer=customer)
        .order_by("id")
        .values_list("outcome", "amount")
    )


@pytest.mark.django_db
def test_automatic_top_up_keeps_a_subscription_alive_across_a_period_boundary(alice, service):
    card(alice)
    tv = service("TV basic", per_period="30")
    with time_machine.travel(at(2026, 1, 1, 9), tick=False):
        pay(alice, "40", "p")
        auto(alice)
        sub = services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
        assert funds(alice) == D("60")  # 40 − 30 = 10, below 35: 50 charged to the card
    with time_machine.travel(at(2026, 2, 1, 0, 30), tick=False):
        list(services.billing_batches())
    sub.refresh_from_db()
    assert sub.status == "active" and sub.charges.count() == 2
    assert funds(alice) == D("80")  # 60 − 30 = 30, below 35 again: a new crossing
    assert attempts(alice) == [("succeeded", D("50")), ("succeeded", D("50"))]
    charges = StripeCharge.objects.filter(customer=alice, purpose="auto_top_up")
    assert [c.status for c in charges] == ["succeeded", "succeeded"]
    grants = CreditGrant.objects.filter(wallet__customer=alice, kind="top_up")
    assert {(g.status, g.funding_code) for g in grants} == {("active", "psp_clearing")}
    assert find_problems() == []


@pytest.mark.django_db(transaction=True)
def test_fifty_usage_events_landing_at_once_across_the_threshold_charge_once(alice):
    card(alice)
    pay(alice, "100", "p")
    auto(alice, threshold=D("75"), amount=D("30"))
    wallet = wallet_services.open_wallet(customer=alice)
    start = threading.Barrier(50)
    failures: list[BaseException] = []

    def usage_event(n: int) -> None:
        try:
            start.wait(timeout=30)
            wallet_services.draw_down(
                wallet=wallet.pk, amount=D("1"), actor=STAFF, idempotency_key=f"burst-{n}"
            )
            topup.check_wallet(wallet_id=wallet.pk)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=usage_event, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    topup.check_wallet(wallet_id=wallet.pk)  # the sweep afterwards changes nothing
    assert attempts(alice) == [("succeeded", D("30"))]
    assert StripeCharge.objects.filter(customer=alice).count() == 1
    assert funds(alice) == D("80")
    assert find_problems() == []


@pytest.mark.django_db
def test_a_declined_card_backs_off_then_pauses_until_the_card_is_updated(alice):
    card(alice, "pm_card_chargeCustomerFail")  # attaches, declines on charge
    pay(alice, "10", "p")
    auto(alice, threshold=D("50"), amount=D("20"), max_declines=3)
    wallet = wallet_services.open_wallet(customer=alice)
    t0 = at(2026, 3, 1, 8)

    def check(when):
        with time_machine.travel(when, tick=False):
            return topup.check_wallet(wallet_id=wallet.pk)

    assert check(t0) == "declined"
    settings = AutoTopUp.objects.get(wallet=wallet)
    assert settings.declines == 1 and settings.next_attempt_at == t0 + timedelta(hours=1)
    assert check(t0 + timedelta(minutes=59)) is None  # backing off
    assert check(t0 + timedelta(hours=1)) == "declined"
    assert check(t0 + timedelta(hours=6, minutes=59)) is None
    assert check(t0 + timedelta(hours=7)) == "declined"
    settings.refresh_from_db()
    assert settings.paused_at == t0 + timedelta(hours=7) and settings.state == "paused"
    assert "Paused after 3 declines" in settings.paused_reason
    assert check(t0 + timedelta(days=3)) is None  # paused: no more charges
    notes = Notification.objects.filter(customer=alice, kind="auto_top_up_declined")
    assert notes.count() == 3
    assert "paused until you update your card" in notes.order_by("id").last().body
    # each declined charge's pending grant was voided; the ledger is whole
    assert set(CreditGrant.objects.filter(kind="top_up").values_list("status", flat=True)) == {
        "voided"
    }

    card(alice, "pm_card_visa", make_default=True)  # a new card…
    topup.resume_auto_top_up(customer_id=alice.pk)  # …lifts the pause (portal / admin do this)
    assert check(t0 + timedelta(days=3, hours=1)) == "succeeded"
    assert [o for o, _ in attempts(alice)] == ["declined", "declined", "declined", "succeeded"]
    assert funds(alice) == D("30")
    assert find_problems() == []


@pytest.mark.django_db
def test_a_webhook_for_the_charge_delivered_five_times_credits_once(
    alice, fake_stripe, client, eager_celery, django_capture_on_commit_callbacks
):
    card(alice)
    pay(alice, "10", "p")
    auto(alice, threshold=D("50"), amount=D("20"))
    wallet = wallet_services.open_wallet(customer=alice)
    fake_stripe.fail_next("/v1/payment_intents", "error_after")  # Stripe charged; we saw a 500
    assert topup.check_wallet(wallet_id=wallet.pk) == "pending"
    charge = StripeCharge.objects.get(customer=alice)
    assert charge.status == "pending" and funds(alice) == D("10")
    assert topup.check_wallet(wallet_id=wallet.pk) is None  # in flight: no second charge

    [intent] = fake_stripe.payment_intents_for(charge.pk)
    event = stripe_event("payment_intent.succeeded", intent_payload(charge, intent_id=intent["id"]))
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            assert post_event(client, event).status_code == 200
    charge.refresh_from_db()
    assert charge.status == "succeeded"
    assert funds(alice) == D("30")
    assert CreditGrant.objects.get(kind="top_up").status == "active"
    list(topup.top_up_batches())  # the sweep records the outcome on the attempt
    assert attempts(alice) == [("succeeded", D("20"))]
    assert StripeCharge.objects.filter(customer=alice).count() == 1
    assert find_problems() == []


@pytest.mark.django_db
def test_the_daily_cap_holds_back_a_charge_and_says_so(alice):
    card(alice)
    auto(alice, threshold=D("50"), amount=D("45"), daily_max_count=1, daily_max_amount=D("100"))
    wallet = wallet_services.open_wallet(customer=alice)
    with time_machine.travel(at(2026, 5, 1, 9), tick=False):
        pay(alice, "10", "p")
        assert topup.check_wallet(wallet_id=wallet.pk) == "succeeded"  # 55
        wallet_services.draw_down(wallet=wallet.pk, amount=D("20"), actor=STAFF,
                                  idempotency_key="u1")  # fmt: skip
        assert topup.check_wallet(wallet_id=wallet.pk) is None  # a new crossing, capped
    with time_machine.travel(at(2026, 5, 2, 9), tick=False):
        assert topup.check_wallet(wallet_id=wallet.pk) == "succeeded"  # a new day
    outcomes = attempts(alice)
    assert outcomes == [("succeeded", D("45")), ("skipped_cap", D("45")), ("succeeded", D("45"))]
    capped = AutoTopUpAttempt.objects.get(outcome="skipped_cap")
    assert "Daily cap: 1 of 1 charges" in capped.reason
    assert find_problems() == []


@pytest.mark.django_db
def test_top_up_to_target_charges_the_shortfall(alice):
    card(alice)
    pay(alice, "10", "p")
    auto(alice, threshold=D("50"), amount=D("20"), target=D("100"))
    topup.check_wallet(wallet_id=wallet_services.open_wallet(customer=alice).pk)
    assert attempts(alice) == [("succeeded", D("90"))]
    assert funds(alice) == D("100")


@pytest.mark.django_db
def test_no_card_is_listed_and_bad_settings_are_refused(alice):
    pay(alice, "10", "p")
    auto(alice, threshold=D("50"), amount=D("20"))
    topup.check_wallet(wallet_id=wallet_services.open_wallet(customer=alice).pk)
    [held] = AutoTopUpAttempt.objects.all()
    assert held.outcome == "skipped_no_card" and "save a card in the portal" in held.reason
    wallet = wallet_services.open_wallet(customer=alice)
    for bad, message in [
        ({"amount": D("-5")}, "amount: between 0"),
        ({"amount": D("NaN")}, "amount: a number"),
        ({"amount": D("0.10")}, "amount: at least 0.50"),
        ({"threshold": D("1e30")}, "threshold: between 0"),
        ({"amount": D("1.001")}, "amount: at most 2 decimal places"),
        ({"target": D("10")}, "target: must be above the threshold"),
        ({"daily_max_count": 0}, "daily_max_count: between 1 and 50"),
        ({"daily_max_amount": D("5")}, "daily_max_amount: at least the amount"),
    ]:
        fields = {"threshold": D("50"), "amount": D("20"), "daily_max_amount": D("100"), **bad}
        with pytest.raises(SubscriptionError, match=message):
            topup.configure_auto_top_up(wallet=wallet, actor=STAFF, **fields)
    assert AutoTopUp.objects.get().amount == D("20")
