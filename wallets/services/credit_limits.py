"""Credit limits (PortaBilling's Balance & Credits): the permanent limit, temporary
increases bounded by the maximum possible increase, their reversion at Valid Until,
and the history of every change.

Rules:
- Every change writes one `CreditLimitChange` (who, when, old, new, valid until,
  why) under the wallet's row lock, so two staff members changing the same wallet
  at once are applied one after the other, each recorded against the value it
  replaced. A call with an `idempotency_key` seen before returns the first change
  (the same key with other arguments is an `IdempotencyConflict`).
- The effective limit is computed at read time (`Wallet.effective_credit_limit`),
  so an increase stops counting exactly at Valid Until whatever runs. The
  `revert_temporary_limits` job (and any limit change on that wallet before it)
  records the reversion at Valid Until itself, clears the wallet's temporary
  fields with the database clock set to the last instant before Valid Until — so
  the warning trigger (wallets 0010) sees the limit fall at that moment and queues
  the warnings the lapse crossed — and notifies the customer once.
- A temporary increase is for postpaid customers only, as an amount or as a
  percentage of a positive permanent limit, with Valid Until in the future; the
  increase and its duration may not exceed the maximum possible increase (the
  customer class's amount and days, each else `CreditLimitSettings`).

Re-exported by `wallets.services`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.models import Customer, CustomerClass
from billing.money import amount_text
from jobs.runner import Batch
from wallets import errors
from wallets.actors import Actor
from wallets.models import CreditLimitChange, CreditLimitSettings, Wallet
from wallets.notifications import enqueue_notification
from wallets.services.inputs import _instant, _request_hash
from wallets.services.posting import _set_clock

ZERO = Decimal("0")
CENT = Decimal("0.01")
MAX_LIMIT = Decimal("1e15")
MAX_PERCENT = Decimal("1000")
MAX_REASON = 500
REVERT_JOB_ACTOR = Actor.job("revert_temporary_limits")
ONE_MICROSECOND = timedelta(microseconds=1)
Kind = CreditLimitChange.Kind


# --- reading ----------------------------------------------------------------------


@dataclass(frozen=True)
class MaximumIncrease:
    """The "maximum possible increase" prompt: how much, for how long, and where it
    comes from (the customer class, or the global settings)."""

    amount: Decimal
    days: int
    source: str  # "customer class Gold" / "global settings"

    def text(self, currency: str) -> str:
        return f"{amount_text(self.amount)} {currency} for at most {self.days} days ({self.source})"


def maximum_increase(customer: Customer) -> MaximumIncrease:
    """The class's amount and days where it sets them, each else the global setting."""
    settings = CreditLimitSettings.load()
    klass = customer.customer_class
    amount = settings.max_temporary_increase_amount
    days = settings.max_temporary_increase_days
    sources = []
    if klass is not None and klass.max_temporary_increase_amount is not None:
        amount = klass.max_temporary_increase_amount
        sources.append("amount")
    if klass is not None and klass.max_temporary_increase_days is not None:
        days = klass.max_temporary_increase_days
        sources.append("days")
    if not sources:
        source = "global credit limit settings"
    elif len(sources) == 2:
        source = f"customer class {klass}"
    else:
        source = f"customer class {klass} ({sources[0]}), global settings (the rest)"
    return MaximumIncrease(amount=amount, days=days, source=source)


@dataclass(frozen=True)
class LimitState:
    """One wallet's limits at a moment, for the staff panel, the portal and the API."""

    permanent: Decimal
    temporary: Decimal  # the increase in force at `at` (0 once lapsed)
    valid_until: datetime | None  # of the increase in force
    effective: Decimal
    debt: Decimal
    over_limit: Decimal  # debt above the effective limit (0 when within it)
    lapsed_unrecorded: bool  # an increase lapsed that the job has not recorded yet


def limit_state(wallet: Wallet, at: datetime | None = None) -> LimitState:
    at = at or timezone.now()
    effective = wallet.effective_credit_limit(at)
    in_force = effective > wallet.credit_limit
    return LimitState(
        permanent=wallet.credit_limit,
        temporary=wallet.temporary_credit_increase if in_force else ZERO,
        valid_until=wallet.temporary_increase_valid_until if in_force else None,
        effective=effective,
        debt=wallet.debt,
        over_limit=max(wallet.debt - effective, ZERO),
        lapsed_unrecorded=wallet.temporary_credit_increase > 0 and not in_force,
    )


