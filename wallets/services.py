"""Every write to the ledger. Nothing else in the project inserts ledger rows or
changes a cached balance.

Rules every function here follows:
- keyword-only arguments, Decimal amounts (never floats), an `actor` and an
  `idempotency_key`; the same key again returns the first result and books
  nothing, the same key with other arguments raises `IdempotencyConflict`;
- one `transaction.atomic()` per call (a savepoint when an invoice or card service
  calls it inside its own transaction), holding the wallet row lock
  (`SELECT ... FOR UPDATE`; two wallets are locked in id order);
- the cached balances (`CreditGrant.remaining`, `Wallet.credit_balance`,
  `restricted_balance`, `debt`) change in the same database transaction as the
  entries that justify them;
- bad input raises a `wallets.errors.WalletError` whose message says what to fix,
  before anything is written.

The draw-down hot path (`draw_down`, `draw_down_batch`, `DrawDown`, `UsageCharge`)
is in `wallets.drawdown` and re-exported here; the validation and idempotency
helpers every service shares are in `wallets.inputs`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import partial
from itertools import chain

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Customer, CustomerClass, ProductItem
from billing.money import amount_text
from jobs.parallel import Parallel
from jobs.runner import Batch
from wallets import errors
from wallets.actors import Actor
from wallets.drawdown import DrawDown, UsageCharge, draw_down, draw_down_batch  # noqa: F401 (re-export)
from wallets.inputs import (
    QUANTUM,
    _dimensions,
    _existing,
    _instant,
    _key,
    _money,
    _once,
    _request_hash,
)
from wallets.models import (
    ZERO,
    Account,
    CreditGrant,
    CreditLimitChange,
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
def open_wallet(*, customer: Customer, currency: str | None = None) -> Wallet:
    """The customer's wallet in `currency` (default: the customer's), created once."""
    currency = currency or customer.currency
    existing = Wallet.objects.filter(customer=customer, currency=currency).first()
    if existing is not None:
        return existing
    for code in Code.values:
        system_account(code, currency)
    receivable = Account.objects.create(kind=Account.Kind.RECEIVABLE, currency=currency)
    wallet, created = Wallet.objects.get_or_create(
        customer=customer,
        currency=currency,
        defaults={"receivable_account": receivable, **_warning_arrays(customer)},
    )
    if created:
        receivable.wallet = wallet
        receivable.save(update_fields=["wallet"])
    return wallet


def _warning_arrays(customer: Customer) -> dict[str, list[Decimal] | None]:
    """The customer's own thresholds, else its class's defaults, field by field."""
    from billing.thresholds import parse_amounts, parse_percents

    klass = customer.customer_class
    amounts = customer.low_funds_thresholds or (klass.low_funds_thresholds if klass else "")
    percents = customer.credit_limit_warnings or (klass.credit_limit_warnings if klass else "")
    return {
        "low_funds_thresholds": parse_amounts(amounts) or None,
        "credit_limit_warnings": parse_percents(percents) or None,
    }


def copy_warning_thresholds(customer: Customer) -> int:
    """Copy the customer's low-funds and credit-limit warning thresholds (or its
    class's defaults where its own are empty) onto its wallets, where the
    `wallets_balance_warnings` trigger reads them on every change of the cached
    balances (migration 0006). Called explicitly by whatever changed the customer
    (admin, portal alerts page), never by `Customer.save`; the wallets are locked
    in id order first, like every other multi-wallet write, so it cannot deadlock
    with the expiry sweep or a transfer. Returns the number of wallets updated.
    Touches no ledger row and no balance."""
    with transaction.atomic():
        ids = _lock_wallet_ids(Wallet.objects.filter(customer=customer))
        return Wallet.objects.filter(pk__in=ids).update(**_warning_arrays(customer))


def copy_class_warning_thresholds(klass: CustomerClass) -> int:
    """A class's default thresholds changed: copy them onto the wallets of its
    customers whose own lists are empty (two set-based updates, one per list), after
    locking those wallets in id order. Called explicitly by the admin that changed
    the class, never by `CustomerClass.save`; returns the number of wallet rows
    updated."""
    from billing.thresholds import parse_amounts, parse_percents

    with transaction.atomic():
        members = Wallet.objects.filter(pk__in=_lock_wallet_ids(
            Wallet.objects.filter(customer__customer_class=klass)
        ))  # fmt: skip
        return members.filter(customer__low_funds_thresholds="").update(
            low_funds_thresholds=parse_amounts(klass.low_funds_thresholds) or None
        ) + members.filter(customer__credit_limit_warnings="").update(
            credit_limit_warnings=parse_percents(klass.credit_limit_warnings) or None
        )


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
    as the draw-down functions do with their `p_now` (wallets 0010)."""
    with connection.cursor() as db:
        db.execute("SELECT set_config('wallets.now', %s, true)", [now.isoformat()])


