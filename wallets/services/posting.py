"""The posting core every service shares: system accounts, wallet locks (always in
id order), and `_post`, which books legs and moves every cached balance they touch
in the same database transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    ZERO,
    Account,
    CreditGrant,
    Entry,
    GrantConsumption,
    LedgerTransaction,
    Wallet,
)

NEVER = datetime.max.replace(tzinfo=UTC)  # sorts "no expiry" after every date

Kind = LedgerTransaction.Kind
Status = CreditGrant.Status
Code = Account.Code

# Which system account pays for a grant of each kind, unless the caller says otherwise.
DEFAULT_FUNDING: dict[str, str] = {
    CreditGrant.Kind.PAID: Code.CASH,
    CreditGrant.Kind.FREE: Code.PROMOTIONS,
    CreditGrant.Kind.REFILL_CARD: Code.REFILL_CARDS,
    CreditGrant.Kind.TOP_UP: Code.CASH,
    CreditGrant.Kind.PAYMENT_ON_ACCOUNT: Code.CASH,
}
FUNDING_CODES: set[str] = {Code.CASH, Code.PSP_CLEARING, Code.PROMOTIONS, Code.REFILL_CARDS}


# --- accounts and locks -----------------------------------------------------------


def system_account(code: str, currency: str) -> Account:
    account, _ = Account.objects.get_or_create(
        kind=Account.Kind.SYSTEM, code=code, currency=currency
    )
    return account


def _lock_wallet(wallet: Wallet | int) -> Wallet:
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    try:
        return Wallet.objects.select_for_update().get(pk=wallet_id)
    except Wallet.DoesNotExist:
        raise errors.WalletNotFound(f"wallet {wallet_id} does not exist.") from None


def _lock_wallets(*wallets: Wallet | int) -> list[Wallet]:
    """Lock several wallets in id order, so two transfers in opposite directions
    never wait on each other (no deadlock)."""
    ids = sorted({w.pk if isinstance(w, Wallet) else w for w in wallets})
    locked = {w.pk: w for w in Wallet.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
    missing = [i for i in ids if i not in locked]
    if missing:
        raise errors.WalletNotFound(f"wallet {missing[0]} does not exist.")
    return [locked[w.pk if isinstance(w, Wallet) else w] for w in wallets]


@transaction.atomic
def _lock_wallet_ids(wallets: QuerySet[Wallet]) -> list[int]:
    """Lock these wallets in id order (the order every multi-wallet write uses)."""
    return list(wallets.select_for_update(of=("self",)).order_by("pk").values_list("pk", flat=True))


# --- posting ----------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    """Move `amount` from the debit account to the credit account."""

    debit: int
    credit: int
    amount: Decimal


def _post(
    *,
    wallet: Wallet,
    kind: str,
    legs: Iterable[Leg],
    grants: Iterable[CreditGrant],
    key: str,
    request_hash: str,
    actor: Actor,
    amount: Decimal,
    at: datetime | None = None,
    memo: str = "",
    reference: str = "",
    reverses: LedgerTransaction | None = None,
    metadata: dict | None = None,
    lots: dict[int, Decimal] | None = None,
    other_wallets: Iterable[Wallet] = (),
) -> LedgerTransaction:
    """Book legs and move every cached balance they touch. Wallets must be locked.

    A grant account's balance is credits minus debits (credit we owe the customer);
    a receivable's is debits minus credits (what the customer owes us)."""
    legs = [leg for leg in legs if leg.amount]
    change: dict[int, Decimal] = defaultdict(Decimal)
    for leg in legs:
        change[leg.debit] -= leg.amount
        change[leg.credit] += leg.amount

    wallets = {wallet.pk: wallet, **{w.pk: w for w in other_wallets}}
    touched = {g.account_id: g for g in grants}
    for w in wallets.values():
        if change.get(w.receivable_account_id):
            w.debt -= change[w.receivable_account_id]
    for account_id, grant in touched.items():
        delta = change.get(account_id, ZERO)
        grant.remaining += delta
        if grant.status in (Status.ACTIVE, Status.EXHAUSTED):
            grant.status = Status.EXHAUSTED if grant.remaining == 0 else Status.ACTIVE
        owner = wallets[grant.wallet_id]
        owner.credit_balance += delta
        if grant.restricted:
            owner.restricted_balance += delta

    now = timezone.now()
    _set_clock(now)
    tx = LedgerTransaction.objects.create(
        kind=kind,
        wallet=wallet,
        idempotency_key=key,
        request_hash=request_hash,
        effective_at=at or now,
        created_at=now,
        actor=actor.label,
        actor_user_id=actor.user_id,
        memo=memo[:500],
        reference=reference,
        amount=amount,
        currency=wallet.currency,
        balance_after=wallet.credit_balance,
        restricted_after=wallet.restricted_balance,
        debt_after=wallet.debt,
        reverses=reverses,
        metadata=metadata or {},
    )
    Entry.objects.bulk_create(
        Entry(
            transaction=tx,
            debit_account_id=leg.debit,
            credit_account_id=leg.credit,
            amount=leg.amount,
            currency=wallet.currency,
        )
        for leg in legs
    )
    if lots:
        GrantConsumption.objects.bulk_create(
            GrantConsumption(transaction=tx, grant_id=grant_id, amount=value)
            for grant_id, value in lots.items()
            if value
        )
    if touched:
        for grant in touched.values():
            if grant.status not in (Status.ACTIVE, Status.EXHAUSTED):
                grant.ended_at = grant.ended_at or now
        CreditGrant.objects.bulk_update(
            touched.values(),
            ["remaining", "status", "ended_at", "activated_at", "external_transaction_id"],
        )
    for w in wallets.values():
        w.updated_at = now
        w.save(update_fields=["credit_balance", "restricted_balance", "debt", "updated_at"])
    return tx


def _set_clock(now: datetime) -> None:
    """Tell the database when this movement happens (`wallets.now`, for the rest of
    the transaction): the warning trigger measures available funds at that moment,
    as the draw-down functions do with their `p_now` (wallets/sql/)."""
    with connection.cursor() as db:
        db.execute("SELECT set_config('wallets.now', %s, true)", [now.isoformat()])