# --- input checks -------------------------------------------------------------------

# These differ from `wallets.services.inputs` on purpose: a limit may be zero, has cents
# (not 6 decimals), the key may be None, and every refusal is a `LimitRefused` naming
# the form/API field (`field=`), which the staff panel and the API show next to it.


def _decimal(value: Any, *, what: str, field: str) -> Decimal:
    if isinstance(value, float | bool):
        raise errors.LimitRefused(f"{what} must be a decimal number, not {value!r}.", field=field)
    try:
        number = Decimal(str(value).strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise errors.LimitRefused(f"{what} must be a number, got {value!r}.", field=field) from None
    if not number.is_finite():
        raise errors.LimitRefused(f"{what} must be a finite number, got {value!r}.", field=field)
    return number


def _limit_amount(value: Any, *, what: str, field: str, positive: bool) -> Decimal:
    number = _decimal(value, what=what, field=field)
    if number < 0 or (positive and number == 0):
        need = "more than zero" if positive else "zero or more"
        raise errors.LimitRefused(f"{what} must be {need}, got {number}.", field=field)
    if number >= MAX_LIMIT:
        raise errors.LimitRefused(f"{what} is too large ({number}).", field=field)
    if number != number.quantize(CENT):
        raise errors.LimitRefused(f"{what} may have at most 2 decimals, got {number}.", field=field)
    return number.quantize(CENT)


def _reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise errors.LimitRefused(
            "a reason is required: say why the limit changes.", field="reason"
        )
    text = reason.strip()
    if len(text) > MAX_REASON:
        raise errors.LimitRefused(
            f"the reason may be at most {MAX_REASON} characters ({len(text)} given).",
            field="reason",
        )
    if "\x00" in text:
        raise errors.LimitRefused("the reason may not contain NUL characters.", field="reason")
    return text


def _key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip() or len(key) > 255 or "\x00" in key:
        raise errors.LimitRefused(
            "idempotency_key must be a non-empty string of at most 255 characters.",
            field="idempotency_key",
        )
    return key


# --- writing ----------------------------------------------------------------------


def _wallet_id(wallet: Wallet | int) -> int:
    return wallet.pk if isinstance(wallet, Wallet) else wallet


def _lock(wallet_id: int) -> Wallet:
    # Not `posting._lock_wallet`: this locks the wallet row only (`of=self`) and loads
    # its customer and class with it, which the limit rules read under the lock.
    try:
        return (
            Wallet.objects.select_for_update(of=("self",))
            .select_related("customer__customer_class")
            .get(pk=wallet_id)
        )
    except Wallet.DoesNotExist:
        raise errors.WalletNotFound(f"wallet {wallet_id} does not exist.") from None


# Not `inputs._once`/`_existing`: a limit change books no LedgerTransaction, so its
# key is remembered (and unique) on `CreditLimitChange`, and the key may be None.
def _earlier(key: str | None, request_hash: str) -> CreditLimitChange | None:
    if key is None:
        return None
    earlier = CreditLimitChange.objects.filter(idempotency_key=key).first()
    if earlier is not None and earlier.request_hash != request_hash:
        raise errors.IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different limit change "
            f"(#{earlier.pk}); use a new key."
        )
    return earlier


def _once(key: str | None, request_hash: str, apply: Any) -> Any:
    """Apply in one transaction (a savepoint inside a caller's) unless the key was
    seen; two racing callers with one key meet at the unique index."""
    earlier = _earlier(key, request_hash)
    if earlier is not None:
        return earlier
    try:
        with transaction.atomic():
            return apply()
    except IntegrityError:
        earlier = _earlier(key, request_hash)
        if earlier is None:
            raise
        return earlier


def _record(
    wallet: Wallet,
    *,
    kind: str,
    actor: Actor,
    reason: str,
    at: datetime,
    new_limit: Decimal,
    new_temporary: Decimal,
    valid_until: datetime | None,
    key: str | None = None,
    request_hash: str = "",
) -> CreditLimitChange:
    """One history row and the wallet's new values, on the locked wallet."""
    change = CreditLimitChange.objects.create(
        wallet=wallet, kind=kind, changed_at=at, actor=actor.label, actor_user_id=actor.user_id,
        old_limit=wallet.credit_limit, new_limit=new_limit,
        old_temporary_increase=wallet.temporary_credit_increase,
        new_temporary_increase=new_temporary, valid_until=valid_until, reason=reason,
        idempotency_key=key, request_hash=request_hash,
    )  # fmt: skip
    wallet.credit_limit = new_limit
    wallet.temporary_credit_increase = new_temporary
    wallet.temporary_increase_valid_until = valid_until if new_temporary > 0 else None
    wallet.updated_at = timezone.now()
    wallet.save(
        update_fields=[
            "credit_limit", "temporary_credit_increase", "temporary_increase_valid_until",
            "updated_at",
        ]
    )  # fmt: skip
    return change