def draw_order(grant: CreditGrant) -> tuple:
    """The draw-down order (ARCHITECTURE.md): most specific condition first, then
    lower priority, then earliest expiry (none last), then free before paid, then
    oldest. The draw-down function (migration 0003) orders the same way; keep the two in step."""
    return (
        -grant.specificity,
        grant.priority,
        grant.expires_at or NEVER,
        grant.kind != CreditGrant.Kind.FREE,
        grant.pk,
    )


def _unrestricted_grants(wallet: Wallet, at: datetime) -> list[CreditGrant]:
    """The spendable credit at `at` (`Wallet.spendable_credit`), in draw-down order."""
    grants = CreditGrant.objects.in_force(at).filter(
        wallet=wallet, remaining__gt=0, restricted=False
    )
    return sorted(grants, key=draw_order)


def _take(grants: list[CreditGrant], amount: Decimal) -> dict[CreditGrant, Decimal]:
    taken: dict[CreditGrant, Decimal] = {}
    left = amount
    for grant in grants:
        if left <= 0:
            break
        part = min(grant.remaining, left)
        taken[grant] = part
        left -= part
    return taken


# --- grants -----------------------------------------------------------------------


def grant_credit(
    *,
    wallet: Wallet | int,
    amount: Decimal | str | int,
    kind: str,
    name: str,
    actor: Actor,
    idempotency_key: str,
    pending: bool = False,
    funding: str | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    priority: int = 100,
    condition_item: ProductItem | None = None,
    condition_dimensions: dict | None = None,
    source_type: str = "",
    source_id: str = "",
    external_transaction_id: str = "",
    memo: str = "",
    apply_to_debt: bool = True,
) -> CreditGrant:
    """Add a prepaid grant to the wallet. Active grants are booked `funding → grant`
    at once; pending ones ("Requires Action", Amberflo's Reconcile Later) hold
    nothing until `activate_grant`. An unrestricted active grant in force now pays
    the wallet's debt first (`grant → receivable`), as a payment would; one that is
    not yet effective pays it once it is (`settle_effective_credit`).

    Every grant expires: without `expires_at`, after the default period of
    "Prepaid credit settings", counted from `effective_at`."""
    amount = _money(amount)
    key = _key(idempotency_key)
    if kind not in DEFAULT_FUNDING:
        raise errors.WalletError(
            f"kind must be one of {', '.join(DEFAULT_FUNDING)}; transfers use transfer()."
        )
    funding = funding or DEFAULT_FUNDING[kind]
    if funding not in FUNDING_CODES:
        raise errors.WalletError(f"funding must be one of {', '.join(sorted(FUNDING_CODES))}.")
    if not name or not name.strip():
        raise errors.WalletError("name is required (e.g. 'Starter credits').")
    dims = _dimensions(condition_dimensions)
    now = timezone.now()
    starts = effective_at or now
    if expires_at is not None and expires_at <= starts:
        raise errors.WalletError("expires_at must be after the grant becomes effective.")
    if not 0 <= priority <= 32767:
        raise errors.WalletError("priority must be between 0 and 32767.")
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    request_hash = _request_hash(
        "grant", wallet=wallet_id, amount=amount, kind=kind, pending=pending, funding=funding,
        item=condition_item.pk if condition_item else None, dims=dims,
        expires_at=_instant(expires_at), name=name, effective_at=_instant(effective_at),
        priority=priority, source_type=source_type, source_id=source_id,
        external=external_transaction_id, memo=memo, apply_to_debt=apply_to_debt,
    )  # fmt: skip
    expires = expires_at or default_expiry(starts)

    def book() -> CreditGrant:
        locked = _lock_wallet(wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return replay(earlier)
        account = Account.objects.create(
            kind=Account.Kind.GRANT, currency=locked.currency, wallet=locked
        )
        grant = CreditGrant.objects.create(
            wallet=locked,
            account=account,
            name=name.strip(),
            kind=kind,
            amount=amount,
            remaining=ZERO,
            currency=locked.currency,
            effective_at=starts,
            expires_at=expires,
            priority=priority,
            status=Status.PENDING if pending else Status.ACTIVE,
            condition_item=condition_item,
            condition_dimensions=dims,
            specificity=(condition_item is not None) + len(dims),
            restricted=condition_item is not None or bool(dims),
            funding_code=funding,
            source_type=source_type,
            source_id=source_id,
            external_transaction_id=external_transaction_id,
            created_at=now,
            activated_at=None if pending else now,
        )
        legs = [] if pending else _funding_legs(locked, grant, apply_to_debt=apply_to_debt)
        tx = _post(
            wallet=locked, kind=Kind.GRANT, legs=legs, grants=[grant], key=key,
            request_hash=request_hash, actor=actor, amount=amount,
            memo=memo or (f"{name} (awaiting payment, not yet usable)" if pending else name),
            reference=source_id, metadata={"grant": grant.pk, "pending": pending},
        )  # fmt: skip
        grant.issued_by = tx
        grant.save(update_fields=["issued_by"])
        return grant

    def replay(earlier: LedgerTransaction) -> CreditGrant:
        return CreditGrant.objects.get(issued_by=earlier)

    return _once(key, request_hash, book, replay)


def _in_force(grant: CreditGrant, at: datetime) -> bool:
    """`CreditGrant.objects.in_force` for one grant in hand (time only)."""
    return grant.effective_at <= at and (grant.expires_at is None or at < grant.expires_at)


def _funding_legs(wallet: Wallet, grant: CreditGrant, *, apply_to_debt: bool) -> list[Leg]:
    """Fund the grant; unrestricted credit in force now pays the debt at once. Credit
    not yet effective pays it when it becomes effective (`settle_effective_credit`)."""
    legs = [
        Leg(system_account(grant.funding_code, wallet.currency).pk, grant.account_id, grant.amount)
    ]
    in_force = _in_force(grant, timezone.now())
    if apply_to_debt and in_force and not grant.restricted and wallet.debt > 0:
        legs.append(
            Leg(grant.account_id, wallet.receivable_account_id, min(wallet.debt, grant.amount))
        )
    return legs


def activate_grant(
    *,
    grant: CreditGrant | int,
    external_transaction_id: str,
    actor: Actor,
    idempotency_key: str,
    funding: str | None = None,
    apply_to_debt: bool = True,
) -> LedgerTransaction:
    """Reconcile Later: once payment arrived elsewhere, staff activate the pending
    grant with that payment's transaction id, and its credit becomes usable."""
    key = _key(idempotency_key)
    grant_id = grant.pk if isinstance(grant, CreditGrant) else grant
    external = (external_transaction_id or "").strip()
    if not external:
        raise errors.WalletError(
            "external_transaction_id is required: the payment's id in your payment system."
        )
    if funding is not None and funding not in FUNDING_CODES:
        raise errors.WalletError(f"funding must be one of {', '.join(sorted(FUNDING_CODES))}.")
    request_hash = _request_hash(
        "activate", grant=grant_id, external=external, funding=funding, apply_to_debt=apply_to_debt
    )

    def book() -> LedgerTransaction:
        target = _grant(grant_id)
        wallet = _lock_wallet(target.wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        target.refresh_from_db()
        if target.status != Status.PENDING:
            raise errors.InvalidGrantState(
                f"grant {target.pk} is {target.get_status_display().lower()}, not pending; only a "
                "pending (Requires Action) grant can be activated."
            )
        if target.expires_at is not None and target.expires_at <= timezone.now():
            raise errors.InvalidGrantState(
                f"grant {target.pk} expired on {target.expires_at:%Y-%m-%d %H:%M %Z}; expired "
                "credit cannot be activated. Void it, and issue a new grant if the payment "
                "arrived."
            )
        if funding:
            target.funding_code = funding
            CreditGrant.objects.filter(pk=target.pk).update(funding_code=funding)
        target.status = Status.ACTIVE
        target.activated_at = timezone.now()
        target.external_transaction_id = external
        return _post(
            wallet=wallet, kind=Kind.ACTIVATION, legs=_funding_legs(wallet, target, apply_to_debt=apply_to_debt),
            grants=[target], key=key, request_hash=request_hash, actor=actor, amount=target.amount,
            memo=f"Activated {target.name}", reference=external, metadata={"grant": target.pk},
        )  # fmt: skip

    return _once(key, request_hash, book, lambda earlier: earlier)


def _grant(grant_id: int) -> CreditGrant:
    try:
        return CreditGrant.objects.get(pk=grant_id)
    except CreditGrant.DoesNotExist:
        raise errors.GrantNotFound(f"credit grant {grant_id} does not exist.") from None


def expire_grant(
    *,
    grant: CreditGrant | int,
    actor: Actor,
    idempotency_key: str | None = None,
    at: datetime | None = None,
) -> LedgerTransaction | None:
    """Past its expiry date a grant's remainder is no longer the customer's: it is
    booked to breakage and the balance drops. The transaction's business time is the
    grant's expiry date (as in the sweep); `at` only says how far the clock has gone.
    Returns None if the grant had already ended."""
    grant_id = grant.pk if isinstance(grant, CreditGrant) else grant
    key = _key(idempotency_key or f"expire:grant:{grant_id}")
    at = at or timezone.now()
    request_hash = _request_hash("expire", grant=grant_id)

    def book() -> LedgerTransaction | None:
        target = _grant(grant_id)
        wallet = _lock_wallet(target.wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        target.refresh_from_db()
        if target.expires_at is None or target.expires_at > at:
            raise errors.InvalidGrantState(
                f"grant {target.pk} does not expire until {target.expires_at or 'never'}; nothing to expire yet."
            )
        if target.status not in (Status.ACTIVE, Status.EXHAUSTED, Status.PENDING):
            return None  # already expired or voided
        left = target.remaining
        target.status = Status.EXPIRED
        # Breakage happens at the expiry date, however late this runs: the same
        # business time as the sweep (`expire_due_grants`).
        target.ended_at = target.expires_at
        breakage = system_account(Code.BREAKAGE, wallet.currency)
        return _post(
            wallet=wallet, kind=Kind.EXPIRY, legs=[Leg(target.account_id, breakage.pk, left)],
            grants=[target], key=key, request_hash=request_hash, actor=actor, amount=left,
            at=target.expires_at, memo=f"{target.name} expired", metadata={"grant": target.pk},
        )  # fmt: skip

    return _once(key, request_hash, book, lambda earlier: earlier)


def void_grant(
    *, grant: CreditGrant | int, actor: Actor, idempotency_key: str, reason: str = ""
) -> LedgerTransaction:
    """Cancel a grant: a pending one simply never becomes credit; an active one
    gives back only its unused part to whoever funded it: the system account that
    paid for it, or, for credit received by transfer, the sender's grant it came
    from (with that grant's expiry: if it has expired meanwhile, the credit goes on
    to breakage; if it was voided, on to its own funding account)."""
    grant_id = grant.pk if isinstance(grant, CreditGrant) else grant
    key = _key(idempotency_key)
    request_hash = _request_hash("void", grant=grant_id, reason=reason)

    def book() -> LedgerTransaction:
        target = _grant(grant_id)
        source = _transfer_source(target)
        locked = _lock_wallets(target.wallet_id, *([source.wallet_id] if source else []))
        wallet = locked[0]
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        target.refresh_from_db()
        if target.status not in (Status.PENDING, Status.ACTIVE, Status.EXHAUSTED):
            raise errors.InvalidGrantState(
                f"grant {target.pk} is already {target.get_status_display().lower()}; nothing to void."
            )
        unused = target.remaining
        target.status = Status.VOIDED
        memo = reason or f"Voided {target.name}"
        metadata = {"grant": target.pk}
        if source is None:
            funding = system_account(target.funding_code, wallet.currency)
            return _post(
                wallet=wallet, kind=Kind.VOID, legs=[Leg(target.account_id, funding.pk, unused)],
                grants=[target], key=key, request_hash=request_hash, actor=actor, amount=unused,
                memo=memo, metadata=metadata,
            )  # fmt: skip
        source.refresh_from_db()
        legs = [Leg(target.account_id, source.account_id, unused)]
        if source.status in (Status.EXPIRED, Status.VOIDED):
            onward = Code.BREAKAGE if source.status == Status.EXPIRED else source.funding_code
            legs.append(Leg(source.account_id, system_account(onward, wallet.currency).pk, unused))
        elif unused:
            source.status = Status.ACTIVE
        return _post(
            wallet=wallet, kind=Kind.VOID, legs=legs, grants=[target, source], key=key,
            request_hash=request_hash, actor=actor, amount=unused, memo=memo,
            metadata={**metadata, "returned_to_grant": source.pk,
                      "returned_to_wallet": source.wallet_id},
            lots={source.pk: -unused},
            other_wallets=[w for w in locked if w.pk != wallet.pk],
        )  # fmt: skip

    return _once(key, request_hash, book, lambda earlier: earlier)


def _transfer_source(grant: CreditGrant) -> CreditGrant | None:
    """The sender's grant that credit received by transfer came from (None for any
    other grant, and for transfers booked before each part kept its source)."""
    if grant.kind != CreditGrant.Kind.TRANSFER or grant.source_type != "transfer_grant":
        return None
    return CreditGrant.objects.filter(pk=int(grant.source_id)).first()


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
        target = _grant(grant_id)
        wallet = _lock_wallet(target.wallet_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
        target.refresh_from_db()
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


def _new_grant(
    wallet: Wallet, *, amount: Decimal, kind: str, name: str, funding: str
) -> CreditGrant:
    now = timezone.now()
    account = Account.objects.create(
        kind=Account.Kind.GRANT, currency=wallet.currency, wallet=wallet
    )
    return CreditGrant.objects.create(
        wallet=wallet, account=account, name=name, kind=kind, amount=amount, currency=wallet.currency,
        status=Status.ACTIVE, funding_code=funding, effective_at=now, created_at=now, activated_at=now,
        expires_at=default_expiry(now),
    )  # fmt: skip


# --- credit limit -----------------------------------------------------------------


def set_credit_limit(
    *, wallet: Wallet | int, limit: Decimal | str | int, actor: Actor, reason: str = ""
) -> CreditLimitChange:
    """Change the permanent credit limit and record who, when, old, new and why.
    A limit below the current debt is refused: collect the debt first."""
    try:
        new = Decimal(limit)
    except (InvalidOperation, TypeError, ValueError):
        raise errors.InvalidAmount(f"limit must be a number, got {limit!r}.") from None
    if isinstance(limit, float) or not new.is_finite() or new < 0 or new != new.quantize(QUANTUM):
        raise errors.InvalidAmount(
            f"limit must be zero or a positive amount with at most 6 decimals, got {limit!r}."
        )
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    with transaction.atomic():
        locked = _lock_wallet(wallet_id)
        if new < locked.debt:
            raise errors.InvalidAmount(
                f"the new limit {new} is below the current debt {locked.debt}; collect the debt first."
            )
        change = CreditLimitChange.objects.create(
            wallet=locked, actor=actor.label, actor_user_id=actor.user_id, old_limit=locked.credit_limit,
            new_limit=new, old_temporary_increase=locked.temporary_credit_increase,
            new_temporary_increase=locked.temporary_credit_increase,
            valid_until=locked.temporary_increase_valid_until, reason=reason,
        )  # fmt: skip
        locked.credit_limit = new
        locked.updated_at = timezone.now()
        _set_clock(locked.updated_at)
        locked.save(update_fields=["credit_limit", "updated_at"])
        return change


# --- scheduled jobs ---------------------------------------------------------------
# Services the beat jobs call (wallets/tasks.py). Everything below is new; nothing
# above was changed for it.

from functools import cache  # noqa: E402


def default_expiry(effective_at: datetime) -> datetime:
    """When a new grant effective at `effective_at` expires, unless it says otherwise:
    the period staff set in "Prepaid credit settings" (days, weeks, months or years)."""
    from wallets.models import PrepaidCreditSettings

    return PrepaidCreditSettings.load().default_expiry(effective_at)


EXPIRY_JOB_ACTOR = Actor.job("expire_grants")
# Grants that can still expire (plain strings: they go into raw SQL).
LIVE_STATUSES = ["active", "exhausted", "pending"]

# One batch: the next due grants in (expires_at, id) order after the cursor, and
# their wallets locked in id order (LockRows above the sort: the locks are taken in
# that order, as everywhere else). Returns the ids in walking order and the cursor.
# A sweep on several connections gives each its own wallets (`partition` below).
EXPIRY_SELECT_SQL = """
WITH due AS (
    SELECT id, wallet_id, expires_at FROM wallets_creditgrant
    WHERE status IN ('active', 'exhausted', 'pending') AND expires_at <= %(at)s
      AND (expires_at, id) > (%(after_at)s, %(after_id)s) /*partition*/
    ORDER BY expires_at, id
    LIMIT %(limit)s
),
locked AS (
    -- by primary key: `= ANY (ARRAY(...))`, not `IN (SELECT ...)`, which the planner
    -- turns into a hash join over a scan of every wallet (200,000 wallets: ~25 ms a batch)
    SELECT id FROM wallets_wallet WHERE id = ANY (ARRAY(SELECT DISTINCT wallet_id FROM due))
    ORDER BY id FOR UPDATE
)
SELECT array_agg(id ORDER BY expires_at, id), max(expires_at), (SELECT count(*) FROM locked)
FROM due
"""

# Under the wallet locks (a new statement sees every change committed before them):
# re-check each grant, then book one expiry transaction per grant (the same key and
# request fingerprint `expire_grant` uses, so the two paths never both book), one
# `grant → breakage` entry per grant with credit left, expire the grants and move the
# wallets' cached balances — five statements' work in one. `balance_after` is the
# wallet's running balance: a wallet's grants are booked in id order, and the
# transaction ids are drawn in that order, each transaction showing the balance
# after it. Every row is found by its primary key or a unique index: no join
# between the statement's parts, whatever the planner estimates.
EXPIRY_BOOK_SQL = """
WITH breakage AS (
    SELECT currency, id FROM wallets_account WHERE kind = 'system' AND code = 'breakage'
),
due AS (
    SELECT ordered.*, nextval(%(tx_sequence)s::regclass) AS tx_id
    FROM (
        SELECT g.id, g.wallet_id, g.account_id, g.remaining, g.name, g.expires_at, w.currency,
               w.credit_balance - SUM(g.remaining) OVER running AS balance_after,
               w.restricted_balance
                   - SUM(CASE WHEN g.restricted THEN g.remaining ELSE 0 END) OVER running
                   AS restricted_after,
               w.debt AS debt_after
        FROM unnest(%(ids)s::bigint[]) AS batch (id)
        JOIN wallets_creditgrant g ON g.id = batch.id
        -- the wallet by its primary key (OFFSET 0 keeps the planner from turning
        -- this into a hash join over a scan of every wallet, once per batch)
        CROSS JOIN LATERAL (
            SELECT w.currency, w.credit_balance, w.restricted_balance, w.debt
            FROM wallets_wallet w WHERE w.id = g.wallet_id OFFSET 0
        ) w
        -- an index probe per grant, whatever the planner thinks of the table's size
        LEFT JOIN LATERAL (
            SELECT 1 AS found FROM wallets_ledgertransaction t
            WHERE t.idempotency_key = 'expire:grant:' || g.id LIMIT 1
        ) booked ON true
        WHERE g.status IN ('active', 'exhausted', 'pending') AND g.expires_at <= %(at)s
          AND booked.found IS NULL
        WINDOW running AS (PARTITION BY g.wallet_id ORDER BY g.id ROWS UNBOUNDED PRECEDING)
        ORDER BY g.wallet_id, g.id
    ) ordered
),
tx AS (
    INSERT INTO wallets_ledgertransaction
        (id, kind, wallet_id, idempotency_key, request_hash, effective_at, created_at, actor,
         actor_user_id, memo, reference, amount, currency, balance_after, restricted_after,
         debt_after, metadata)
    SELECT d.tx_id, 'expiry', d.wallet_id, 'expire:grant:' || d.id,
           encode(sha256(convert_to('["expire", {"grant": ' || d.id || '}]', 'UTF8')), 'hex'),
           d.expires_at, %(now)s, %(actor)s, NULL, left(d.name || ' expired', 500), '',
           d.remaining, d.currency, d.balance_after, d.restricted_after, d.debt_after,
           jsonb_build_object('grant', d.id)
    FROM due d
),
entries AS (
    INSERT INTO wallets_entry (transaction_id, debit_account_id, credit_account_id, amount, currency)
    SELECT d.tx_id, d.account_id, b.id, d.remaining, d.currency
    FROM due d
    -- every currency has its breakage account (open_wallet makes it); were one
    -- missing, the NULL would fail the statement rather than lose an entry
    LEFT JOIN breakage b ON b.currency = d.currency
    WHERE d.remaining > 0
),
expired AS (
    UPDATE wallets_creditgrant g
    SET status = 'expired', remaining = 0, ended_at = d.expires_at
    FROM due d WHERE g.id = d.id
),
balances AS (
    UPDATE wallets_wallet w
    SET credit_balance = last.balance_after, restricted_balance = last.restricted_after,
        updated_at = %(now)s
    FROM (SELECT DISTINCT ON (wallet_id) wallet_id, balance_after, restricted_after
          FROM due ORDER BY wallet_id, id DESC) last
    WHERE w.id = last.wallet_id
)
SELECT COUNT(*), COALESCE(SUM(remaining), 0), COALESCE(array_agg(id), '{}') FROM due
"""


@dataclass(frozen=True)
class ExpiryBatch:
    """One batch of the expiry sweep, committed."""

    selected: int  # due grants the batch looked at
    expired: int  # expiry transactions booked
    breakage: Decimal  # credit moved to breakage
    cursor: tuple[datetime, int] | None  # (expires_at, id) of the last grant looked at
    errors: tuple[str, ...] = ()

    @property
    def processed(self) -> int:
        return self.expired

    @property
    def failed(self) -> int:
        return len(self.errors)


def _expiry_select_sql(partition: tuple[int, int] | None) -> str:
    """The select-and-lock statement, for the wallets of one partition: `(k, n)` takes
    the grants of wallets whose id is k modulo n (literals, not parameters: each
    partition's statement is planned for its own constants)."""
    if partition is None or partition[1] == 1:
        return EXPIRY_SELECT_SQL
    part, parts = partition
    if not 0 <= part < parts:
        raise errors.WalletError(f"partition {part} of {parts} does not exist.")
    return EXPIRY_SELECT_SQL.replace(
        "/*partition*/", f"AND wallet_id %% {int(parts)} = {int(part)}"
    )


def expire_due_grants(
    *,
    at: datetime | None = None,
    limit: int = 1000,
    after: tuple[datetime, int] | None = None,
    actor: Actor = EXPIRY_JOB_ACTOR,
    partition: tuple[int, int] | None = None,
) -> ExpiryBatch:
    """Expire up to `limit` grants whose expiry date has passed (by `at`), after the
    cursor `after`, in one transaction: each grant's remainder is booked to breakage
    and the wallet balance drops, as `expire_grant` does one grant at a time.

    A grant is expired exactly once whichever path runs first: the sweep books under
    the key `expire_grant` uses (`expire:grant:<id>`) and skips a grant that already
    has it. The transaction's effective time is the grant's expiry date, so a sweep
    that runs late, or is killed and rerun, books the same ledger as a punctual one.
    Wallets are locked in id order, like every other multi-wallet write.

    `partition=(k, n)` looks only at grants of wallets whose id is k modulo n (the
    cursor then walks that partition): n connections sweeping the n partitions at
    once never lock the same wallet."""
    at = at or timezone.now()
    if limit <= 0:
        raise errors.WalletError("limit must be positive.")
    after_at, after_id = after or (datetime.min.replace(tzinfo=UTC), 0)
    with transaction.atomic(durable=True), connection.cursor() as db:
        # A batch costs milliseconds; JIT-compiling its statements would cost more.
        # `wallets.now`: when this batch moves the money, for the warning trigger.
        db.execute(
            "SELECT set_config('jit', 'off', true), set_config('wallets.now', %s, true)",
            [timezone.now().isoformat()],
        )
        db.execute(
            _expiry_select_sql(partition),
            {"at": at, "after_at": after_at, "after_id": after_id, "limit": limit},
        )
        selected = db.fetchone()
        assert selected is not None  # an aggregate always returns one row
        ids, last_expiry, _ = selected
        if not ids:
            return ExpiryBatch(selected=0, expired=0, breakage=ZERO, cursor=None)
        db.execute(
            EXPIRY_BOOK_SQL,
            {
                "ids": ids,
                "at": at,
                "now": timezone.now(),
                "actor": actor.label,
                "tx_sequence": _tx_sequence(),
            },
        )
        row = db.fetchone()
        assert row is not None  # an aggregate always returns one row
        expired, breakage, booked = row
        problems: tuple[str, ...] = ()
        if expired < len(ids):
            problems = _expiry_leftovers(set(ids) - set(booked), at)
    return ExpiryBatch(
        selected=len(ids), expired=expired, breakage=Decimal(breakage),
        cursor=(last_expiry, ids[-1]), errors=problems,
    )  # fmt: skip


@cache
def _tx_sequence() -> str:
    """The sequence behind LedgerTransaction ids: the sweep draws them itself, so the
    transactions of one wallet get ids in the order their balances run."""
    with connection.cursor() as db:
        db.execute("SELECT pg_get_serial_sequence('wallets_ledgertransaction', 'id')")
        row = db.fetchone()
    assert row is not None and row[0], "wallets_ledgertransaction.id has no sequence"
    return row[0]


def _expiry_leftovers(ids: set[int], at: datetime) -> tuple[str, ...]:
    """Grants the batch selected but did not expire. Voided or expired meanwhile is
    fine; a live grant that already has an expiry transaction is a ledger problem."""
    stuck = CreditGrant.objects.filter(pk__in=ids, status__in=LIVE_STATUSES, expires_at__lte=at)
    return tuple(
        f"grant {grant.pk} is {grant.status} but its expiry key expire:grant:{grant.pk} is "
        "already booked; run check_ledger."
        for grant in stuck.order_by("pk")
    )


def expire_due_grant_batches(
    *, batch_size: int = 1000, at: datetime | None = None, connections: int = 1
) -> Iterator[ExpiryBatch]:
    """The whole sweep, batch by batch (each committed before it is yielded). Grants
    that fall due while it runs wait for the next run.

    With `connections` > 1 the due grants are split by wallet (id modulo n) into n
    partitions, each swept by its own loop in its own thread on its own database
    connection (`jobs.parallel.Parallel`); their batches come out as they commit.
    No two partitions share a wallet, so they never wait for each other's locks
    and cannot deadlock. Inside a transaction of the caller's (tests), other
    connections could not see its rows: the partitions then run one after the
    other on the caller's connection."""
    at = at or timezone.now()
    if connections <= 1:
        return _expiry_partition_batches(batch_size=batch_size, at=at, partition=None)
    parts = [
        partial(_expiry_partition_batches, batch_size=batch_size, at=at, partition=(k, connections))
        for k in range(connections)
    ]
    if connection.in_atomic_block:
        return chain.from_iterable(part() for part in parts)
    return Parallel(parts, name="expire-grants")


def _expiry_partition_batches(
    *, batch_size: int, at: datetime, partition: tuple[int, int] | None
) -> Iterator[ExpiryBatch]:
    cursor: tuple[datetime, int] | None = None
    while True:
        batch = expire_due_grants(at=at, limit=batch_size, after=cursor, partition=partition)
        if batch.selected == 0:
            return
        yield batch
        cursor = batch.cursor


from wallets.limits import (  # noqa: E402, F401 (re-export: credit limits, wallets/limits.py)
    change_permanent_limit,
    end_temporary_increase,
    grant_temporary_increase,
    limit_state,
    maximum_increase,
    open_wallet_with_limit,
    record_class_maximum_change,
    revert_lapsed_increases,
)
