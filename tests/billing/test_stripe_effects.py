"""'Charge now' end to end: a pending grant, a real (fake-Stripe) charge, the ledger."""

from datetime import timedelta
from decimal import Decimal

import pytest

from billing.models import StripeCharge
from billing.stripe import services as stripe_services
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
    assert LedgerTransaction.objects.filter(kind="refund").count() == 1
    assert find_problems() == []


# --- issue 12, item 2: refunding a partly used top-up -------------------------------

D = Decimal


def psp_clearing_net(currency="USD") -> Decimal:
    """What psp_clearing gave out (−) and took back (+), over every entry: charged and
    never refunded money is negative, a charge refunded in full nets to zero."""
    from wallets.models import Entry

    psp = Account.objects.get(kind="system", code="psp_clearing", currency=currency)
    into = sum((e.amount for e in Entry.objects.filter(credit_account=psp)), D("0"))
    out = sum((e.amount for e in Entry.objects.filter(debit_account=psp)), D("0"))
    return into - out


def paid_then_used(customer, *, amount="25.00", used="20"):
    """A 25.00 card top-up (pending grant, charge, activation), 20 of it then used."""
    stripe_services.attach_payment_method(customer=customer, payment_method_id="pm_card_visa")
    customer.refresh_from_db()
    grant = pending_grant(customer, amount)
    charge = charge_for(grant, customer)
    assert charge.status == "succeeded"
    services.draw_down(wallet=grant.wallet, amount=D(used), actor=STAFF, idempotency_key="use")
    return grant, charge


def refund_entries(grant):
    tx = LedgerTransaction.objects.get(kind="refund", metadata__grant=grant.pk)
    return sorted(
        (Account.objects.get(pk=e.debit_account_id).kind, Account.objects.get(pk=e.credit_account_id).code, e.amount)
        for e in tx.entries.all()
    )  # fmt: skip


def test_a_refund_above_the_unused_credit_is_refused_without_confirmation(alice):
    from billing.errors import ChargeNotRefundable
    from billing.stripe.gateway import retrieve_payment_intent

    grant, charge = paid_then_used(alice)
    with pytest.raises(ChargeNotRefundable, match=r"5\.00 .*unused.*20\.00 .*debt"):
        stripe_services.refund_charge(charge=charge, initiated_by="ops")
    charge.refresh_from_db()
    grant.refresh_from_db()
    assert (charge.status, charge.refunded_amount) == ("succeeded", 0)
    assert retrieve_payment_intent(payment_intent_id=charge.payment_intent_id).amount_refunded == 0
    assert (grant.status, grant.remaining) == ("active", D("5"))
    assert psp_clearing_net() == D("-25")
    assert find_problems() == []


def test_a_confirmed_full_refund_books_the_unused_part_back_and_the_used_part_as_debt(alice):
    grant, charge = paid_then_used(alice)
    refunded = stripe_services.refund_charge(charge=charge, initiated_by="ops", allow_debt=True)
    grant.refresh_from_db()
    wallet = grant.wallet
    wallet.refresh_from_db()
    assert refunded.status == "refunded" and refunded.effects_applied_at is not None
    assert (grant.status, grant.remaining) == ("voided", 0)
    assert (wallet.credit_balance, wallet.debt) == (0, D("20"))
    assert refund_entries(grant) == [
        ("grant", "psp_clearing", D("5")),
        ("receivable", "psp_clearing", D("20")),
    ]
    assert psp_clearing_net() == 0  # 25 charged, 25 refunded
    stripe_services.apply_charge_effects(charge_id=charge.pk, force=True)  # a replay books nothing
    assert LedgerTransaction.objects.filter(kind="refund").count() == 1
    assert find_problems() == []


def test_a_refund_within_the_unused_credit_needs_no_confirmation(alice):
    grant, charge = paid_then_used(alice)
    partly = stripe_services.refund_charge(charge=charge, amount=D("5.00"), initiated_by="ops")
    grant.refresh_from_db()
    assert partly.status == "partially_refunded"
    assert (grant.status, grant.remaining, grant.wallet.debt) == ("exhausted", 0, 0)
    assert psp_clearing_net() == D("-20")
    # the rest is all used credit: only with confirmation, and then exactly that is debt
    rest = stripe_services.refund_charge(charge=partly, initiated_by="ops", allow_debt=True)
    grant.refresh_from_db()
    assert rest.status == "refunded" and grant.status == "voided"
    assert grant.wallet.debt == D("20") and psp_clearing_net() == 0
    assert find_problems() == []


def test_a_refund_of_an_expired_top_up_takes_the_expired_part_back_from_breakage(alice):
    import time_machine
    from django.utils import timezone

    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    alice.refresh_from_db()
    wallet = services.open_wallet(customer=alice)
    soon = timezone.now() + timedelta(days=1)
    grant = services.grant_credit(wallet=wallet, amount=D("25.00"), kind="paid", name="Card top-up", actor=STAFF,
                                  idempotency_key="expiring", pending=True, expires_at=soon)  # fmt: skip
    charge = charge_for(grant, alice)
    services.draw_down(wallet=wallet, amount=D("20"), actor=STAFF, idempotency_key="use")
    with time_machine.travel(soon + timedelta(minutes=1)):
        services.expire_grant(grant=grant, actor=STAFF)
        refunded = stripe_services.refund_charge(
            charge=charge, amount=D("5.00"), initiated_by="ops"
        )
    assert refunded.status == "partially_refunded"
    tx = LedgerTransaction.objects.get(kind="refund")
    (entry,) = tx.entries.all()
    assert Account.objects.get(pk=entry.debit_account_id).code == "breakage"
    assert entry.amount == D("5") and psp_clearing_net() == D("-20")
    assert find_problems() == []