def _record_lapse(wallet: Wallet, *, now: datetime) -> CreditLimitChange | None:
    """If the wallet's temporary increase lapsed by time and nobody recorded it yet:
    record the reversion at Valid Until (however late this runs), let the warning
    trigger see the limit fall at that moment, and tell the customer. The wallet is
    locked by the caller. The key names the wallet and Valid Until: once only."""
    valid_until = wallet.temporary_increase_valid_until
    if wallet.temporary_credit_increase <= 0 or valid_until is None or valid_until > now:
        return None
    key = f"revert:{wallet.pk}:{_instant(valid_until)}"
    if CreditLimitChange.objects.filter(idempotency_key=key).exists():
        return None
    increase = wallet.temporary_credit_increase
    _set_clock(valid_until - ONE_MICROSECOND)
    change = _record(
        wallet, kind=Kind.REVERTED, actor=REVERT_JOB_ACTOR, at=valid_until,
        reason=f"The temporary increase of {amount_text(increase)} {wallet.currency} ended at "
        "its Valid Until.",
        new_limit=wallet.credit_limit, new_temporary=ZERO, valid_until=valid_until, key=key,
    )  # fmt: skip
    customer = wallet.customer
    over = max(wallet.debt - wallet.credit_limit, ZERO)
    body = (
        f"Hello {customer.name},\n\nThe temporary increase of {amount_text(increase)} "
        f"{wallet.currency} to the credit limit of account {customer.account_number} ended "
        f"on {valid_until:%Y-%m-%d %H:%M} UTC. Your credit limit is "
        f"{amount_text(wallet.credit_limit)} {wallet.currency} again.\n"
    )
    if over > 0:
        body += (
            f"\nYou owe {amount_text(over)} {wallet.currency} more than this limit: "
            "please pay to keep your services running.\n"
        )
    enqueue_notification(
        customer=customer, kind="credit_limit_reverted",
        subject="Your temporary credit limit increase has ended",
        body=body, dedupe_key=f"limit_reverted:{wallet.pk}:{_instant(valid_until)}",
    )  # fmt: skip
    _set_clock(now)
    return change


def change_permanent_limit(
    *,
    wallet: Wallet | int,
    limit: Decimal | str | int,
    actor: Actor,
    reason: str,
    idempotency_key: str | None = None,
) -> CreditLimitChange | None:
    """Set the permanent credit limit (PortaBilling's "Permanent Credit Limit"),
    recording who, when, old, new and why. A limit below the current debt is
    refused (collect the debt first). The same limit again changes nothing and
    returns None. A temporary increase in force stays on top of the new limit."""
    new = _limit_amount(limit, what="the permanent credit limit", field="limit", positive=False)
    text = _reason(reason)
    key = _key(idempotency_key)
    wallet_id = _wallet_id(wallet)
    request_hash = _request_hash("permanent_limit", wallet=wallet_id, limit=new, reason=text)

    def apply() -> CreditLimitChange | None:
        locked = _lock(wallet_id)
        now = timezone.now()  # after the lock: the history is in the order applied
        _set_clock(now)
        _record_lapse(locked, now=now)
        if new == locked.credit_limit:
            return None
        if new < locked.debt:
            raise errors.LimitRefused(
                f"the new limit {amount_text(new)} is below the current debt "
                f"{amount_text(locked.debt)} {locked.currency}; collect the debt first.",
                field="limit",
            )
        return _record(
            locked, kind=Kind.PERMANENT, actor=actor, reason=text, at=now, new_limit=new,
            new_temporary=locked.temporary_credit_increase,
            valid_until=locked.temporary_increase_valid_until, key=key,
            request_hash=request_hash,
        )  # fmt: skip

    return _once(key, request_hash, apply)


