from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from tests.wallets.conftest import STAFF
from wallets import errors, services
from wallets.models import Account, CreditGrant, Entry, LedgerTransaction, Wallet

D = Decimal


def entries_of(tx):
    return sorted(
        (Account.objects.get(pk=e.debit_account_id).code or "grant/recv",
         Account.objects.get(pk=e.credit_account_id).code or "grant/recv", e.amount)
        for e in tx.entries.all()
    )  # fmt: skip


@pytest.mark.django_db
def test_open_wallet_is_once_per_currency(alice):
    first = services.open_wallet(customer=alice)
    assert services.open_wallet(customer=alice) == first
    euro = services.open_wallet(customer=alice, currency="EUR")
    assert euro != first and euro.currency == "EUR"
    assert first.receivable_account.wallet == first
    assert Account.objects.filter(kind="system", currency="EUR").count() == len(Account.Code)


@pytest.mark.django_db
def test_paid_and_free_grants_are_funded_from_their_system_accounts(wallet, grant, ledger_ok):
    paid = grant(wallet, "100")
    free = grant(wallet, "5", kind="free")
    assert entries_of(paid.issued_by) == [("cash", "grant/recv", D("100"))]
    assert entries_of(free.issued_by) == [("promotions", "grant/recv", D("5"))]
    wallet.refresh_from_db()
    assert wallet.credit_balance == D("105") and wallet.available_funds() == D("105")
    assert paid.issued_by.balance_after == D("100") and free.issued_by.balance_after == D("105")
    ledger_ok()


@pytest.mark.django_db
def test_grant_with_the_same_key_is_made_once(wallet):
    kwargs = dict(
        wallet=wallet, amount=D("10"), kind="paid", name="Pack", actor=STAFF, idempotency_key="g1"
    )
    first = services.grant_credit(**kwargs)
    assert services.grant_credit(**kwargs) == first
    assert CreditGrant.objects.count() == 1
    with pytest.raises(errors.IdempotencyConflict):
        services.grant_credit(**{**kwargs, "amount": D("11")})


@pytest.mark.django_db
def test_pending_grant_requires_action_then_activates_with_transaction_id(wallet, grant, ledger_ok):
    pending = grant(wallet, "50", pending=True)
    wallet.refresh_from_db()
    assert pending.status == "pending" and pending.get_status_display() == "Requires Action"
    assert wallet.credit_balance == 0 and not pending.issued_by.entries.exists()
    with pytest.raises(errors.WalletError, match="external_transaction_id is required"):
        services.activate_grant(
            grant=pending, external_transaction_id=" ", actor=STAFF, idempotency_key="a0"
        )

    tx = services.activate_grant(
        grant=pending, external_transaction_id="BANK-778", actor=STAFF, idempotency_key="a1"
    )
    again = services.activate_grant(
        grant=pending, external_transaction_id="BANK-778", actor=STAFF, idempotency_key="a1"
    )
    assert again == tx
    pending.refresh_from_db()
    wallet.refresh_from_db()
    assert pending.status == "active" and pending.external_transaction_id == "BANK-778"
    assert pending.remaining == D("50") and wallet.credit_balance == D("50")
    with pytest.raises(errors.InvalidGrantState, match="not pending"):
        services.activate_grant(
            grant=pending, external_transaction_id="X", actor=STAFF, idempotency_key="a2"
        )
    ledger_ok()


@pytest.mark.django_db
def test_new_unrestricted_credit_pays_debt_first(wallet, grant, ledger_ok):
    services.change_permanent_limit(wallet=wallet, limit=D("20"), actor=STAFF, reason="test")
    services.draw_down(wallet=wallet, amount=D("8"), actor=STAFF, idempotency_key="u1")
    top_up = grant(wallet, "10")
    wallet.refresh_from_db()
    top_up.refresh_from_db()
    assert wallet.debt == 0 and top_up.remaining == D("2") and wallet.credit_balance == D("2")
    ledger_ok()


