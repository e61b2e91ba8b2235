"""The gateway's pure parts (amounts, parsing) and its "Stripe is off" behaviour."""

from decimal import Decimal

import pytest

from billing.errors import StripeNotConfigured
from billing.models import PaymentIntentState
from billing.money import from_stripe_amount, to_stripe_amount
from billing.stripe import gateway as stripe_gateway
from billing.stripe.gateway import stripe_enabled


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("12.34"), "USD", 1234),
        (Decimal("0.01"), "eur", 1),
        (Decimal("1000000.00"), "GBP", 100000000),
        (Decimal("500"), "JPY", 500),
        (Decimal("1.23"), "KWD", 1230),
    ],
)
def test_amounts_convert_exactly_both_ways(amount, currency, minor):
    assert to_stripe_amount(amount, currency) == minor
    assert from_stripe_amount(minor, currency) == amount


@pytest.mark.parametrize(
    ("amount", "currency"),
    [(Decimal("12.345"), "USD"), (Decimal("1.5"), "JPY"), (Decimal("1.235"), "KWD")],
)
def test_amounts_that_are_not_whole_minor_units_are_refused_not_rounded(amount, currency):
    with pytest.raises(ValueError, match="minor unit|multiples"):
        to_stripe_amount(amount, currency)


def test_floats_never_reach_stripe():
    with pytest.raises(TypeError, match="Decimal"):
        to_stripe_amount(12.34, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="integers"):
        from_stripe_amount(12.0, "USD")  # type: ignore[arg-type]


def test_without_an_api_key_stripe_is_off(settings):
    settings.STRIPE_API_KEY = ""
    assert stripe_enabled() is False
    with pytest.raises(StripeNotConfigured, match="STRIPE_API_KEY"):
        stripe_gateway.list_payment_methods(stripe_customer_id="cus_x")


def test_payment_intent_state_reads_ids_whether_expanded_or_not():
    payload = {
        "id": "pi_1",
        "status": "requires_payment_method",
        "amount": 1234,
        "currency": "usd",
        "customer": {"id": "cus_1", "object": "customer"},
        "payment_method": "pm_1",
        "metadata": {"stripe_charge_id": "7"},
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
        "latest_charge": {"id": "ch_1", "amount_refunded": 34},
    }
    state = PaymentIntentState.from_stripe(payload)
    assert state.customer_id == "cus_1"
    assert state.payment_method_id == "pm_1"
    assert state.currency == "USD"
    assert state.failure_code == "insufficient_funds"
    assert state.failure_reason == "Your card has insufficient funds."
    assert state.latest_charge_id == "ch_1"
    assert state.amount_refunded == 34
    assert (
        PaymentIntentState.from_stripe({**payload, "latest_charge": "ch_1"}).amount_refunded is None
    )