def grant_temporary_increase(
    *,
    wallet: Wallet | int,
    valid_until: datetime,
    actor: Actor,
    reason: str,
    amount: Decimal | str | int | None = None,
    percent: Decimal | str | int | None = None,
    idempotency_key: str | None = None,
) -> CreditLimitChange:
    """Raise a postpaid customer's credit limit until `valid_until` (PortaBilling's
    "Temporary Credit Limit Increase"), by `amount` or by `percent` of a positive
    permanent limit (one of the two). Neither the increase nor its duration may
    exceed the maximum possible increase (`maximum_increase`); the refusal names
    it. A new increase replaces the one in force; either way it is recorded."""
    if (amount is None) == (percent is None):
        raise errors.LimitRefused(
            "give the temporary increase either as an amount or as a percentage, not both.",
            field="amount",
        )
    if amount is not None:
        increase = _limit_amount(
            amount, what="the temporary increase", field="amount", positive=True
        )
        pct = None
    else:
        pct = _decimal(percent, what="the percentage", field="percent")
        if not ZERO < pct <= MAX_PERCENT or pct != pct.quantize(CENT):
            raise errors.LimitRefused(
                f"the percentage must be more than 0 and at most {MAX_PERCENT}, with at most 2 "
                f"decimals; got {pct}.",
                field="percent",
            )
        increase = ZERO  # computed from the permanent limit under the lock
    if not isinstance(valid_until, datetime) or timezone.is_naive(valid_until):
        raise errors.LimitRefused(
            "Valid Until must be a date and time with a time zone.", field="valid_until"
        )
    text = _reason(reason)
    key = _key(idempotency_key)
    wallet_id = _wallet_id(wallet)
    request_hash = _request_hash(
        "temporary_increase", wallet=wallet_id, amount=increase if pct is None else None,
        percent=pct, valid_until=_instant(valid_until), reason=text,
    )  # fmt: skip

    def apply() -> CreditLimitChange:
        locked = _lock(wallet_id)
        now = timezone.now()  # after the lock: the history is in the order applied
        _set_clock(now)
        customer = locked.customer
        if customer.is_prepaid:
            raise errors.LimitRefused(
                f"temporary credit-limit increases are for postpaid customers only; "
                f"{customer} is prepaid.",
                field="amount",
            )
        _record_lapse(locked, now=now)
        size = increase
        if pct is not None:
            if locked.credit_limit <= 0:
                raise errors.LimitRefused(
                    "a percentage needs a positive permanent credit limit (it is "
                    f"{amount_text(locked.credit_limit)}); give the increase as an amount.",
                    field="percent",
                )
            size = (locked.credit_limit * pct / 100).quantize(CENT, rounding=ROUND_HALF_UP)
            if size <= 0:
                raise errors.LimitRefused(
                    f"{pct}% of {amount_text(locked.credit_limit)} is less than a cent.",
                    field="percent",
                )
        maximum = maximum_increase(customer)
        if size > maximum.amount:
            raise errors.LimitRefused(
                f"the increase of {amount_text(size)} {locked.currency} is above the maximum "
                f"possible increase: {maximum.text(locked.currency)}.",
                field="percent" if pct is not None else "amount",
            )
        if valid_until <= now:
            raise errors.LimitRefused(
                f"Valid Until ({valid_until:%Y-%m-%d %H:%M %Z}) must be in the future.",
                field="valid_until",
            )
        latest = now + timedelta(days=maximum.days)
        if valid_until > latest:
            raise errors.LimitRefused(
                f"Valid Until may be at most {maximum.days} days from now (until "
                f"{latest:%Y-%m-%d %H:%M} UTC): the maximum possible increase is "
                f"{maximum.text(locked.currency)}.",
                field="valid_until",
            )
        note = f"{text} ({pct}% of the permanent limit)" if pct is not None else text
        return _record(
            locked, kind=Kind.TEMPORARY, actor=actor, reason=note[:MAX_REASON], at=now,
            new_limit=locked.credit_limit, new_temporary=size, valid_until=valid_until, key=key,
            request_hash=request_hash,
        )  # fmt: skip

    return _once(key, request_hash, apply)