@pytest.mark.django_db
def test_grant_input_errors_book_nothing(wallet):
    now = timezone.now()
    cases = [
        (dict(amount=D("-5")), "greater than zero"),
        (dict(kind="transfer"), "transfers use transfer"),
        (dict(name=" "), "name is required"),
        (dict(expires_at=now - timedelta(days=1)), "expires_at must be after"),
        (dict(funding="usage_revenue"), "funding must be one of"),
        (dict(condition_dimensions={"region": 1.5}), "string or an integer"),
    ]
    for override, message in cases:
        kwargs = dict(
            wallet=wallet, amount=D("5"), kind="paid", name="X", actor=STAFF, idempotency_key="g"
        )
        with pytest.raises(errors.WalletError, match=message):
            services.grant_credit(**{**kwargs, **override})
    assert not CreditGrant.objects.exists() and not LedgerTransaction.objects.exists()
    with pytest.raises(errors.WalletNotFound):
        services.grant_credit(
            wallet=424242, amount=D("1"), kind="paid", name="X", actor=STAFF, idempotency_key="g"
        )


@pytest.mark.django_db
def test_expiry_books_the_remainder_to_breakage(wallet, grant, ledger_ok):
    ends = timezone.now() + timedelta(days=30)
    g = grant(wallet, "10", expires_at=ends)
    services.draw_down(wallet=wallet, amount=D("4"), actor=STAFF, idempotency_key="u1")
    with pytest.raises(errors.InvalidGrantState, match="does not expire until"):
        services.expire_grant(grant=g, actor=STAFF)
    with time_machine.travel(ends + timedelta(seconds=1)):
        tx = services.expire_grant(grant=g, actor=STAFF)
        assert services.expire_grant(grant=g, actor=STAFF) == tx  # rerun: same transaction
    g.refresh_from_db()
    wallet.refresh_from_db()
    assert g.status == "expired" and g.remaining == 0 and wallet.credit_balance == 0
    assert entries_of(tx) == [("grant/recv", "breakage", D("6"))]
    ledger_ok()


@pytest.mark.django_db
def test_void_gives_back_only_the_unused_part(wallet, grant, ledger_ok):
    g = grant(wallet, "10", kind="free")
    services.draw_down(wallet=wallet, amount=D("3"), actor=STAFF, idempotency_key="u1")
    tx = services.void_grant(
        grant=g, actor=STAFF, idempotency_key="v1", reason="goodwill withdrawn"
    )
    assert entries_of(tx) == [("grant/recv", "promotions", D("7"))]
    g.refresh_from_db()
    assert g.status == "voided" and g.remaining == 0 and g.amount - D("7") == D("3")
    with pytest.raises(errors.InvalidGrantState, match="already voided"):
        services.void_grant(grant=g, actor=STAFF, idempotency_key="v2")
    pending = grant(wallet, "5", pending=True)
    assert not services.void_grant(
        grant=pending, actor=STAFF, idempotency_key="v3"
    ).entries.exists()
    ledger_ok()


@pytest.mark.django_db
def test_reversing_usage_returns_credit_to_the_same_grants(wallet, grant, ledger_ok):
    first = grant(wallet, "2", priority=1)
    second = grant(wallet, "10", priority=2)
    usage = services.draw_down(wallet=wallet, amount=D("5"), actor=STAFF, idempotency_key="u1")
    rev = services.reverse(transaction_id=usage.transaction_id, actor=STAFF, idempotency_key="r1")
    assert (
        services.reverse(transaction_id=usage.transaction_id, actor=STAFF, idempotency_key="r1")
        == rev
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.remaining, first.status, second.remaining) == (D("2"), "active", D("10"))
    assert rev.reverses_id == usage.transaction_id and rev.balance_after == D("12")
    assert sorted(rev.lots.values_list("grant_id", "amount")) == [
        (first.pk, D("-2")),
        (second.pk, D("-3")),
    ]
    with pytest.raises(errors.NotReversible, match="already been reversed"):
        services.reverse(transaction_id=usage.transaction_id, actor=STAFF, idempotency_key="r2")
    ledger_ok()


