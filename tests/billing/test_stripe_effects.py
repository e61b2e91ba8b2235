"""'Charge now' end to end: a pending grant, a real (fake-Stripe) charge, the ledger."""

from decimal import Decimal

import pytest

from billing import stripe_services
from billing.models import StripeCharge
from tests.wallets.conftest import STAFF
from wallets import services
from wallets.ledger_check import find_problems
from wallets.models import Account, CreditGrant, LedgerTransaction

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_settings")]


def pending_grant(customer, amount="25.00"):
    wallet = services.open_wallet(customer=customer)
    return services.grant_credit(wallet=wallet, amount=Decimal(amount), kind="paid", name="Card top-up",
                                 actor=STAFF, idempotency_key=f"now-{customer.pk}", pending=True)  # fmt: skip


def charge_for(grant, customer):
    return stripe_services.charge_off_session(
        customer=customer, amount=grant.amount, purpose=StripeCharge.Purpose.GRANT,
        grant_id=grant.pk, initiated_by="test",
    )  # fmt: skip


def test_successful_charge_activates_the_grant_from_psp_clearing(alice):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    alice.refresh_from_db()
    grant = pending_grant(alice)
    charge = charge_for(grant, alice)
    grant.refresh_from_db()
    assert charge.status == "succeeded" and grant.status == "active"
    assert grant.external_transaction_id == charge.payment_intent_id
    activation = LedgerTransaction.objects.get(kind="activation")
    (entry,) = activation.entries.all()
    assert Account.objects.get(pk=entry.debit_account_id).code == "psp_clearing"
    # replaying the effects (a webhook, the sweep) books nothing more
    stripe_services.apply_charge_effects(charge_id=charge.pk, force=True)
    assert LedgerTransaction.objects.filter(kind="activation").count() == 1
    assert grant.wallet.grants.get().remaining == Decimal("25.00")
    assert find_problems() == []


def test_declined_card_voids_the_waiting_grant(alice):
    stripe_services.attach_payment_method(
        customer=alice, payment_method_id="pm_card_chargeCustomerFail"
    )
    alice.refresh_from_db()
    grant = pending_grant(alice)
    charge = charge_for(grant, alice)
    grant.refresh_from_db()
    assert charge.status == "failed" and grant.status == "voided"
    assert grant.wallet.credit_balance == 0
    assert find_problems() == []


def test_full_refund_voids_the_grant_and_the_money_goes_back(alice):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    alice.refresh_from_db()
    grant = pending_grant(alice)
    charge = charge_for(grant, alice)
    refunded = stripe_services.refund_charge(charge=charge, initiated_by="ops")
    grant.refresh_from_db()
    assert refunded.status == "refunded" and grant.status == "voided"
    assert CreditGrant.objects.get(pk=grant.pk).remaining == 0
    stripe_services.apply_charge_effects(charge_id=charge.pk, force=True)
    assert LedgerTransaction.objects.filter(kind="void").count() == 1
    assert find_problems() == []
