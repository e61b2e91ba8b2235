"""Refunds of a paid grant: where the money comes back from."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.money import amount_text
from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    ZERO,
    CreditGrant,
    LedgerTransaction,
)
from wallets.services.grants import _grant, _locked_grant
from wallets.services.inputs import (
    _existing,
    _key,
    _money,
    _once,
    _request_hash,
)
from wallets.services.posting import Code, Kind, Leg, Status, _post, system_account

# --- refunds ----------------------------------------------------------------------


@dataclass(frozen=True)
class RefundSplit:
    """Where the money of a refund comes back from, for one grant (see `refund_grant`)."""

    grant_id: int
    amount: Decimal  # the refund still to book (refunded total − what is booked already)
    voided: Decimal  # already given back to the funder by a void: nothing more to book
    unused: Decimal  # taken back from the grant's remaining credit
    expired: Decimal  # taken back from breakage (the grant expired unused)
    debt: Decimal  # used credit: the customer now owes it (receivable)
    used: Decimal  # credit of the grant spent so far (usage, transfers, debt paid)

    @property
    def without_debt(self) -> Decimal:
        """What can be refunded now without turning used credit into debt."""
        return self.voided + self.unused + self.expired


def refund_split(*, grant: CreditGrant | int, refunded_total: Decimal | str) -> RefundSplit:
    """How a payment refunded up to `refunded_total` (the running total, as the payment
    provider reports it) is booked for the grant it paid for: what earlier refunds
    have not booked yet comes back first from what a void already gave back, then
    from the unused credit, then from what expired; the rest was used, and becomes
    debt. Reads only; `refund_grant` books it under the wallet lock."""
    target = _grant(grant.pk if isinstance(grant, CreditGrant) else grant)
    total = _money(refunded_total)
    if total > target.amount:
        raise errors.InvalidAmount(
            f"a refund of {total} is more than {target.name} (grant {target.pk}) was for "
            f"({target.amount})."
        )
    history = list(
        LedgerTransaction.objects.filter(
            wallet_id=target.wallet_id,
            kind__in=[Kind.VOID, Kind.EXPIRY, Kind.REFUND],
            metadata__grant=target.pk,
        )
    )
    refunds = [tx.metadata for tx in history if tx.kind == Kind.REFUND]

    def refunded(field: str) -> Decimal:
        return sum((Decimal(r[field]) for r in refunds), ZERO)

    voids = sum((tx.amount for tx in history if tx.kind == Kind.VOID), ZERO)
    expiries = sum((tx.amount for tx in history if tx.kind == Kind.EXPIRY), ZERO)
    booked = max((Decimal(r["refunded_total"]) for r in refunds), default=ZERO)
    unused = target.remaining if target.status in (Status.ACTIVE, Status.EXHAUSTED) else ZERO
    left = max(ZERO, total - booked)
    rest = left
    parts = []
    for bucket in (voids - refunded("voided"), unused, expiries - refunded("expired")):
        part = min(rest, max(bucket, ZERO))
        parts.append(part)
        rest -= part
    used = target.amount - unused - voids - expiries - refunded("unused")
    return RefundSplit(
        grant_id=target.pk, amount=left, voided=parts[0], unused=parts[1], expired=parts[2],
        debt=rest, used=max(used, ZERO),
    )  # fmt: skip


def refund_grant(
    *,
    grant: CreditGrant | int,
    refunded_total: Decimal | str,
    actor: Actor,
    idempotency_key: str,
    allow_debt: bool = False,
    reference: str = "",
    memo: str = "",
) -> LedgerTransaction | None:
    """The payment for a grant was refunded (in part or in full) to the payer: its money
    leaves the grant's funding account (psp_clearing for cards), and the ledger books
    where it comes back from (`refund_split`): the unused credit (grant → funder), an
    expired remainder (breakage → funder), and the used credit, which the customer now
    owes (receivable → funder). Turning used credit into debt needs `allow_debt`
    (staff confirmed it, or the provider already paid the money out); without it such
    a refund raises `RefundNeedsConfirmation` and books nothing. A refund of the whole
    grant voids it. `refunded_total` is the running total: a total already booked
    returns None."""
    key = _key(idempotency_key)
    grant_id = grant.pk if isinstance(grant, CreditGrant) else grant
    total = _money(refunded_total)
    request_hash = _request_hash("refund", grant=grant_id, total=total)

    def book() -> LedgerTransaction | None:
        target, wallet = _locked_grant(grant_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        if target.activated_at is None:
            if target.status == Status.PENDING:
                raise errors.InvalidGrantState(
                    f"{target.name} (grant {target.pk}) is still pending: its payment was never "
                    "booked, so there is no credit to refund. Activate it first, or void it."
                )
            return None  # voided before it was ever paid: the ledger never held its money
        split = refund_split(grant=target, refunded_total=total)
        if split.amount == 0:
            return None
        if split.debt and not allow_debt:
            unused, debt = amount_text(split.without_debt), amount_text(split.debt)
            raise errors.RefundNeedsConfirmation(
                f"{target.name} (grant {target.pk}) has {unused} {wallet.currency} unused; "
                f"refunding {amount_text(split.amount)} turns {debt} {wallet.currency} of used "
                f"credit into debt the customer owes. Confirm that, or refund at most {unused}.",
                unused=split.without_debt,
                debt=split.debt,
            )
        funder = system_account(target.funding_code, wallet.currency).pk
        legs = [Leg(target.account_id, funder, split.unused)]
        if split.expired:
            legs.append(
                Leg(system_account(Code.BREAKAGE, wallet.currency).pk, funder, split.expired)
            )
        if split.debt:
            legs.append(Leg(wallet.receivable_account_id, funder, split.debt))
        if total == target.amount and target.status in (Status.ACTIVE, Status.EXHAUSTED):
            target.status = Status.VOIDED
        note = (
            f"; {amount_text(split.debt)} of used credit is now owed (debt)" if split.debt else ""
        )
        return _post(
            wallet=wallet, kind=Kind.REFUND, legs=legs, grants=[target], key=key, request_hash=request_hash,
            actor=actor, amount=split.amount, reference=reference,
            memo=memo or f"Payment for {target.name} refunded: {amount_text(split.amount)}{note}",
            metadata={
                "grant": target.pk, "refunded_total": str(total), "voided": str(split.voided),
                "unused": str(split.unused), "expired": str(split.expired), "debt": str(split.debt),
            },
        )  # fmt: skip

    return _once(key, request_hash, book, lambda earlier: earlier)