@pytest.mark.django_db
def test_reversed_usage_into_an_expired_grant_goes_to_breakage(wallet, grant, ledger_ok):
    ends = timezone.now() + timedelta(days=1)
    g = grant(wallet, "5", expires_at=ends)
    usage = services.draw_down(wallet=wallet, amount=D("5"), actor=STAFF, idempotency_key="u1")
    with time_machine.travel(ends + timedelta(hours=1)):
        services.expire_grant(grant=g, actor=STAFF)
        rev = services.reverse(
            transaction_id=usage.transaction_id, actor=STAFF, idempotency_key="r1"
        )
    assert ("grant/recv", "breakage", D("5")) in entries_of(rev)
    g.refresh_from_db()
    assert g.status == "expired" and g.remaining == 0
    ledger_ok()


@pytest.mark.django_db
def test_reversing_debt_already_paid_leaves_a_credit_on_account(wallet, grant, ledger_ok):
    services.change_permanent_limit(wallet=wallet, limit=D("10"), actor=STAFF, reason="test")
    usage = services.draw_down(wallet=wallet, amount=D("6"), actor=STAFF, idempotency_key="u1")
    services.record_debt_payment(wallet=wallet, amount=D("6"), actor=STAFF, idempotency_key="p1")
    services.reverse(transaction_id=usage.transaction_id, actor=STAFF, idempotency_key="r1")
    wallet.refresh_from_db()
    assert wallet.debt == 0 and wallet.credit_balance == D("6")
    assert wallet.grants.get().kind == "payment_on_account"
    ledger_ok()


@pytest.mark.django_db
def test_issued_credit_is_reversible_only_while_unspent(wallet, grant, ledger_ok):
    untouched = grant(wallet, "10")
    services.reverse(transaction_id=untouched.issued_by_id, actor=STAFF, idempotency_key="r1")
    untouched.refresh_from_db()
    assert untouched.status == "voided" and untouched.remaining == 0
    spent = grant(wallet, "10")
    services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key="u1")
    with pytest.raises(errors.NotReversible, match="already used"):
        services.reverse(transaction_id=spent.issued_by_id, actor=STAFF, idempotency_key="r2")
    expiry = grant(wallet, "1", expires_at=timezone.now() + timedelta(seconds=1))
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        tx = services.expire_grant(grant=expiry, actor=STAFF)
    with pytest.raises(errors.NotReversible, match="cannot be reversed"):
        services.reverse(transaction_id=tx.pk, actor=STAFF, idempotency_key="r3")
    ledger_ok()


@pytest.mark.django_db
def test_debt_payment_and_settlement(wallet, grant, ledger_ok):
    services.change_permanent_limit(wallet=wallet, limit=D("50"), actor=STAFF, reason="test")
    services.draw_down(wallet=wallet, amount=D("30"), actor=STAFF, idempotency_key="u1")
    with pytest.raises(errors.InvalidAmount, match="more than the debt"):
        services.record_debt_payment(
            wallet=wallet, amount=D("31"), actor=STAFF, idempotency_key="p0"
        )
    services.record_debt_payment(wallet=wallet, amount=D("10"), actor=STAFF, idempotency_key="p1")
    calls_only = grant(
        wallet, "100", condition_dimensions={"region": "eu"}
    )  # restricted: never pays debt
    free = grant(wallet, "5", kind="free", apply_to_debt=False)
    tx = services.settle_debt(wallet=wallet, actor=STAFF, idempotency_key="s1")
    wallet.refresh_from_db()
    calls_only.refresh_from_db()
    assert tx.amount == D("5") and wallet.debt == D("15")
    assert calls_only.remaining == D("100")
    assert services.settle_debt(wallet=wallet, actor=STAFF, idempotency_key="s2") is None
    free.refresh_from_db()
    assert free.status == "exhausted"
    ledger_ok()


@pytest.mark.django_db
def test_credit_limit_changes_are_recorded_and_cannot_go_below_debt(wallet):
    services.change_permanent_limit(wallet=wallet, limit=D("100"), actor=STAFF, reason="good payer")
    services.draw_down(wallet=wallet, amount=D("40"), actor=STAFF, idempotency_key="u1")
    with pytest.raises(errors.LimitRefused, match="below the current debt"):
        services.change_permanent_limit(wallet=wallet, limit=D("39"), actor=STAFF, reason="test")
    with pytest.raises(errors.LimitRefused):
        services.change_permanent_limit(wallet=wallet, limit=D("-1"), actor=STAFF, reason="test")
    change = wallet.limit_changes.get()
    assert (change.old_limit, change.new_limit, change.reason) == (0, D("100"), "good payer")


