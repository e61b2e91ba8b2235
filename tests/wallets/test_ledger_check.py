"""check_ledger proves what it claims: a healthy ledger with every kind of
operation passes, and each check catches the corruption made for it (through
SQL, as no code path may write it), exits non-zero and names the row.

Entries and lots are immutable (migration 0002's trigger); the corruptions go
around the trigger with `SET LOCAL session_replication_role = replica`, which
only a superuser may set (docs/ledger-check.md), inside the test's transaction.
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, ProgrammingError, connection, transaction
from django.utils import timezone

from billing.models import Customer
from tests.wallets.conftest import STAFF
from wallets import services
from wallets.ledger_check import CHECKS, find_problems
from wallets.models import (
    Account,
    CreditGrant,
    CreditLimitChange,
    Entry,
    GrantConsumption,
    LedgerTransaction,
    Wallet,
)

D = Decimal
pytestmark = pytest.mark.django_db


@dataclass
class Ledger:
    """A small ledger with every kind of operation, and the rows the tests aim at."""

    alice: Wallet
    bob: Wallet
    paid: CreditGrant  # alice's 100, drawn by `usage`
    usage: LedgerTransaction  # alice, 30 from `paid`
    debt_usage: LedgerTransaction  # bob, 12 of usage taken as debt under his limit of 20
    limit_change: CreditLimitChange  # bob's limit 0 → 20, before `debt_usage`
    transfer: LedgerTransaction  # alice → bob 15, which pays bob's debt first
    expiry: LedgerTransaction
    reversal: LedgerTransaction  # of a usage whose grant has expired since
    settlement: LedgerTransaction


@pytest.fixture
def ledger(alice, bob, keys) -> Ledger:
    Customer.objects.filter(pk__in=[alice.pk, bob.pk]).update(transfer_policy="yes")
    a = services.open_wallet(customer=alice)
    b = services.open_wallet(customer=bob)
    now = timezone.now()

    def grant(wallet, amount, **kwargs):
        kwargs.setdefault("kind", "paid")
        return services.grant_credit(wallet=wallet, amount=D(amount), name=f"Credits {amount}",
                                     actor=STAFF, idempotency_key=keys.next(), **kwargs)  # fmt: skip

    def use(wallet, amount, **kwargs):
        result = services.draw_down(wallet=wallet, amount=D(amount), actor=STAFF,
                                    idempotency_key=keys.next(), **kwargs)  # fmt: skip
        return LedgerTransaction.objects.get(pk=result.transaction_id)

    def reverse(tx):
        return services.reverse(transaction_id=tx.pk, actor=STAFF, idempotency_key=keys.next())

    # alice: paid, free restricted, pending then activated / voided, usage alone and batched
    paid = grant(a, "100")
    grant(a, "20", kind="free", condition_dimensions={"region": "eu"})
    usage = use(a, "30")
    use(a, "5", dimensions={"region": "eu"})
    services.draw_down_batch(
        wallet=a, actor=STAFF,
        charges=[services.UsageCharge(amount=D("1"), idempotency_key=keys.next()) for _ in range(3)],
    )  # fmt: skip
    waiting = grant(a, "15", pending=True)
    services.activate_grant(grant=waiting, external_transaction_id="pi_1", actor=STAFF,
                            idempotency_key=keys.next(), funding="psp_clearing")  # fmt: skip
    services.void_grant(grant=grant(a, "7", pending=True), actor=STAFF, idempotency_key=keys.next())
    # a grant partly used, then voided: its unused part goes back to its funder
    voided = grant(a, "10", priority=1)
    use(a, "4")
    services.void_grant(grant=voided, actor=STAFF, idempotency_key=keys.next())
    # expiry by the service and by the sweep; a usage whose grant expires, then reversed
    soon = grant(a, "8", priority=0, expires_at=now + timedelta(hours=1))
    doomed_usage = use(a, "3")
    expiry = services.expire_grant(grant=soon, actor=STAFF, at=soon.expires_at)
    grant(a, "6", effective_at=now - timedelta(days=2), expires_at=now - timedelta(days=1))
    assert services.expire_due_grants(at=now).expired == 1
    reversal = reverse(doomed_usage)
    # a grant taken back unspent, a usage given back
    reverse(LedgerTransaction.objects.get(pk=grant(a, "3", kind="free").issued_by_id))
    reverse(use(a, "2"))

    # bob: a credit limit, debt, payments, rounding, credit from a transfer, settlement
    limit_change = services.change_permanent_limit(
        wallet=b, limit=D("20"), actor=STAFF, reason="test"
    )
    debt_usage = use(b, "12")
    payment = services.record_debt_payment(wallet=b, amount=D("2"), actor=STAFF,
                                           idempotency_key=keys.next())  # fmt: skip
    # 10 owed: billed 9.996 rounds up (+0.004), then billed 10.004 rounds down (-0.004)
    assert services.round_debt(wallet=b, exact=D("9.996"), quantum=D("0.01"), actor=STAFF,
                               idempotency_key=keys.next()) is not None  # fmt: skip
    assert services.round_debt(wallet=b, exact=D("10.004"), quantum=D("0.01"), actor=STAFF,
                               idempotency_key=keys.next()) is not None  # fmt: skip
    reverse(payment)
    transfer = services.transfer(source=a, target=b, amount=D("15"), actor=STAFF,
                                 idempotency_key=keys.next())  # fmt: skip
    use(b, "8")  # 3 from the transfer's credit, 5 of debt
    grant(b, "4", apply_to_debt=False)
    settlement = services.settle_debt(wallet=b, actor=STAFF, idempotency_key=keys.next())
    assert settlement is not None
    # a transfer given back while unspent; a usage reversed after its debt was paid
    reverse(services.transfer(source=a, target=b, amount=D("1"), actor=STAFF,
                              idempotency_key=keys.next()))  # fmt: skip
    reverse(debt_usage)
    # transferred credit voided: back to the sender's grant while it lives, on to
    # breakage once it has expired (the transfer keeps the sender's expiry)
    services.grant_credit(wallet=a, amount=D("9"), name="Short", kind="paid", actor=STAFF,
                          idempotency_key=keys.next(), priority=0,
                          expires_at=now + timedelta(hours=2))  # fmt: skip
    kept = services.transfer(source=a, target=b, amount=D("2"), actor=STAFF,
                             idempotency_key=keys.next())  # fmt: skip
    for received in kept.metadata["received_grants"]:
        services.void_grant(grant=received, actor=STAFF, idempotency_key=keys.next())
    lapsing = services.transfer(source=a, target=b, amount=D("3"), actor=STAFF,
                                idempotency_key=keys.next())  # fmt: skip
    short = CreditGrant.objects.get(wallet=a, name="Short")
    services.expire_grant(grant=short, actor=STAFF, at=short.expires_at)
    for received in lapsing.metadata["received_grants"]:
        services.void_grant(grant=received, actor=STAFF, idempotency_key=keys.next())
    # a card top-up, mostly used, refunded in full: unused back, the used part as debt
    topped = grant(b, "25", funding="psp_clearing", priority=0)
    use(b, "20")
    assert services.refund_grant(grant=topped, refunded_total=D("25"), actor=STAFF,
                                 idempotency_key=keys.next(), allow_debt=True) is not None  # fmt: skip
    a.refresh_from_db()
    b.refresh_from_db()
    return Ledger(alice=a, bob=b, paid=paid, usage=usage, debt_usage=debt_usage,
                  limit_change=limit_change, transfer=transfer, expiry=expiry, reversal=reversal,
                  settlement=settlement)  # fmt: skip


def check_ledger_errors() -> str:
    """Run `manage.py check_ledger`, which must fail; what it printed."""
    err = StringIO()
    with pytest.raises(CommandError, match="ledger check FAILED"):
        call_command("check_ledger", stdout=StringIO(), stderr=err)
    return err.getvalue()


def assert_found(output: str, rule_start: str, subject: str) -> None:
    """check_ledger printed a line of the rule starting `rule_start` naming `subject`."""
    rules = [c.rule for c in CHECKS if c.rule.startswith(rule_start)]
    assert len(rules) == 1, f"no single check starts with {rule_start!r}"
    lines = [line for line in output.splitlines() if line.startswith(rules[0] + ":")]
    assert any(f": {subject}:" in line for line in lines), (
        f"{subject!r} not named by {rules[0]!r}:\n{output}"
    )


def corrupt(sql: str, params: list | tuple = ()) -> None:
    """Write what no code path may, around the immutability trigger."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def grant_of(tx: LedgerTransaction) -> CreditGrant:
    lot = GrantConsumption.objects.filter(transaction=tx).order_by("id").first()
    assert lot is not None
    return lot.grant


