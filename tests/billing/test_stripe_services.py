"""Customer link, saved cards, charges and refunds against a real localstripe."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing.errors import (
    ChargeNotRefundable,
    ChargeNotRetryable,
    NoPaymentMethod,
    StripeNotConfigured,
)
from billing.models import StripeCharge, StripePaymentMethod
from billing.stripe import effects as stripe_effects
from billing.stripe import gateway as stripe_gateway
from billing.stripe import services as stripe_services

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_settings")]

Status = StripeCharge.Status


@pytest.fixture
def alice_with_visa(alice):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    alice.refresh_from_db()
    return alice


def charge(customer, amount="12.34", **kwargs) -> StripeCharge:
    return stripe_services.charge_off_session(
        customer=customer,
        amount=Decimal(amount),
        purpose=kwargs.pop("purpose", StripeCharge.Purpose.TOP_UP),
        initiated_by="test",
        **kwargs,
    )


# --- customer and cards -----------------------------------------------------------


def test_sync_creates_the_stripe_customer_once(alice):
    stripe_services.sync_stripe_customer(customer=alice)
    alice.refresh_from_db()
    first = alice.stripe_customer_id
    assert first.startswith("cus_")

    alice.name = "Alice Telecom Ltd"
    stripe_services.sync_stripe_customer(customer=alice)
    alice.refresh_from_db()
    assert alice.stripe_customer_id == first
    assert stripe_gateway.customer_exists(stripe_customer_id=first)


def test_a_customer_deleted_at_stripe_is_created_again(alice, stripe_settings):
    stripe_services.sync_stripe_customer(customer=alice)
    alice.refresh_from_db()
    old = alice.stripe_customer_id
    stripe_gateway._client().v1.customers.delete(old)

    stripe_services.sync_stripe_customer(customer=alice)
    alice.refresh_from_db()
    assert alice.stripe_customer_id not in ("", old)


def test_attach_a_test_card_makes_it_the_default(alice_with_visa):
    (card,) = alice_with_visa.stripe_payment_methods.all()
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 12, 2030)
    assert card.is_default
    assert str(card) == "visa •••• 4242 exp 12/2030"
    assert stripe_gateway.default_payment_method_id(
        stripe_customer_id=alice_with_visa.stripe_customer_id
    ) == (card.stripe_payment_method_id)


def test_choose_another_default_and_detach(alice_with_visa):
    first = alice_with_visa.stripe_payment_methods.get()
    second = stripe_services.attach_payment_method(
        customer=alice_with_visa, payment_method_id="pm_card_visa"
    )
    assert not second.is_default

    stripe_services.set_default_payment_method(payment_method=second)
    assert list(
        alice_with_visa.stripe_payment_methods.filter(is_default=True).values_list("pk", flat=True)
    ) == [second.pk]

    stripe_services.detach_payment_method(payment_method=first)
    assert list(alice_with_visa.stripe_payment_methods.all()) == [second]


# --- charges ----------------------------------------------------------------------


def test_charge_succeeds_with_the_exact_amount(alice_with_visa, fake_stripe, effects):
    result = charge(alice_with_visa, "12.34", description="10 credits")

    assert result.status == Status.SUCCEEDED
    assert result.payment_intent_id.startswith("pi_")
    assert result.amount == Decimal("12.34")
    assert result.attempts == 1
    assert result.effects_applied_at is not None
    (intent,) = fake_stripe.payment_intents_for(result.pk)
    assert (intent["amount"], intent["currency"], intent["status"]) == (1234, "usd", "succeeded")
    assert intent["customer"] == alice_with_visa.stripe_customer_id
    assert fake_stripe.requests_with_key(f"charge-{result.pk}")
    assert effects == [("succeeded", result.pk)]


def test_declined_card_gives_a_failed_charge_with_stripes_reason(alice, effects):
    stripe_services.attach_payment_method(
        customer=alice, payment_method_id="pm_card_chargeCustomerFail"
    )  # 4000000000000341: attaches fine, declines on charge
    alice.refresh_from_db()

    result = charge(alice, "20.00")

    assert result.status == Status.FAILED
    assert result.failure_code == "card_declined"
    assert result.failure_reason == "Your card was declined."
    assert result.last_error == ""
    assert effects == [("failed", result.pk)]
    with pytest.raises(ChargeNotRetryable, match="declined"):
        stripe_services.retry_charge(charge=result)


def test_a_card_that_needs_authentication_fails_and_its_intent_is_canceled(alice, stripe_settings):
    client = stripe_gateway._client()
    method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4000002500003155", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    stripe_services.attach_payment_method(customer=alice, payment_method_id=method.id)
    alice.refresh_from_db()

    result = charge(alice)

    assert result.status == Status.FAILED
    assert "authenticate" in result.failure_reason
    intent = stripe_gateway.retrieve_payment_intent(payment_intent_id=result.payment_intent_id)
    assert intent.status == "canceled"


def test_a_5xx_leaves_the_charge_pending_and_a_retry_charges_once(
    alice_with_visa, fake_stripe, effects
):
    fake_stripe.fail_next("/v1/payment_intents", "error_before")

    result = charge(alice_with_visa)
    assert result.status == Status.PENDING
    assert "Stripe failed (500)" in result.last_error
    assert effects == []

    retried = stripe_services.retry_charge(charge=result)
    assert retried.status == Status.SUCCEEDED
    assert retried.last_error == ""
    assert retried.attempts == 2
    assert len(fake_stripe.payment_intents_for(result.pk)) == 1
    assert effects == [("succeeded", result.pk)]


def test_an_answer_lost_after_stripe_charged_is_recovered_by_the_same_key(
    alice_with_visa, fake_stripe, effects
):
    fake_stripe.fail_next("/v1/payment_intents", "error_after")  # Stripe charged, we saw a 500

    result = charge(alice_with_visa)
    assert result.status == Status.PENDING
    assert len(fake_stripe.payment_intents_for(result.pk)) == 1

    retried = stripe_services.retry_charge(charge=result)
    assert retried.status == Status.SUCCEEDED
    (intent,) = fake_stripe.payment_intents_for(result.pk)  # still one: not charged twice
    assert retried.payment_intent_id == intent["id"]
    keys = fake_stripe.requests_with_key(f"charge-{result.pk}")
    assert len(keys) == 2  # both attempts sent the same idempotency key
    assert effects == [("succeeded", result.pk)]


def test_a_timeout_leaves_the_charge_pending_and_safe_to_retry(
    alice_with_visa, fake_stripe, stripe_settings
):
    stripe_settings.STRIPE_TIMEOUT = 0.5
    fake_stripe.fail_next("/v1/payment_intents", "delay_after", delay=2)

    result = charge(alice_with_visa)
    assert result.status == Status.PENDING
    assert "No answer from Stripe" in result.last_error

    retried = stripe_services.retry_charge(charge=result)
    assert retried.status == Status.SUCCEEDED
    assert len(fake_stripe.payment_intents_for(result.pk)) == 1


def test_the_sweep_retries_pending_charges_after_a_while(alice_with_visa, fake_stripe):
    fake_stripe.fail_next("/v1/payment_intents", "error_before")
    result = charge(alice_with_visa)
    assert stripe_services.retry_pending_charges(older_than=timedelta(minutes=5)) == 0

    with time_machine.travel(timezone.now() + timedelta(minutes=6), tick=False):
        assert stripe_services.retry_pending_charges(older_than=timedelta(minutes=5)) == 1
    result.refresh_from_db()
    assert result.status == Status.SUCCEEDED


def test_no_retry_once_stripe_may_have_forgotten_the_idempotency_key(alice_with_visa, fake_stripe):
    fake_stripe.fail_next("/v1/payment_intents", "error_before")
    result = charge(alice_with_visa)

    with time_machine.travel(timezone.now() + timedelta(hours=24), tick=False):
        with pytest.raises(ChargeNotRetryable, match="idempotency key"):
            stripe_services.retry_charge(charge=result)
        assert stripe_services.retry_pending_charges(older_than=timedelta(minutes=5)) == 0
    assert len(fake_stripe.payment_intents_for(result.pk)) == 0


def test_nothing_is_recorded_without_a_card_or_with_an_inexact_amount(alice, bob_with_stripe):
    with pytest.raises(NoPaymentMethod, match="not linked to Stripe"):
        charge(alice)
    with pytest.raises(NoPaymentMethod, match="no default card"):
        charge(bob_with_stripe)
    with pytest.raises(ValueError, match="minor unit"):
        charge(bob_with_stripe, "1.001")
    assert not StripeCharge.objects.exists()


@pytest.fixture
def bob_with_stripe(bob):
    stripe_services.sync_stripe_customer(customer=bob)
    bob.refresh_from_db()
    return bob


def test_charging_needs_stripe_configured(alice_with_visa, settings):
    settings.STRIPE_API_KEY = ""
    with pytest.raises(StripeNotConfigured):
        charge(alice_with_visa)
    assert not StripeCharge.objects.exists()


def test_a_grant_charge_needs_its_grant_id(alice_with_visa):
    with pytest.raises(ValueError, match="grant's id"):
        charge(alice_with_visa, purpose=StripeCharge.Purpose.GRANT)


# --- refunds ----------------------------------------------------------------------


def test_refund_partially_then_the_rest(alice_with_visa, effects):
    paid = charge(alice_with_visa, "12.34")

    partly = stripe_services.refund_charge(charge=paid, amount=Decimal("2.34"), initiated_by="ops")
    assert partly.status == Status.PARTIALLY_REFUNDED
    assert partly.refunded_amount == Decimal("2.34")
    assert partly.refunded_by == "ops"

    fully = stripe_services.refund_charge(charge=partly, initiated_by="ops")
    assert fully.status == Status.REFUNDED
    assert fully.refunded_amount == Decimal("12.34")
    intent = stripe_gateway.retrieve_payment_intent(payment_intent_id=paid.payment_intent_id)
    assert intent.amount_refunded == 1234
    assert effects.count(("refunded", paid.pk)) == 2  # once per new refunded total

    with pytest.raises(ChargeNotRefundable, match="nothing to refund"):
        stripe_services.refund_charge(charge=fully, initiated_by="ops")


def test_refund_more_than_is_left_is_refused(alice_with_visa):
    paid = charge(alice_with_visa, "5.00")
    with pytest.raises(ChargeNotRefundable, match="5.00 USD left"):
        stripe_services.refund_charge(charge=paid, amount=Decimal("5.01"), initiated_by="ops")


# --- money effects ----------------------------------------------------------------


def test_a_failed_effect_is_recorded_and_applied_later_once(alice_with_visa, monkeypatch):
    calls = []

    def wallets_down(charge):
        raise RuntimeError("wallets is down")

    monkeypatch.setattr(stripe_effects, "on_charge_succeeded", wallets_down)
    paid = charge(alice_with_visa)
    assert paid.status == Status.SUCCEEDED
    assert paid.effects_applied_at is None
    assert paid.effects_error == "RuntimeError: wallets is down"
    assert list(StripeCharge.objects.effects_due()) == [paid]

    monkeypatch.setattr(stripe_effects, "on_charge_succeeded", lambda c: calls.append(c.pk))
    assert stripe_services.apply_due_effects() == 1
    assert stripe_services.apply_due_effects() == 0
    paid.refresh_from_db()
    assert paid.effects_applied_at is not None and paid.effects_error == ""
    assert calls == [paid.pk]


def test_cards_and_payment_method_rows_follow_stripe(alice_with_visa):
    pm = StripePaymentMethod.objects.get(customer=alice_with_visa)
    stripe_gateway.detach_payment_method(payment_method_id=pm.stripe_payment_method_id)
    assert stripe_services.sync_payment_methods(customer=alice_with_visa) == []
