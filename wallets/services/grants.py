"""Grants: credit given (`grant_credit`), activated, expired one at a time, voided."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing.models import ProductItem
from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    ZERO,
    Account,
    CreditGrant,
    LedgerTransaction,
    PrepaidCreditSettings,
    Wallet,
)
from wallets.services.inputs import (
    _dimensions,
    _existing,
    _instant,
    _key,
    _money,
    _once,
    _request_hash,
)
from wallets.services.posting import (
    DEFAULT_FUNDING,
    FUNDING_CODES,
    Code,
    Kind,
    Leg,
    Status,
    _lock_wallet,
    _lock_wallets,
    _post,
    system_account,
)

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


def _funding_legs(wallet: Wallet, grant: CreditGrant, *, apply_to_debt: bool) -> list[Leg]:
    """Fund the grant; unrestricted credit in force now pays the debt at once. Credit
    not yet effective pays it when it becomes effective (`settle_effective_credit`)."""
    legs = [
        Leg(system_account(grant.funding_code, wallet.currency).pk, grant.account_id, grant.amount)
    ]
    in_force = grant.is_in_force(timezone.now())
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
        target, wallet = _locked_grant(grant_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
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


def _locked_grant(grant_id: int) -> tuple[CreditGrant, Wallet]:
    """The grant and its wallet: the wallet locked, then the grant read again under
    the lock (what another transaction did to it before is seen)."""
    target = _grant(grant_id)
    wallet = _lock_wallet(target.wallet_id)
    target.refresh_from_db()
    return target, wallet


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
        target, wallet = _locked_grant(grant_id)
        earlier = _existing(key, request_hash)
        if earlier is not None:
            return earlier
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


def default_expiry(effective_at: datetime) -> datetime:
    """When a new grant effective at `effective_at` expires, unless it says otherwise:
    the period staff set in "Prepaid credit settings" (days, weeks, months or years)."""
    return PrepaidCreditSettings.load().default_expiry(effective_at)


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