@pytest.mark.django_db
def test_temporary_increase_reverts_exactly_at_valid_until(wallet):
    until = timezone.now() + timedelta(days=3)
    Wallet.objects.filter(pk=wallet.pk).update(
        credit_limit=D("100"),
        temporary_credit_increase=D("50"),
        temporary_increase_valid_until=until,
    )
    wallet.refresh_from_db()
    assert wallet.effective_credit_limit() == D("150")
    assert wallet.effective_credit_limit(until - timedelta(microseconds=1)) == D("150")
    assert wallet.effective_credit_limit(until) == D("100")


@pytest.mark.django_db(transaction=True)
def test_entries_cannot_be_edited_or_deleted(wallet, grant):
    grant(wallet, "10")
    entry = Entry.objects.get()
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        Entry.objects.filter(pk=entry.pk).update(amount=D("1"))
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        Entry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(IntegrityError), transaction.atomic():
        Entry.objects.create(transaction=entry.transaction, debit_account_id=entry.debit_account_id,
                             credit_account_id=entry.credit_account_id, amount=D("0"), currency="USD")  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        Entry.objects.create(transaction=entry.transaction, debit_account_id=entry.debit_account_id,
                             credit_account_id=entry.debit_account_id, amount=D("1"), currency="USD")  # fmt: skip


@pytest.mark.django_db
def test_check_ledger_finds_a_tampered_balance(wallet, grant, capsys):
    grant(wallet, "10")
    call_command("check_ledger")
    assert "ledger OK" in capsys.readouterr().out
    Wallet.objects.filter(pk=wallet.pk).update(credit_balance=D("11"))  # what no code may do
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="FAILED"):
        call_command("check_ledger")
    assert "recorded 11.000000 / 0.000000, ledger says 10.000000 / 0" in capsys.readouterr().err


# --- issue 12, item 4: a grant's issuing transaction is reversed exactly, or refused ---


@pytest.mark.django_db
def test_reversing_a_pending_grants_issue_is_refused_and_says_to_void_it(wallet, grant, ledger_ok):
    pending = grant(wallet, "25", pending=True)
    with pytest.raises(errors.NotReversible, match=r"pending.*void the grant instead"):
        services.reverse(transaction_id=pending.issued_by_id, actor=STAFF, idempotency_key="r1")
    pending.refresh_from_db()
    assert pending.status == "pending"
    assert not LedgerTransaction.objects.filter(kind="reversal").exists()
    # voiding is the way: a later activation is then refused, nothing is ever issued
    services.void_grant(grant=pending, actor=STAFF, idempotency_key="v1")
    with pytest.raises(errors.InvalidGrantState):
        services.activate_grant(
            grant=pending, external_transaction_id="pay-1", actor=STAFF, idempotency_key="a1"
        )
    wallet.refresh_from_db()
    assert wallet.credit_balance == 0
    ledger_ok()


@pytest.mark.django_db
def test_reversing_the_issue_of_a_grant_activated_since_is_refused(wallet, grant, ledger_ok):
    pending = grant(wallet, "25", pending=True)
    activation = services.activate_grant(
        grant=pending, external_transaction_id="pay-1", actor=STAFF, idempotency_key="a1"
    )
    with pytest.raises(errors.NotReversible, match=r"activated by transaction.*void the grant"):
        services.reverse(transaction_id=pending.issued_by_id, actor=STAFF, idempotency_key="r1")
    issue = LedgerTransaction.objects.get(pk=pending.issued_by_id)
    assert not LedgerTransaction.objects.filter(reverses=issue).exists()  # never "reversed"
    pending.refresh_from_db()
    assert (pending.status, pending.remaining) == ("active", D("25"))
    # the activation itself moved the money: its reversal is exact (credit taken back)
    services.reverse(transaction_id=activation.pk, actor=STAFF, idempotency_key="r2")
    pending.refresh_from_db()
    wallet.refresh_from_db()
    assert (pending.status, pending.remaining, wallet.credit_balance) == ("voided", 0, 0)
    ledger_ok()