def test_a_healthy_ledger_with_every_kind_of_operation_passes(ledger):
    kinds = set(LedgerTransaction.objects.values_list("kind", flat=True))
    assert kinds == set(LedgerTransaction.Kind.values)
    reversed_kinds = set(
        LedgerTransaction.objects.filter(kind="reversal").values_list("reverses__kind", flat=True)
    )
    assert reversed_kinds == {"usage", "grant", "debt_payment", "transfer"}
    assert CreditGrant.objects.filter(kind="payment_on_account").exists()  # reversed paid debt
    problems = find_problems()
    assert problems == [], "\n".join(problems)
    out = StringIO()
    call_command("check_ledger", stdout=out, stderr=StringIO())
    assert "ledger OK" in out.getvalue()


def test_an_entry_between_two_currencies_unbalances_its_transaction(ledger):
    euro_cash = services.system_account("cash", "EUR")
    entry = Entry.objects.get(transaction=ledger.paid.issued_by)
    corrupt(
        "UPDATE wallets_entry SET debit_account_id = %s WHERE id = %s", [euro_cash.pk, entry.pk]
    )
    found = check_ledger_errors()
    assert_found(found, "every transaction balances per currency",
                 f"transaction {entry.transaction_id} in EUR")  # fmt: skip
    assert_found(found, "every transaction balances per currency",
                 f"transaction {entry.transaction_id} in USD")  # fmt: skip
    assert_found(
        found, "an entry's currency", f"entry {entry.pk} of transaction {entry.transaction_id}"
    )