def end_temporary_increase(
    *, wallet: Wallet | int, actor: Actor, reason: str, idempotency_key: str | None = None
) -> CreditLimitChange | None:
    """End the temporary increase in force now, before its Valid Until. Debt above
    the permanent limit stays (shown as "over limit"); nothing is refused for it.
    Returns None when no increase is in force (one that lapsed is recorded as such)."""
    text = _reason(reason)
    key = _key(idempotency_key)
    wallet_id = _wallet_id(wallet)
    request_hash = _request_hash("end_temporary_increase", wallet=wallet_id, reason=text)

    def apply() -> CreditLimitChange | None:
        locked = _lock(wallet_id)
        now = timezone.now()  # after the lock: the history is in the order applied
        _set_clock(now)
        _record_lapse(locked, now=now)
        if locked.effective_credit_limit(now) <= locked.credit_limit:
            return None
        return _record(
            locked, kind=Kind.ENDED, actor=actor, reason=text, at=now,
            new_limit=locked.credit_limit, new_temporary=ZERO,
            valid_until=locked.temporary_increase_valid_until, key=key,
            request_hash=request_hash,
        )  # fmt: skip

    return _once(key, request_hash, apply)


def open_wallet_with_limit(
    *, customer: Customer, limit: Decimal | str | int, actor: Actor
) -> Wallet:
    """A new customer's wallet in its currency, opened at once, with the permanent
    credit limit set at creation (recorded like any other change)."""
    from wallets.services.opening import open_wallet

    new = _limit_amount(limit, what="the permanent credit limit", field="limit", positive=False)
    with transaction.atomic():
        wallet = open_wallet(customer=customer)
        if new != wallet.credit_limit:
            change_permanent_limit(
                wallet=wallet, limit=new, actor=actor, reason="Set when the customer was created.",
                idempotency_key=f"limit:created:{wallet.pk}",
            )  # fmt: skip
            wallet.refresh_from_db()
    return wallet


def record_class_maximum_change(
    *,
    klass: CustomerClass,
    old_amount: Decimal | None,
    old_days: int | None,
    actor: Actor,
) -> int:
    """A class's maximum possible increase changed: one history row per postpaid
    wallet of its customers (values unchanged, the reason says what changed).
    Increases already granted stay as they are. Returns the rows written."""

    def text(amount: Decimal | None, days: int | None) -> str:
        return (
            f"{amount_text(amount) if amount is not None else 'global'} / "
            f"{days if days is not None else 'global'} days"
        )

    old, new = (
        text(old_amount, old_days),
        text(klass.max_temporary_increase_amount, klass.max_temporary_increase_days),
    )
    if old == new:
        return 0
    now = timezone.now()
    written = 0
    with transaction.atomic():
        ids = list(
            Wallet.objects.filter(
                customer__customer_class=klass, customer__balance_model="postpaid"
            )
            .select_for_update(of=("self",))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for wallet in Wallet.objects.filter(pk__in=ids).order_by("pk"):
            CreditLimitChange.objects.create(
                wallet=wallet, kind=Kind.CLASS_MAXIMUM, changed_at=now, actor=actor.label,
                actor_user_id=actor.user_id, old_limit=wallet.credit_limit,
                new_limit=wallet.credit_limit,
                old_temporary_increase=wallet.temporary_credit_increase,
                new_temporary_increase=wallet.temporary_credit_increase,
                valid_until=wallet.temporary_increase_valid_until,
                reason=f"Maximum possible increase of class {klass}: {old} → {new}.",
            )  # fmt: skip
            written += 1
    return written


# --- the revert_temporary_limits job --------------------------------------------------


def _lapsed(at: datetime, after: int, limit: int) -> list[int]:
    return list(
        Wallet.objects.filter(
            pk__gt=after, temporary_credit_increase__gt=0, temporary_increase_valid_until__lte=at
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def revert_lapsed_increase_batches(
    *, batch_size: int = 200, at: datetime | None = None
) -> Iterator[Batch]:
    """Record every temporary increase whose Valid Until has passed (one wallet per
    database transaction, wallets in id order): the history row at Valid Until,
    the warnings the lapse crossed, the customer's notice. Safe to kill and rerun:
    a recorded reversion clears the wallet's increase, and its key is unique."""
    at = at or timezone.now()
    after = 0
    while True:
        ids = _lapsed(at, after, batch_size)
        if not ids:
            return
        done = 0
        failures: list[str] = []
        for wallet_id in ids:
            try:
                with transaction.atomic(durable=True):
                    locked = _lock(wallet_id)
                    if _record_lapse(locked, now=at) is not None:
                        done += 1
            except errors.WalletError as exc:
                failures.append(f"wallet {wallet_id}: {exc}")
        yield Batch(processed=done, failed=len(failures), errors=tuple(failures))
        after = ids[-1]


def revert_lapsed_increases(*, at: datetime | None = None) -> int:
    """The whole job at once (tests, shell): reversions recorded."""
    return sum(batch.processed for batch in revert_lapsed_increase_batches(at=at))
