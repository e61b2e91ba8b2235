"""Reversal: undo a transaction with a new one that swaps every entry."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    CreditGrant,
    Entry,
    LedgerTransaction,
)
from wallets.services.grants import _new_grant
from wallets.services.inputs import (
    _existing,
    _key,
    _once,
    _request_hash,
)
from wallets.services.posting import Code, Kind, Leg, Status, _lock_wallets, _post, system_account

# --- reversal ---------------------------------------------------------------------

REVERSIBLE = {
    Kind.USAGE,
    Kind.GRANT,
    Kind.ACTIVATION,
    Kind.TRANSFER,
    Kind.DEBT_PAYMENT,
    Kind.DEBT_SETTLEMENT,
    Kind.ROUNDING,
}


def reverse(
    *, transaction_id: int, actor: Actor, idempotency_key: str, memo: str = ""
) -> LedgerTransaction:
    """Undo a transaction with a new one that swaps every entry; nothing is edited.

    Credit returns to the very grants it came from, with their original expiry and
    conditions (a grant that has since expired sends it straight on to breakage).
    A reversal is the exact mirror of its transaction or it is refused: issued credit
    can be taken back only while unspent, and the issue of a grant created pending
    (which moved no money) is refused with a message to void the grant instead."""
    key = _key(idempotency_key)
    request_hash = _request_hash("reverse", transaction=transaction_id, memo=memo)

    def book() -> LedgerTransaction:
        try:
            original = LedgerTransaction.objects.get(pk=transaction_id)
        except LedgerTransaction.DoesNotExist:
            raise errors.WalletError(f"transaction {transaction_id} does not exist.") from None
        if original.kind not in REVERSIBLE:
            raise errors.NotReversible(
                f"a {original.get_kind_display().lower()} transaction cannot be reversed."
            )
        involved = {
            original.wallet_id,
            *([original.metadata["target_wallet"]] if original.kind == Kind.TRANSFER else []),
        }
        locked = _lock_wallets(*sorted(i for i in involved if i is not None))
        wallet = next(w for w in locked if w.pk == original.wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        if LedgerTransaction.objects.filter(reverses=original).exists():
            raise errors.NotReversible(f"transaction {original.pk} has already been reversed.")

        entries = list(original.entries.all())
        if original.kind == Kind.GRANT and not entries:
            _refuse_reversing_a_pending_issue(original)
        accounts = {e.debit_account_id for e in entries} | {e.credit_account_id for e in entries}
        grants = {g.account_id: g for g in CreditGrant.objects.filter(account_id__in=accounts)}
        legs = [Leg(e.credit_account_id, e.debit_account_id, e.amount) for e in entries]
        receivables = {w.receivable_account_id: w for w in locked}

        # Credit that the original put into a grant must still be there to take back.
        issued = _net_into_grants(entries, grants)
        for account_id, value in issued.items():
            grant = grants[account_id]
            if value > 0 and grant.remaining < value:
                raise errors.NotReversible(
                    f"{grant.name}: {value} was credited but only {grant.remaining} is left "
                    f"({grant.amount - grant.remaining} already used); void the unused part instead."
                )
        # Debt the original paid off can come back; debt it created may since have
        # been paid, and then the excess is the customer's money: a credit on account.
        extra_grants: list[CreditGrant] = []
        for i, leg in enumerate(legs):
            owner = receivables.get(leg.credit)
            if owner is not None and leg.amount > owner.debt:
                excess = leg.amount - owner.debt
                legs[i] = Leg(leg.debit, leg.credit, owner.debt)
                refund = _new_grant(owner, amount=excess, kind=CreditGrant.Kind.PAYMENT_ON_ACCOUNT,
                                    name="Credit from reversed usage", funding=Code.CASH)  # fmt: skip
                extra_grants.append(refund)
                legs.append(Leg(leg.debit, refund.account_id, excess))
        # Credit returned to a grant that has ended goes on to breakage / its funder.
        for account_id, value in issued.items():
            grant = grants[account_id]
            if value < 0 and grant.status in (Status.EXPIRED, Status.VOIDED):
                code = Code.BREAKAGE if grant.status == Status.EXPIRED else grant.funding_code
                legs.append(Leg(account_id, system_account(code, wallet.currency).pk, -value))
            elif value > 0 and original.kind in (Kind.GRANT, Kind.ACTIVATION, Kind.TRANSFER):
                grant.status = Status.VOIDED
        lots = {lot.grant_id: -lot.amount for lot in original.lots.all()}
        tx = _post(
            wallet=wallet, kind=Kind.REVERSAL, legs=legs, grants=[*grants.values(), *extra_grants],
            key=key, request_hash=request_hash, actor=actor, amount=original.amount,
            memo=memo or f"Reversal of {original.get_kind_display().lower()} #{original.pk}",
            reference=original.reference, reverses=original, lots=lots,
            other_wallets=[w for w in locked if w.pk != wallet.pk],
            metadata={"reversed_kind": original.kind},
        )  # fmt: skip
        return tx

    return _once(key, request_hash, book, lambda earlier: earlier)


def _refuse_reversing_a_pending_issue(original: LedgerTransaction) -> None:
    """The issue of a grant created pending booked no money: swapping its (no) entries
    would change nothing, and the grant would stay pending, or keep the credit its
    activation gave it. A grant is cancelled by voiding it, which does it exactly
    (pending: never becomes credit; active: the unused part back to its funder)."""
    grant = CreditGrant.objects.filter(issued_by=original).first()
    if grant is None:
        raise errors.NotReversible(f"transaction {original.pk} moved no money; nothing to reverse.")
    label = f"{grant.name} (grant {grant.pk})"
    if grant.status == Status.PENDING:
        raise errors.NotReversible(
            f"{label} is pending (awaiting payment): its issuing transaction moved no money, "
            "so reversing it would change nothing; void the grant instead."
        )
    if grant.status in (Status.ACTIVE, Status.EXHAUSTED):
        activation = (
            LedgerTransaction.objects.filter(kind=Kind.ACTIVATION, metadata__grant=grant.pk)
            .order_by("pk")
            .first()
        )
        by = f"transaction {activation.pk}" if activation else "a later transaction"
        raise errors.NotReversible(
            f"{label} was activated by {by}: its issuing transaction moved no money, and "
            "reversing it would leave the credit in place; void the grant instead (its "
            "unused part goes back to its funder)."
        )
    raise errors.NotReversible(
        f"{label} is already {grant.get_status_display().lower()}; its issuing transaction "
        "moved no money, so there is nothing to reverse."
    )


def _net_into_grants(entries: list[Entry], grants: dict[int, CreditGrant]) -> dict[int, Decimal]:
    """Per grant account: how much the original transaction added (+) or took (−)."""
    net: dict[int, Decimal] = defaultdict(Decimal)
    for e in entries:
        if e.credit_account_id in grants:
            net[e.credit_account_id] += e.amount
        if e.debit_account_id in grants:
            net[e.debit_account_id] -= e.amount
    return net