def test_an_entry_in_another_currency_than_its_accounts(ledger):
    entry = Entry.objects.filter(transaction=ledger.usage).first()
    assert entry is not None
    corrupt("UPDATE wallets_entry SET currency = 'EUR' WHERE id = %s", [entry.pk])
    assert_found(check_ledger_errors(), "an entry's currency",
                 f"entry {entry.pk} of transaction {ledger.usage.pk}")  # fmt: skip


def test_a_transaction_in_another_currency_than_its_wallet(ledger):
    LedgerTransaction.objects.filter(pk=ledger.usage.pk).update(currency="EUR")
    found = check_ledger_errors()
    assert_found(
        found, "a grant, its account and its wallet agree", f"transaction {ledger.usage.pk}"
    )
    assert_found(found, "an entry's currency", f"entry {ledger.usage.entries.get().pk} of "
                 f"transaction {ledger.usage.pk}")  # fmt: skip


def test_a_flow_its_kind_never_books(ledger):
    # credit that expired goes to usage revenue instead of breakage: every balance
    # still adds up, only the flow is wrong
    revenue = services.system_account("usage_revenue", "USD")
    entry = ledger.expiry.entries.get()
    corrupt("UPDATE wallets_entry SET credit_account_id = %s WHERE id = %s", [revenue.pk, entry.pk])
    found = check_ledger_errors()
    assert_found(found, "a transaction books only the flows of its kind",
                 f"entry {entry.pk} of transaction {ledger.expiry.pk}")  # fmt: skip
    assert "grant → usage_revenue, ledger says no such flow in a expiry transaction" in found
    assert len(found.strip().splitlines()) == 1


