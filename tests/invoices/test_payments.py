"""Payments: recorded by staff or by the card flows, on the balance at once as
on-account credit; idempotent; refused inputs change nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from invoices.errors import InvoiceError
from invoices.models import Payment
from invoices.services import record_payment
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, Wallet

D = Decimal
STAFF = Actor.system("tests")
pytestmark = pytest.mark.django_db


def pay(customer, amount="100.00", key="p1", **kwargs):
    kwargs.setdefault("currency", customer.currency)
    kwargs.setdefault("method", Payment.Method.BANK_TRANSFER)
    return record_payment(
        customer=customer, amount=amount, actor=STAFF, idempotency_key=key, **kwargs
    )


def wallet_of(customer):
    return Wallet.objects.get(customer=customer, currency=customer.currency)


def test_a_payment_is_on_the_balance_at_once_as_unallocated_credit(alice):
    payment = pay(alice, "100.00", reference="BANK-42", comment="wire from Alice Ltd")
    assert payment.amount == D("100.00")
    assert payment.unallocated == D("100.00")
    assert payment.allocated == D("0")
    assert payment.received_on == timezone.localdate()
    grant = payment.credit_grant
    assert grant.kind == CreditGrant.Kind.PAYMENT_ON_ACCOUNT
    assert grant.amount == D("100") and grant.remaining == D("100")
    assert grant.source_type == "payment" and grant.source_id == str(payment.pk)
    assert wallet_of(alice).credit_balance == D("100")
    assert Payment.objects.unallocated().filter(customer=alice).count() == 1
    assert find_problems() == []


def test_a_payment_settles_debt_first(charlie):
    wallet = wallet_services.open_wallet(customer=charlie)
    wallet_services.change_permanent_limit(
        wallet=wallet, limit=D("500"), actor=STAFF, reason="test"
    )
    from wallets.services import draw_down

    draw_down(wallet=wallet, amount=D("30"), actor=STAFF, idempotency_key="use1")
    assert wallet_of(charlie).debt == D("30")
    pay(charlie, "100.00", method=Payment.Method.CASH)
    wallet = wallet_of(charlie)
    assert wallet.debt == D("0")
    assert wallet.credit_balance == D("70")
    assert find_problems() == []


def test_a_card_payment_is_funded_from_card_clearing(alice):
    payment = pay(alice, "25.50", method=Payment.Method.CARD)
    assert payment.credit_grant.funding_code == "psp_clearing"


def test_the_same_key_returns_the_same_payment_once(alice):
    first = pay(alice, "100.00", key="same")
    again = pay(alice, "100.00", key="same")
    assert again.pk == first.pk
    assert Payment.objects.count() == 1
    assert wallet_of(alice).credit_balance == D("100")


def test_the_same_key_for_another_payment_is_refused(alice):
    pay(alice, "100.00", key="same")
    with pytest.raises(InvoiceError, match="already used for another payment"):
        pay(alice, "90.00", key="same")
    assert Payment.objects.count() == 1


def test_a_flow_that_booked_its_own_credit_passes_its_grant(alice):
    wallet = wallet_services.open_wallet(customer=alice)
    card_grant = wallet_services.grant_credit(
        wallet=wallet, amount=D("20"), kind="refill_card", name="Card 0001", actor=STAFF,
        idempotency_key="card-1",
    )  # fmt: skip
    payment = pay(alice, "20.00", method=Payment.Method.REFILL_CARD, reference="0001",
                  credit_grant=card_grant)  # fmt: skip
    assert payment.credit_grant == card_grant
    assert wallet_of(alice).credit_balance == D("20")  # not booked twice
    assert CreditGrant.objects.count() == 1
    with pytest.raises(InvoiceError, match="credit_grant must be"):
        pay(alice, "21.00", key="p2", method=Payment.Method.REFILL_CARD, credit_grant=card_grant)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", "-5", "greater than zero"),
        ("amount", "0", "greater than zero"),
        ("amount", "1e30", "too large"),
        ("amount", "12.345", "more than 2 decimal places"),
        ("amount", "NaN", "finite"),
        ("amount", "ten", "must be a number"),
        ("amount", 10.5, "not a float"),
        ("currency", "EUR", "not one of"),
        ("currency", "", "not one of"),
        ("method", "cheque", "method must be one of"),
        ("reference", "a\x00b", "NUL"),
        ("reference", "x" * 201, "too long"),
        ("comment", "y" * 1001, "too long"),
        ("received_on", "2026-01-01", "must be a date"),
        ("received_on", timezone.localdate() + timedelta(days=2), "in the future"),
        ("idempotency_key", "", "idempotency_key is required"),
    ],
)
def test_refused_inputs_change_nothing_and_say_why(alice, field, value, message):
    kwargs = {"amount": "100.00", "key": "p1"}
    if field == "amount":
        kwargs["amount"] = value
    elif field == "idempotency_key":
        kwargs["key"] = value
    else:
        kwargs[field] = value
    with pytest.raises(InvoiceError, match=message):
        pay(alice, **kwargs)
    assert Payment.objects.count() == 0
    assert CreditGrant.objects.count() == 0
