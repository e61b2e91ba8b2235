"""Grant rules of issue 12 ("also fix"): the default expiry for every kind,
transfers that keep the sender's expiry and void back to whoever funded them, no
activation of expired credit, and one business time for breakage."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import Account, CreditGrant, LedgerTransaction, PrepaidCreditSettings, Wallet

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture
def three_months():
    settings = PrepaidCreditSettings.load()
    settings.default_expiry_count, settings.default_expiry_unit = 3, "months"
    settings.save()
    return lambda start: settings.default_expiry(start)


# --- (a) the configured default expiry, applied by the service --------------------


@pytest.mark.parametrize("kind", ["paid", "free", "top_up", "refill_card", "payment_on_account"])
def test_the_service_applies_the_default_expiry_to_every_kind(wallet, keys, three_months, kind):
    start = timezone.now() + timedelta(days=2)
    grant = services.grant_credit(
        wallet=wallet, amount=D("10"), kind=kind, name="Credit", actor=STAFF,
        idempotency_key=keys.next(), effective_at=start,
    )  # fmt: skip
    assert grant.expires_at == three_months(start)
    explicit = start + timedelta(days=5)
    other = services.grant_credit(
        wallet=wallet, amount=D("10"), kind=kind, name="Credit", actor=STAFF,
        idempotency_key=keys.next(), effective_at=start, expires_at=explicit,
    )  # fmt: skip
    assert other.expires_at == explicit


def test_credit_from_a_reversal_gets_the_default_expiry(wallet, grant, three_months, ledger_ok):
    """Usage that went to debt, debt paid, usage reversed: the excess comes back as a
    payment-on-account grant, which expires like any other credit."""
    Wallet.objects.filter(pk=wallet.pk).update(credit_limit=D("50"))
    usage = services.draw_down(wallet=wallet, amount=D("20"), actor=STAFF, idempotency_key="u1")
    services.record_debt_payment(wallet=wallet, amount=D("20"), actor=STAFF, idempotency_key="p1")
    services.reverse(transaction_id=usage.transaction_id, actor=STAFF, idempotency_key="r1")
    refund = CreditGrant.objects.get(kind="payment_on_account")
    assert refund.expires_at == three_months(refund.effective_at)
    ledger_ok()


# --- (b) transfers keep the sender's expiry, and void back to the sender ----------


def test_a_transfer_keeps_the_expiry_of_the_credit_it_moves(
    wallet, bob_wallet, grant, three_months, ledger_ok
):
    soon = timezone.now() + timedelta(days=10)
    later = timezone.now() + timedelta(days=400)
    first = grant(wallet, "30", expires_at=soon, priority=1)
    second = grant(wallet, "50", expires_at=later, priority=2)
    tx = services.transfer(
        source=wallet,
        target=bob_wallet,
        amount=D("60"),
        actor=STAFF,
        idempotency_key="t1",
        enforce_policy=False,
    )
    received = CreditGrant.objects.filter(wallet=bob_wallet).order_by("id")
    assert [(g.amount, g.expires_at) for g in received] == [(D("30"), soon), (D("30"), later)]
    assert tx.metadata["received_grants"] == [g.pk for g in received]
    assert [g.source_id for g in received] == [str(first.pk), str(second.pk)]
    # a shorter expiry may be asked for; a longer one is capped at the sender's
    capped = services.transfer(
        source=wallet, target=bob_wallet, amount=D("10"), actor=STAFF, idempotency_key="t2",
        expires_at=timezone.now() + timedelta(days=900), enforce_policy=False,
    )  # fmt: skip
    (grant_id,) = capped.metadata["received_grants"]
    assert CreditGrant.objects.get(pk=grant_id).expires_at == later
    ledger_ok()


def test_credit_that_never_expires_arrives_with_the_default_expiry(
    wallet, bob_wallet, three_months, ledger_ok
):
    """Credit booked before every grant got an expiry may have none: the received
    part then expires after the default period, never 'never'."""
    legacy = services.grant_credit(
        wallet=wallet, amount=D("20"), kind="paid", name="Old", actor=STAFF,
        idempotency_key="g1",
    )  # fmt: skip
    CreditGrant.objects.filter(pk=legacy.pk).update(expires_at=None)
    services.transfer(
        source=wallet,
        target=bob_wallet,
        amount=D("5"),
        actor=STAFF,
        idempotency_key="t1",
        enforce_policy=False,
    )
    received = CreditGrant.objects.get(wallet=bob_wallet)
    assert received.expires_at == three_months(received.effective_at)
    ledger_ok()


def test_voiding_a_transferred_grant_returns_its_unused_part_to_the_sender(
    wallet, bob_wallet, grant, ledger_ok
):
    source = grant(wallet, "40")
    services.transfer(
        source=wallet,
        target=bob_wallet,
        amount=D("25"),
        actor=STAFF,
        idempotency_key="t1",
        enforce_policy=False,
    )
    received = CreditGrant.objects.get(wallet=bob_wallet)
    services.draw_down(wallet=bob_wallet, amount=D("5"), actor=STAFF, idempotency_key="u1")
    void = services.void_grant(grant=received, actor=STAFF, idempotency_key="v1")
    source.refresh_from_db()
    wallet.refresh_from_db()
    bob_wallet.refresh_from_db()
    assert void.amount == D("20")
    assert source.remaining == D("35") and wallet.credit_balance == D("35")
    assert bob_wallet.credit_balance == 0
    cash = Account.objects.get(kind="system", code="cash", currency="USD")
    assert not void.entries.filter(credit_account=cash).exists()
    assert [(lot.grant_id, lot.amount) for lot in void.lots.all()] == [(source.pk, D("-20"))]
    ledger_ok()


def test_voiding_a_transfer_whose_source_has_expired_sends_it_to_breakage(
    wallet, bob_wallet, grant, ledger_ok
):
    expiry = timezone.now() + timedelta(days=3)
    source = grant(wallet, "40", expires_at=expiry)
    services.transfer(
        source=wallet,
        target=bob_wallet,
        amount=D("25"),
        actor=STAFF,
        idempotency_key="t1",
        enforce_policy=False,
    )
    received = CreditGrant.objects.get(wallet=bob_wallet)
    with time_machine.travel(expiry + timedelta(hours=1)):
        services.expire_grant(grant=source, actor=STAFF)
        void = services.void_grant(grant=received, actor=STAFF, idempotency_key="v1")
    breakage = Account.objects.get(kind="system", code="breakage", currency="USD")
    assert void.entries.get(credit_account=breakage).amount == D("25")
    source.refresh_from_db()
    assert source.status == "expired" and source.remaining == 0
    ledger_ok()


# --- (c) expired credit cannot be activated -----------------------------------------


def test_activating_an_expired_pending_grant_is_refused(wallet, grant, ledger_ok):
    expiry = timezone.now() + timedelta(days=1)
    pending = grant(wallet, "10", pending=True, expires_at=expiry)
    with time_machine.travel(expiry + timedelta(minutes=1)):
        with pytest.raises(errors.InvalidGrantState, match="expired on .*cannot be activated"):
            services.activate_grant(
                grant=pending, external_transaction_id="bank-1", actor=STAFF, idempotency_key="a1"
            )
    pending.refresh_from_db()
    assert pending.status == "pending" and pending.remaining == 0
    ledger_ok()


# --- (e) breakage at the grant's expiry time, in both paths ---------------------------


def test_python_expiry_and_the_sweep_book_breakage_at_the_expiry_time(wallet, grant, ledger_ok):
    expiry = timezone.now() + timedelta(days=1)
    one = grant(wallet, "10", expires_at=expiry)
    two = grant(wallet, "20", expires_at=expiry)
    late = expiry + timedelta(days=5)
    with time_machine.travel(late):
        by_python = services.expire_grant(grant=one, actor=STAFF)
        batch = services.expire_due_grants()
    assert batch.expired == 1
    by_sweep = LedgerTransaction.objects.get(idempotency_key=f"expire:grant:{two.pk}")
    assert by_python.effective_at == by_sweep.effective_at == expiry
    one.refresh_from_db()
    two.refresh_from_db()
    assert one.ended_at == two.ended_at == expiry
    ledger_ok()