def test_a_transaction_moving_another_customers_credit(ledger):
    # alice's usage draws from bob's grant instead of hers
    bobs_grant = CreditGrant.objects.filter(wallet=ledger.bob).order_by("id").first()
    assert bobs_grant is not None
    entry = ledger.usage.entries.get()
    corrupt("UPDATE wallets_entry SET debit_account_id = %s WHERE id = %s",
            [bobs_grant.account_id, entry.pk])  # fmt: skip
    assert_found(check_ledger_errors(), "a transaction moves only its own wallet's accounts",
                 f"entry {entry.pk} of transaction {ledger.usage.pk}")  # fmt: skip


def test_a_grant_whose_account_belongs_to_another_wallet(ledger):
    Account.objects.filter(pk=ledger.paid.account_id).update(wallet=ledger.bob)
    assert_found(check_ledger_errors(), "a grant, its account and its wallet agree",
                 f"grant {ledger.paid.pk}")  # fmt: skip


def test_money_in_an_account_nobody_owns(ledger):
    stray = Account.objects.create(kind="grant", currency="USD", wallet=ledger.alice)
    cash = services.system_account("cash", "USD")
    Entry.objects.create(transaction=ledger.paid.issued_by, debit_account=cash,
                         credit_account=stray, amount=D("5"), currency="USD")  # fmt: skip
    assert_found(check_ledger_errors(), "a grant, its account and its wallet agree",
                 f"account {stray.pk}")  # fmt: skip


def test_a_grant_remaining_that_is_not_its_accounts_balance(ledger):
    ledger.paid.refresh_from_db()
    CreditGrant.objects.filter(pk=ledger.paid.pk).update(remaining=D("1"))
    found = check_ledger_errors()
    assert_found(found, "grant.remaining equals its account's entries", f"grant {ledger.paid.pk}")
    assert (
        f"grant {ledger.paid.pk}: recorded 1.000000, ledger says {ledger.paid.remaining}" in found
    )


def test_a_grant_marked_expired_without_its_expiry(ledger):
    # an exhausted grant (nothing left, so no balance changes) marked expired
    exhausted = CreditGrant.objects.filter(status="exhausted").first()
    assert exhausted is not None
    CreditGrant.objects.filter(pk=exhausted.pk).update(status="expired")
    found = check_ledger_errors()
    assert_found(found, "a grant's status agrees with its history", f"grant {exhausted.pk}")
    assert len(found.strip().splitlines()) == 1


@pytest.mark.parametrize("status", ["active", "exhausted", "voided"])
def test_an_expired_grant_brought_back(ledger, status):
    expired = ledger.expiry.metadata["grant"]
    CreditGrant.objects.filter(pk=expired).update(status=status)
    assert_found(check_ledger_errors(), "a grant's status agrees with its history",
                 f"grant {expired}")  # fmt: skip


def test_a_wallet_balance_that_is_not_its_grants(ledger):
    Wallet.objects.filter(pk=ledger.alice.pk).update(credit_balance=ledger.alice.credit_balance + 1)
    assert_found(check_ledger_errors(), "wallet.credit_balance / restricted_balance",
                 f"wallet {ledger.alice.pk}")  # fmt: skip


def test_a_wallet_restricted_balance_that_is_not_its_grants(ledger):
    Wallet.objects.filter(pk=ledger.alice.pk).update(restricted_balance=0)
    assert_found(check_ledger_errors(), "wallet.credit_balance / restricted_balance",
                 f"wallet {ledger.alice.pk}")  # fmt: skip


def test_a_wallet_debt_that_is_not_its_receivable(ledger):
    Wallet.objects.filter(pk=ledger.bob.pk).update(debt=ledger.bob.debt + 1)
    assert_found(check_ledger_errors(), "wallet.debt equals its receivable account",
                 f"wallet {ledger.bob.pk}")  # fmt: skip


def test_a_balance_after_off_the_running_sum(ledger):
    LedgerTransaction.objects.filter(pk=ledger.usage.pk).update(
        balance_after=ledger.usage.balance_after + 1
    )
    found = check_ledger_errors()
    subject = f"transaction {ledger.usage.pk} of wallet {ledger.alice.pk}"
    assert_found(found, "each transaction's balance_after", subject)
    assert len(found.strip().splitlines()) == 1  # that transaction alone