@pytest.mark.django_db
def test_reversing_the_issue_of_a_voided_grant_is_refused(wallet, grant, ledger_ok):
    pending = grant(wallet, "25", pending=True)
    services.void_grant(grant=pending, actor=STAFF, idempotency_key="v1")
    with pytest.raises(errors.NotReversible, match="already voided"):
        services.reverse(transaction_id=pending.issued_by_id, actor=STAFF, idempotency_key="r1")
    assert not LedgerTransaction.objects.filter(kind="reversal").exists()
    ledger_ok()


# --- refunds of the payment for a grant (issue 12, item 2; Stripe end to end in tests/billing) ---


def psp_grant(wallet, grant, amount="25"):
    return grant(wallet, amount, funding="psp_clearing")


@pytest.mark.django_db
def test_refund_above_the_unused_credit_needs_allow_debt(wallet, grant, ledger_ok):
    paid = psp_grant(wallet, grant)
    services.draw_down(wallet=wallet, amount=D("20"), actor=STAFF, idempotency_key="u1")
    with pytest.raises(
        errors.RefundNeedsConfirmation,
        match=r"5\.00 USD unused; refunding 25\.00 turns 20\.00 USD of used",
    ):
        services.refund_grant(grant=paid, refunded_total=D("25"), actor=STAFF, idempotency_key="f1")
    assert not LedgerTransaction.objects.filter(kind="refund").exists()
    first = services.refund_grant(
        grant=paid, refunded_total=D("10"), actor=STAFF, idempotency_key="f1", allow_debt=True
    )
    assert entries_of(first) == [
        ("grant/recv", "psp_clearing", D("5")),
        ("grant/recv", "psp_clearing", D("5")),
    ]
    again = services.refund_grant(
        grant=paid, refunded_total=D("10"), actor=STAFF, idempotency_key="f1", allow_debt=True
    )
    assert again == first  # the same total again books nothing
    assert (
        services.refund_grant(
            grant=paid, refunded_total=D("10"), actor=STAFF, idempotency_key="f2", allow_debt=True
        )
        is None
    )  # a total already booked, under another key: nothing more
    services.refund_grant(
        grant=paid, refunded_total=D("25"), actor=STAFF, idempotency_key="f3", allow_debt=True
    )
    paid.refresh_from_db()
    wallet.refresh_from_db()
    assert (paid.status, wallet.debt, wallet.credit_balance) == ("voided", D("20"), 0)
    ledger_ok()


@pytest.mark.django_db
def test_refund_of_a_voided_grant_moves_only_what_the_void_did_not(wallet, grant, ledger_ok):
    paid = psp_grant(wallet, grant)
    services.draw_down(wallet=wallet, amount=D("20"), actor=STAFF, idempotency_key="u1")
    services.void_grant(grant=paid, actor=STAFF, idempotency_key="v1")  # 5 back to psp_clearing
    split = services.refund_split(grant=paid, refunded_total=D("25"))
    assert (split.voided, split.unused, split.expired, split.debt) == (D("5"), 0, 0, D("20"))
    assert split.used == D("20") and split.without_debt == D("5")
    services.refund_grant(grant=paid, refunded_total=D("5"), actor=STAFF, idempotency_key="f1")
    refund = LedgerTransaction.objects.get(kind="refund")
    assert refund.amount == D("5") and not refund.entries.exists()  # the void already moved it
    wallet.refresh_from_db()
    assert wallet.debt == 0
    ledger_ok()


@pytest.mark.django_db
def test_refund_of_a_pending_grant_is_refused(wallet, grant, ledger_ok):
    pending = grant(wallet, "25", pending=True)
    with pytest.raises(errors.InvalidGrantState, match="still pending"):
        services.refund_grant(
            grant=pending,
            refunded_total=D("25"),
            actor=STAFF,
            idempotency_key="f1",
            allow_debt=True,
        )
    ledger_ok()
