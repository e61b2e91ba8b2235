"""Transfers of credit between two wallets of one currency."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    ZERO,
    Account,
    CreditGrant,
    LedgerTransaction,
    Wallet,
)
from wallets.services.drawdown import _take, _unrestricted_grants, draw_order
from wallets.services.grants import default_expiry
from wallets.services.inputs import (
    _existing,
    _instant,
    _key,
    _money,
    _once,
    _request_hash,
)
from wallets.services.posting import Code, Kind, Leg, Status, _lock_wallets, _post

# --- transfers --------------------------------------------------------------------


def transfer(
    *,
    source: Wallet | int,
    target: Wallet | int,
    amount: Decimal | str | int,
    actor: Actor,
    idempotency_key: str,
    memo: str = "",
    expires_at: datetime | None = None,
    enforce_policy: bool = True,
) -> LedgerTransaction:
    """Move prepaid credit from one customer to another (PortaBilling's
    subscriber-to-subscriber transfer). Only unrestricted credit in force now moves,
    never the credit limit. Each sender grant drawn arrives as its own `transfer`
    grant on the target that keeps that grant's expiry (credit never lives longer by
    changing hands; credit without one gets the default period), remembers it as its
    source (a void sends the unused part back there), and pays the receiver's debt
    first. `expires_at` may shorten the expiry, never lengthen it. Both wallets are
    locked in id order."""
    amount = _money(amount)
    key = _key(idempotency_key)
    source_id = source.pk if isinstance(source, Wallet) else source
    target_id = target.pk if isinstance(target, Wallet) else target
    if source_id == target_id:
        raise errors.TransferNotAllowed("a wallet cannot transfer to itself.")
    request_hash = _request_hash(
        "transfer", source=source_id, target=target_id, amount=amount, memo=memo,
        expires_at=_instant(expires_at), enforce_policy=enforce_policy,
    )  # fmt: skip

    def book() -> LedgerTransaction:
        sender, receiver = _lock_wallets(source_id, target_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        if sender.currency != receiver.currency:
            raise errors.CurrencyMismatch(
                f"cannot transfer {sender.currency} to a {receiver.currency} wallet; no conversion."
            )
        if enforce_policy:
            for side, w in (("sender", sender), ("receiver", receiver)):
                if not w.customer.transfers_allowed():
                    raise errors.TransferNotAllowed(
                        f"transfers are not allowed for the {side} ({w.customer}); change its "
                        "transfer policy or customer class."
                    )
        now = timezone.now()
        if expires_at is not None and expires_at <= now:
            raise errors.WalletError("expires_at must be in the future.")
        grants = _unrestricted_grants(sender, now)
        available = sum((g.remaining for g in grants), ZERO)
        if amount > available:
            raise errors.InsufficientFunds(
                f"insufficient funds: {amount} {sender.currency} requested, {available} of "
                "unrestricted credit available to transfer.",
                needed=amount,
                available=available,
            )
        taken = _take(grants, amount)
        legs: list[Leg] = []
        received: list[CreditGrant] = []
        for origin, part in taken.items():
            ends = [t for t in (origin.expires_at, expires_at) if t is not None]
            account = Account.objects.create(
                kind=Account.Kind.GRANT, currency=receiver.currency, wallet=receiver
            )
            grant = CreditGrant.objects.create(
                wallet=receiver, account=account,
                name=f"Transfer from {sender.customer.account_number}",
                kind=CreditGrant.Kind.TRANSFER, amount=part, currency=receiver.currency,
                effective_at=now, expires_at=min(ends) if ends else default_expiry(now),
                status=Status.ACTIVE, funding_code=Code.CASH, source_type="transfer_grant",
                source_id=str(origin.pk), created_at=now, activated_at=now,
            )  # fmt: skip
            legs.append(Leg(origin.account_id, grant.account_id, part))
            received.append(grant)
        owed = receiver.debt
        for grant in sorted(received, key=draw_order):
            if owed <= 0:
                break
            pay = min(owed, grant.amount)
            legs.append(Leg(grant.account_id, receiver.receivable_account_id, pay))
            owed -= pay
        tx = _post(
            wallet=sender, kind=Kind.TRANSFER, legs=legs, grants=[*taken, *received], key=key,
            request_hash=request_hash, actor=actor, amount=amount, other_wallets=[receiver],
            memo=memo or f"Transfer to {receiver.customer.account_number}",
            lots={g.pk: part for g, part in taken.items()},
            metadata={"target_wallet": receiver.pk, "received_grants": [g.pk for g in received]},
        )  # fmt: skip
        tx.metadata.update(
            target_balance_after=str(receiver.credit_balance), target_debt_after=str(receiver.debt)
        )
        tx.save(update_fields=["metadata"])
        CreditGrant.objects.filter(pk__in=[g.pk for g in received]).update(issued_by=tx)
        return tx

    return _once(key, request_hash, book, lambda earlier: earlier)