@pytest.mark.parametrize("column", ["restricted_after", "debt_after"])
def test_a_restricted_or_debt_after_off_the_running_sum(ledger, column):
    tx = ledger.debt_usage if column == "debt_after" else ledger.usage
    LedgerTransaction.objects.filter(pk=tx.pk).update(**{column: getattr(tx, column) + 1})
    assert_found(check_ledger_errors(), "each transaction's balance_after",
                 f"transaction {tx.pk} of wallet {tx.wallet_id}")  # fmt: skip


def test_a_transfers_receiver_balance_after_off_the_running_sum(ledger):
    metadata = {**ledger.transfer.metadata, "target_balance_after": "999"}
    LedgerTransaction.objects.filter(pk=ledger.transfer.pk).update(metadata=metadata)
    assert_found(check_ledger_errors(), "each transaction's balance_after",
                 f"transaction {ledger.transfer.pk} of wallet {ledger.bob.pk}")  # fmt: skip


def test_a_missing_entry_moves_every_later_balance_after(ledger):
    entry = ledger.usage.entries.get()
    corrupt("DELETE FROM wallets_entry WHERE id = %s", [entry.pk])
    found = check_ledger_errors()
    assert_found(found, "each transaction's balance_after",
                 f"transaction {ledger.usage.pk} of wallet {ledger.alice.pk}")  # fmt: skip
    assert_found(found, "grant.remaining equals its account's entries", f"grant {ledger.paid.pk}")


def test_a_lot_on_a_grant_its_transaction_never_moved(ledger):
    other = CreditGrant.objects.filter(wallet=ledger.alice).exclude(pk=ledger.paid.pk).first()
    assert other is not None
    GrantConsumption.objects.create(transaction=ledger.usage, grant=other, amount=D("1"))
    found = check_ledger_errors()
    assert_found(found, "a lot belongs to a transaction that moved its grant's money",
                 f"lot of transaction {ledger.usage.pk} on grant {other.pk}")  # fmt: skip


def test_a_lot_larger_than_what_was_moved(ledger):
    lot = ledger.usage.lots.get()
    corrupt("UPDATE wallets_grantconsumption SET amount = amount + 1 WHERE id = %s", [lot.pk])
    found = check_ledger_errors()
    subject = f"lot of transaction {ledger.usage.pk} on grant {lot.grant_id}"
    assert_found(found, "a lot belongs to a transaction that moved its grant's money", subject)
    assert_found(found, "what usage, debt settlement and transfers take",
                 f"transaction {ledger.usage.pk} grant {lot.grant_id}")  # fmt: skip
    assert_found(found, "grant.remaining = its amount", f"grant {lot.grant_id}")


def test_a_lot_on_a_transaction_that_draws_nothing(ledger):
    GrantConsumption.objects.create(transaction=ledger.expiry, grant_id=ledger.expiry.metadata["grant"],
                                    amount=D("1"))  # fmt: skip
    assert_found(check_ledger_errors(), "a lot belongs to a transaction that moved its grant's money",
                 f"lot of transaction {ledger.expiry.pk} on grant {ledger.expiry.metadata['grant']}")  # fmt: skip


@pytest.mark.parametrize("target", ["usage", "settlement", "transfer"])
def test_a_draw_without_its_lot(ledger, target):
    tx = getattr(ledger, target)
    lot = tx.lots.order_by("id").first()
    corrupt("DELETE FROM wallets_grantconsumption WHERE id = %s", [lot.pk])
    found = check_ledger_errors()
    assert_found(found, "what usage, debt settlement and transfers take",
                 f"transaction {tx.pk} grant {lot.grant_id}")  # fmt: skip


def test_a_reversal_that_does_not_give_back_its_lots(ledger):
    lot = ledger.reversal.lots.get()
    corrupt("DELETE FROM wallets_grantconsumption WHERE id = %s", [lot.pk])
    assert_found(check_ledger_errors(), "a reversal's lots give back exactly",
                 f"reversal {ledger.reversal.pk} grant {lot.grant_id}")  # fmt: skip


