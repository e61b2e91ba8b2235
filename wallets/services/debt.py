"""Debt: payments, settlement from credit (one wallet, and the job over all), rounding."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.utils import timezone

from jobs.runner import Batch
from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    ZERO,
    CreditGrant,
    LedgerTransaction,
    Wallet,
)
from wallets.services.drawdown import _take, _unrestricted_grants
from wallets.services.inputs import (
    QUANTUM,
    _existing,
    _key,
    _money,
    _once,
    _request_hash,
)
from wallets.services.posting import Code, Kind, Leg, _lock_wallet, _post, system_account

# --- debt -------------------------------------------------------------------------


def record_debt_payment(
    *,
    wallet: Wallet | int,
    amount: Decimal | str | int,
    actor: Actor,
    idempotency_key: str,
    funding: str = Code.CASH,
    memo: str = "",
    reference: str = "",
) -> LedgerTransaction:
    """Money received against what the customer owes (`cash → receivable`). A payment
    larger than the debt is refused: record the rest as a payment on account."""
    amount = _money(amount)
    key = _key(idempotency_key)
    if funding not in (Code.CASH, Code.PSP_CLEARING):
        raise errors.WalletError("funding must be 'cash' or 'psp_clearing' for a payment.")
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    request_hash = _request_hash(
        "debt_payment", wallet=wallet_id, amount=amount, funding=funding, memo=memo,
        reference=reference,
    )  # fmt: skip

    def book() -> LedgerTransaction:
        locked = _lock_wallet(wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        if amount > locked.debt:
            raise errors.InvalidAmount(
                f"the payment ({amount}) is more than the debt ({locked.debt}); record the "
                "difference as a payment on account (a credit grant)."
            )
        source = system_account(funding, locked.currency)
        return _post(
            wallet=locked, kind=Kind.DEBT_PAYMENT, legs=[Leg(source.pk, locked.receivable_account_id, amount)],
            grants=[], key=key, request_hash=request_hash, actor=actor, amount=amount,
            memo=memo or "Payment on debt", reference=reference,
        )  # fmt: skip

    return _once(key, request_hash, book, lambda earlier: earlier)


def settle_debt(
    *,
    wallet: Wallet | int,
    actor: Actor,
    idempotency_key: str,
    amount: Decimal | str | int | None = None,
) -> LedgerTransaction | None:
    """Pay the wallet's debt from its unrestricted credit (`grant → receivable`).
    Restricted grants never pay debt. Returns None when there is nothing to settle."""
    key = _key(idempotency_key)
    wanted = _money(amount) if amount is not None else None
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    request_hash = _request_hash("settle", wallet=wallet_id, amount=wanted)

    def book() -> LedgerTransaction | None:
        locked = _lock_wallet(wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        now = timezone.now()
        grants = _unrestricted_grants(locked, now)
        available = sum((g.remaining for g in grants), ZERO)
        target = min(locked.debt, available, wanted if wanted is not None else locked.debt)
        if target <= 0:
            return None
        taken = _take(grants, target)
        return _post(
            wallet=locked, kind=Kind.DEBT_SETTLEMENT,
            legs=[Leg(g.account_id, locked.receivable_account_id, part) for g, part in taken.items()],
            grants=taken, key=key, request_hash=request_hash, actor=actor, amount=target,
            memo="Debt settled from credit", lots={g.pk: part for g, part in taken.items()},
        )  # fmt: skip

    return _once(key, request_hash, book, lambda earlier: earlier)


SETTLE_JOB_ACTOR = Actor.job("settle_debts")


def _owing_with_spendable_credit(at: datetime, after: int, limit: int) -> list[int]:
    """Wallets (ids after `after`, in id order) that owe and hold unrestricted credit
    in force at `at`."""
    spendable = CreditGrant.objects.in_force(at).filter(restricted=False, remaining__gt=0)
    return list(
        Wallet.objects.filter(pk__gt=after, debt__gt=0, pk__in=spendable.values("wallet_id"))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def settle_effective_credit_batches(
    *, batch_size: int = 200, at: datetime | None = None, actor: Actor = SETTLE_JOB_ACTOR
) -> Iterator[Batch]:
    """Credit pays debt as soon as it is in force. A grant issued (or activated)
    while not yet effective pays nothing at once; once it is effective, this job
    settles every wallet that owes and holds spendable credit (`settle_debt`, one
    transaction per wallet, wallets in id order). The key names the wallet's last
    ledger transaction, so a rerun after a crash books nothing twice (the state it
    keys on has moved on, and then there is nothing left to settle)."""
    at = at or timezone.now()
    after = 0
    while True:
        ids = _owing_with_spendable_credit(at, after, batch_size)
        if not ids:
            return
        settled = 0
        for wallet_id in ids:
            last = (
                LedgerTransaction.objects.filter(wallet_id=wallet_id)
                .order_by("-id")
                .values_list("pk", flat=True)
                .first()
            )
            key = f"settle:in-force:{wallet_id}:{last}"
            if settle_debt(wallet=wallet_id, actor=actor, idempotency_key=key) is not None:
                settled += 1
        yield Batch(processed=settled)
        after = ids[-1]


def settle_effective_credit(*, at: datetime | None = None) -> int:
    """The whole `settle_debts` job at once (tests, shell): wallets settled."""
    return sum(batch.processed for batch in settle_effective_credit_batches(at=at))


def round_debt(
    *,
    wallet: Wallet | int,
    exact: Decimal | str,
    quantum: Decimal | str,
    actor: Actor,
    idempotency_key: str,
    newer: Decimal | str = ZERO,
    memo: str = "",
) -> LedgerTransaction | None:
    """A document billed `exact` of debt (6 places) in whole `quantum`s (cents). What
    is still owed of that debt *now* is rounded the same way (half up), and the
    difference is booked against the `rounding` account, so what the customer still
    owes is in whole cents. Debt already paid (settled exactly from credit, or by a
    payment) is not rounded: there is nothing left to collect in cents, and a paid
    document never gets new debt. Payments reach the oldest debt first, so `newer`
    (debt booked after the document's period) is counted as owed before this
    document's debt. Returns None when nothing is to round."""
    try:
        billed = Decimal(exact)
        unit = Decimal(quantum)
        later = Decimal(newer)
    except (InvalidOperation, TypeError, ValueError):
        raise errors.InvalidAmount(
            f"exact, quantum and newer must be numbers, got {exact!r}, {quantum!r}, {newer!r}."
        ) from None
    if not all(v.is_finite() for v in (billed, unit, later)):
        raise errors.InvalidAmount("exact, quantum and newer must be finite numbers.")
    if billed < 0 or later < 0 or billed != billed.quantize(QUANTUM):
        raise errors.InvalidAmount(
            f"exact debt must be zero or positive with at most 6 decimals, got {billed}."
        )
    if not QUANTUM <= unit <= 1:
        raise errors.InvalidAmount(f"quantum must be between 0.000001 and 1, got {unit}.")
    key = _key(idempotency_key)
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    request_hash = _request_hash(
        "round_debt", wallet=wallet_id, exact=billed, quantum=unit, newer=later, memo=memo
    )

    def book() -> LedgerTransaction | None:
        locked = _lock_wallet(wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        owed = max(ZERO, min(billed, locked.debt - later))
        diff = owed.quantize(unit, rounding=ROUND_HALF_UP) - owed
        if diff == 0:
            return None
        rounding = system_account(Code.ROUNDING, locked.currency).pk
        leg = (
            Leg(locked.receivable_account_id, rounding, diff)
            if diff > 0
            else Leg(rounding, locked.receivable_account_id, -diff)
        )
        return _post(
            wallet=locked, kind=Kind.ROUNDING, legs=[leg], grants=[], key=key, request_hash=request_hash,
            actor=actor, amount=abs(diff), memo=memo or "Rounding to the cent billed",
            metadata={"exact": str(billed), "owed": str(owed)},
        )  # fmt: skip

    return _once(key, request_hash, book, lambda earlier: earlier)
