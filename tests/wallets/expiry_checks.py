"""What every expiry sweep must leave behind, whatever ran it (one loop, several
connections, a killed run and its rerun)."""

from decimal import Decimal

from django.db import connection

from wallets.ledger_check import find_problems
from wallets.models import Account, CreditGrant, Entry, LedgerTransaction, Wallet

D = Decimal


def breakage_total() -> Decimal:
    account = Account.objects.get(kind="system", code="breakage", currency="USD")
    return sum(Entry.objects.filter(credit_account=account).values_list("amount", flat=True), D(0))


def assert_each_grant_expired_exactly_once(seeded, left_on_grants, balance_before):
    assert find_problems() == []
    assert not CreditGrant.objects.exclude(status="expired").exists()
    expiries = LedgerTransaction.objects.filter(kind="expiry")
    per_grant = dict(expiries.values_list("metadata__grant", "amount"))
    assert expiries.count() == len(per_grant) == seeded.grants  # one per grant, no more
    assert per_grant == left_on_grants  # each booked exactly what it held
    assert breakage_total() == seeded.expected_breakage
    assert set(Wallet.objects.values_list("credit_balance", "restricted_balance")) == {(0, 0)}
    with connection.cursor() as cursor:  # each expiry shows its wallet's running balance
        cursor.execute(
            "SELECT wallet_id, amount, balance_after FROM wallets_ledgertransaction "
            "WHERE kind = 'expiry' ORDER BY wallet_id, id"
        )
        running = dict(balance_before)
        for wallet_id, amount, balance_after in cursor.fetchall():
            running[wallet_id] -= amount
            assert balance_after == running[wallet_id]