def test_a_grant_amount_its_history_does_not_explain(ledger):
    # remaining still equals the account: only the amount issued was changed
    CreditGrant.objects.filter(pk=ledger.paid.pk).update(amount=ledger.paid.amount + 5)
    found = check_ledger_errors()
    assert_found(found, "grant.remaining = its amount", f"grant {ledger.paid.pk}")
    assert len(found.strip().splitlines()) == 1


def test_an_active_grant_that_was_never_activated(ledger):
    CreditGrant.objects.filter(pk=ledger.paid.pk).update(activated_at=None)
    found = check_ledger_errors()
    assert_found(found, "grant.remaining = its amount", f"grant {ledger.paid.pk}")
    assert "never activated" in found


def test_debt_above_the_limit_in_force_when_it_was_booked(ledger):
    # booked before bob's limit was raised from 0 to 20: the debt was never allowed
    before = ledger.limit_change.changed_at - timedelta(minutes=1)
    LedgerTransaction.objects.filter(pk=ledger.debt_usage.pk).update(created_at=before)
    found = check_ledger_errors()
    assert_found(found, "usage never took debt above the credit limit",
                 f"transaction {ledger.debt_usage.pk} of wallet {ledger.bob.pk} at "
                 f"{before.isoformat(timespec='microseconds').replace('+00:00', 'Z')}")  # fmt: skip
    assert "recorded debt after 12.000000, ledger says limit then 0.000000" in found


def test_debt_above_a_temporary_increase_that_had_lapsed(ledger):
    # bob's limit (no change recorded since): 5, with +10 until just after his usage
    # took 12 of debt: allowed. Until just before it: the debt was never allowed.
    booked = ledger.debt_usage.created_at
    bob = Wallet.objects.filter(pk=ledger.bob.pk)
    bob.update(credit_limit=D("5"), temporary_credit_increase=D("10"),
               temporary_increase_valid_until=booked + timedelta(microseconds=1))  # fmt: skip
    out = StringIO()
    call_command("check_ledger", stdout=out, stderr=StringIO())
    assert "ledger OK" in out.getvalue()
    bob.update(temporary_increase_valid_until=booked)
    found = check_ledger_errors()
    at = booked.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert_found(found, "usage never took debt above the credit limit",
                 f"transaction {ledger.debt_usage.pk} of wallet {ledger.bob.pk} at {at}")  # fmt: skip
    assert "recorded debt after 12.000000, ledger says limit then 5.000000" in found


def test_every_check_has_a_corruption_test():
    tested = {
        "every transaction balances per currency", "an entry's currency",
        "a transaction books only the flows of its kind", "a transaction moves only its own",
        "a grant, its account and its wallet agree", "grant.remaining equals its account's",
        "wallet.credit_balance / restricted_balance", "wallet.debt equals its receivable",
        "each transaction's balance_after", "a lot belongs to a transaction",
        "what usage, debt settlement and transfers take", "a reversal's lots give back",
        "grant.remaining = its amount", "usage never took debt above",
        "a grant's status agrees with its history",
    }  # fmt: skip
    # the invoices app's checks (registered into CHECKS) have theirs in
    # tests/invoices/test_ledger_check.py
    from invoices.ledger_check import CHECKS as INVOICE_CHECKS

    own = [c for c in CHECKS if c not in INVOICE_CHECKS]
    assert sorted(c.rule for c in own if not any(c.rule.startswith(t) for t in tested)) == []
    assert len(own) == len(tested)


def test_only_a_superuser_session_can_go_around_the_immutability_trigger(ledger):
    entry = ledger.usage.entries.get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (True,)  # the test database's owner
        cursor.execute("CREATE ROLE ledger_check_app NOSUPERUSER")
        cursor.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO ledger_check_app")
        cursor.execute("SET LOCAL ROLE ledger_check_app")
        with (
            pytest.raises(ProgrammingError, match="session_replication_role"),
            transaction.atomic(),
        ):
            cursor.execute("SET LOCAL session_replication_role = replica")
        with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
            cursor.execute("UPDATE wallets_entry SET amount = 1 WHERE id = %s", [entry.pk])
        cursor.execute("RESET ROLE")
