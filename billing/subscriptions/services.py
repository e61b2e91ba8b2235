"""Prepaid subscriptions: register, bill each period in advance from the wallet,
deactivate when the wallet cannot pay the upcoming period, reactivate when it can.

The rules (CRM.COM prepaid billing):
- A subscription is billed for each period before it is provided: at the period's
  first day (or when the job next runs) the wallet is debited the period's fee
  (`fee_for`), one debit transaction per (subscription, period): idempotency key
  `subscription:<id>:<period start>`, and a `SubscriptionCharge` row unique per
  period that links the transaction to both. The cursor (`next_period_start`) moves
  in the same transaction, so a run killed anywhere and rerun bills each period once.
- Missed periods (the job was down) are billed in order, oldest first.
- When the wallet's available funds cannot cover the upcoming period, the
  subscription is deactivated (billing on hold, hold = funds), the customer is
  notified through the outbox, and the change is in the status history and the API.
- A subscription on hold for funds is reactivated as soon as the wallet can pay the
  current period: checked right after every credit to the wallet (an on-commit task,
  `billing.subscriptions.tasks.reactivate_wallet`) and by the job as a safety net;
  the current period is then billed. Periods spent deactivated are not billed.
- Staff may deactivate (hold = staff: only staff reactivate), reactivate and cancel,
  always with a reason; every change is a `SubscriptionStatusChange` row.

Money moves only through `wallets.services.draw_down` (grant → usage revenue). Every
function here is keyword-only and records its actor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import Customer
from billing.models.subscriptions import (
    AutoTopUpAttempt,
    PrepaidSubscription,
    Service,
    ServiceRate,
    SubscriptionCharge,
    SubscriptionStatusChange,
)
from billing.money import amount_text
from billing.periods import BillingPeriod
from billing.subscriptions.errors import SubscriptionError
from wallets import errors as wallet_errors
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.models import Wallet
from wallets.notifications import enqueue_notification

BILLING_JOB_ACTOR = Actor.job("bill_subscriptions")
# Periods one subscription catches up per batch; the next batch continues.
MAX_PERIODS_PER_BATCH = 12
Status = PrepaidSubscription.Status
Hold = PrepaidSubscription.Hold


# --- fees -------------------------------------------------------------------------


def fee_for(subscription: PrepaidSubscription, period: BillingPeriod) -> Decimal:
    """The period's fee: each service's rate in the wallet's currency, per period
    plus per day for the days of the period the subscription covers."""
    first_day = max(period.start, subscription.starts_on)
    days = max((period.end - first_day).days, 0)
    rates = ServiceRate.objects.filter(
        service__in=subscription.services.all(), currency=subscription.wallet.currency
    )
    return sum((rate.per_period + rate.per_day * days for rate in rates), Decimal("0"))


def _check_rates(services: Sequence[Service], currency: str) -> None:
    if not services:
        raise SubscriptionError("services: choose at least one service.")
    priced = set(
        ServiceRate.objects.filter(service__in=services, currency=currency).values_list(
            "service_id", flat=True
        )
    )
    missing = [s.name for s in services if s.pk not in priced]
    if missing:
        raise SubscriptionError(
            f"services: {', '.join(missing)} has no rate in {currency}; add a service rate "
            f"in {currency} first."
        )
    inactive = [s.name for s in services if not s.active]
    if inactive:
        raise SubscriptionError(f"services: {', '.join(inactive)} is not active.")


# --- status -----------------------------------------------------------------------


def _change_status(
    sub: PrepaidSubscription, *, to: str, hold: str, reason: str, actor: Actor, at: datetime
) -> SubscriptionStatusChange:
    """Record the change on the (locked) subscription and in its history."""
    old = sub.status
    sub.status, sub.hold = to, hold
    sub.status_reason = reason[:500]
    sub.status_changed_at = at
    sub.save(update_fields=["status", "hold", "status_reason", "status_changed_at", "updated_at"])
    return SubscriptionStatusChange.objects.create(
        subscription=sub, customer_id_copy=sub.customer_id, old_status=old, new_status=to,
        reason=reason[:500], actor=actor.label, changed_at=at,
    )  # fmt: skip


def _reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise SubscriptionError("reason: say why (it is kept in the status history).")
    if len(text) > 500:
        raise SubscriptionError("reason: at most 500 characters.")
    if not text.isprintable():
        raise SubscriptionError("reason: use printable characters only.")
    return text


def _locked(subscription: PrepaidSubscription | int) -> PrepaidSubscription:
    pk = subscription.pk if isinstance(subscription, PrepaidSubscription) else subscription
    found = (
        PrepaidSubscription.objects.select_for_update(of=("self",))
        .select_related("wallet", "customer")
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise SubscriptionError(f"subscription {pk} does not exist.")
    return found


def register_subscription(
    *,
    customer: Customer,
    name: str,
    services: Sequence[Service],
    actor: Actor,
    anchor_day: int | None = None,
    starts_on: date | None = None,
    currency: str | None = None,
) -> PrepaidSubscription:
    """Register a prepaid subscription: the customer's wallet in the currency (opened
    now if it is the first) pays for it; the first period is billed at once
    (`bill_subscriptions`, after this commits), or the subscription starts
    deactivated for funds if the wallet cannot pay it."""
    name = (name or "").strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise SubscriptionError("name: 1 to 200 printable characters.")
    anchor = customer.billing_anchor_day if anchor_day is None else anchor_day
    if not isinstance(anchor, int) or not 1 <= anchor <= 28:
        raise SubscriptionError("anchor_day: a day of the month between 1 and 28.")
    currency = (currency or customer.currency).upper()
    _check_rates(list(services), currency)
    now = timezone.now()
    first = starts_on or timezone.localdate(now)
    with transaction.atomic(durable=True):
        wallet = wallet_services.open_wallet(customer=customer, currency=currency)
        sub = PrepaidSubscription.objects.create(
            customer=customer, wallet=wallet, name=name, anchor_day=anchor, starts_on=first,
            next_period_start=first, status=Status.ACTIVE, status_changed_at=now,
            status_reason="Registered", created_by=actor.label,
        )  # fmt: skip
        sub.services.set(services)
        SubscriptionStatusChange.objects.create(
            subscription=sub, customer_id_copy=customer.pk, old_status="",
            new_status=Status.ACTIVE, reason="Registered", actor=actor.label, changed_at=now,
        )  # fmt: skip
    from billing.subscriptions import topup

    batch = bill_subscriptions(subscription_ids=[sub.pk], actor=actor)
    topup.check_wallets(wallet_ids=batch.wallets)
    sub.refresh_from_db()
    return sub


def deactivate_subscription(
    *, subscription: PrepaidSubscription | int, reason: str, actor: Actor
) -> PrepaidSubscription:
    """Staff put an active subscription on hold: not billed, not reactivated by funds."""
    text = _reason(reason)
    with transaction.atomic(durable=True):
        sub = _locked(subscription)
        if sub.status != Status.ACTIVE:
            raise SubscriptionError(
                f"subscription {sub.pk} is {sub.get_status_display().lower()}; only an active "
                "one can be deactivated."
            )
        _change_status(sub, to=Status.DEACTIVATED, hold=Hold.STAFF, reason=text, actor=actor,
                       at=timezone.now())  # fmt: skip
        return sub


def reactivate_subscription(
    *, subscription: PrepaidSubscription | int, reason: str, actor: Actor
) -> PrepaidSubscription:
    """Staff reactivate a deactivated subscription; the current period is billed now.
    Refused (nothing changes) when the wallet cannot pay it."""
    text = _reason(reason)
    with transaction.atomic(durable=True):
        sub = _locked(subscription)
        if sub.status != Status.DEACTIVATED:
            raise SubscriptionError(
                f"subscription {sub.pk} is {sub.get_status_display().lower()}; only a "
                "deactivated one can be reactivated."
            )
        outcome = _reactivate(sub, reason=text, actor=actor, now=timezone.now())
        if outcome is not None:
            raise SubscriptionError(outcome)
        return sub


def cancel_subscription(
    *, subscription: PrepaidSubscription | int, reason: str, actor: Actor
) -> PrepaidSubscription:
    """End it for good: never billed again. Periods already billed stay billed."""
    text = _reason(reason)
    with transaction.atomic(durable=True):
        sub = _locked(subscription)
        if sub.status == Status.CANCELLED:
            raise SubscriptionError(f"subscription {sub.pk} is already cancelled.")
        _change_status(sub, to=Status.CANCELLED, hold=Hold.NONE, reason=text, actor=actor,
                       at=timezone.now())  # fmt: skip
        return sub


# --- billing ----------------------------------------------------------------------


def charge_key(sub: PrepaidSubscription, period: BillingPeriod) -> str:
    return f"subscription:{sub.pk}:{period.start.isoformat()}"


def _bill_period(
    sub: PrepaidSubscription, period: BillingPeriod, *, actor: Actor, now: datetime
) -> str | None:
    """Debit the wallet for one period of a locked subscription and move the cursor.
    Returns None when billed (or billed before), else why the wallet cannot pay."""
    if SubscriptionCharge.objects.filter(subscription=sub, period_start=period.start).exists():
        sub.next_period_start = max(sub.next_period_start, period.end)
        sub.save(update_fields=["next_period_start", "updated_at"])
        return None
    fee = fee_for(sub, period)
    tx_id = None
    if fee > 0:
        try:
            with transaction.atomic():  # the draw-down's savepoint: refused = nothing booked
                booked = wallet_services.draw_down(
                    wallet=sub.wallet_id, amount=fee, actor=actor,
                    idempotency_key=charge_key(sub, period),
                    memo=f"{sub.name}: {period}", reference=f"subscription-{sub.pk}",
                    metadata={"subscription": sub.pk, "period_start": period.start.isoformat(),
                              "period_end": period.end.isoformat()},
                )  # fmt: skip
        except wallet_errors.InsufficientFunds as exc:
            return (
                f"The wallet cannot pay {amount_text(fee)} {sub.wallet.currency} for {period}: "
                f"{amount_text(exc.available)} {sub.wallet.currency} available."
            )
        tx_id = booked.transaction_id
    SubscriptionCharge.objects.create(
        subscription=sub, customer_id_copy=sub.customer_id, period_start=period.start,
        period_end=period.end, amount=fee, currency=sub.wallet.currency, transaction_id=tx_id,
        billed_at=now,
    )  # fmt: skip
    sub.next_period_start = period.end
    sub.save(update_fields=["next_period_start", "updated_at"])
    return None


def _deactivate_for_funds(
    sub: PrepaidSubscription, why: str, *, actor: Actor, now: datetime
) -> None:
    change = _change_status(
        sub, to=Status.DEACTIVATED, hold=Hold.FUNDS, reason=why, actor=actor, at=now
    )
    enqueue_notification(
        customer=sub.customer,
        kind="subscription_deactivated",
        subject=f"Your subscription {sub.name} is deactivated",
        body=(
            f"{why}\n\nWe have put {sub.name} on hold. Top up your wallet (card payment, "
            "refill card, or a payment to us) and it is reactivated at once."
        ),
        dedupe_key=f"subscription-status:{change.pk}",
    )


def _reactivate(
    sub: PrepaidSubscription, *, reason: str, actor: Actor, now: datetime
) -> str | None:
    """Bill the current period of a locked deactivated subscription and reactivate it;
    returns why not (nothing changed) when the wallet cannot pay."""
    period = sub.current_period(timezone.localdate(now))
    if sub.next_period_start < period.start:
        sub.next_period_start = period.start  # periods spent on hold are not billed
    with transaction.atomic():  # a savepoint: refused = the cursor stays where it was
        problem = _bill_period(sub, period, actor=actor, now=now)
        if problem is not None:
            transaction.set_rollback(True)
            return problem
        change = _change_status(
            sub, to=Status.ACTIVE, hold=Hold.NONE, reason=reason, actor=actor, at=now
        )
        enqueue_notification(
            customer=sub.customer,
            kind="subscription_reactivated",
            subject=f"Your subscription {sub.name} is active again",
            body=f"{sub.name} is active again; we billed {period}.",
            dedupe_key=f"subscription-status:{change.pk}",
        )
    return None


def _top_up_in_flight(wallet_id: int) -> bool:
    return AutoTopUpAttempt.objects.filter(
        auto_top_up__wallet_id=wallet_id, outcome=AutoTopUpAttempt.Outcome.PENDING
    ).exists()


@dataclass(frozen=True)
class BillingBatch:
    subscriptions: int  # looked at
    billed: int  # periods billed
    deactivated: int
    cursor: tuple[int, int] | None  # (wallet id, subscription id) of the last one
    behind: int = 0
    wallets: tuple[int, ...] = ()  # debited: the auto top-up looks at them next
    errors: tuple[str, ...] = ()

    @property
    def processed(self) -> int:
        return self.billed + self.deactivated

    @property
    def failed(self) -> int:
        return len(self.errors)


def bill_subscriptions(
    *,
    at: datetime | None = None,
    limit: int = 100,
    after: tuple[int, int] | None = None,
    actor: Actor = BILLING_JOB_ACTOR,
    subscription_ids: Sequence[int] | None = None,
) -> BillingBatch:
    """Bill the due periods of up to `limit` active subscriptions (after the cursor),
    in one transaction: in wallet order (wallets locked in id order), each in a
    savepoint so one failure stays its own. A subscription whose wallet cannot pay is
    deactivated, unless an automatic top-up for it is in flight (then it waits)."""
    now = at or timezone.now()
    today = timezone.localdate(now)
    due = PrepaidSubscription.objects.filter(status=Status.ACTIVE, next_period_start__lte=today)
    if subscription_ids is not None:
        due = due.filter(pk__in=list(subscription_ids))
    if after is not None:
        due = due.filter(Q(wallet_id__gt=after[0]) | Q(wallet_id=after[0], id__gt=after[1]))
    billed = deactivated = behind = 0
    debited: set[int] = set()
    problems: list[str] = []
    with transaction.atomic(durable=True):
        subs = list(
            due.select_for_update(skip_locked=True, of=("self",))
            .select_related("wallet", "customer")
            .order_by("wallet_id", "id")[:limit]
        )
        for sub in subs:
            try:
                with transaction.atomic():
                    for _ in range(MAX_PERIODS_PER_BATCH):
                        if sub.next_period_start > today:
                            break
                        period = sub.period_from(sub.next_period_start)
                        problem = _bill_period(sub, period, actor=actor, now=now)
                        if problem is None:
                            billed += 1
                            debited.add(sub.wallet_id)
                            continue
                        if not _top_up_in_flight(sub.wallet_id):
                            _deactivate_for_funds(sub, problem, actor=actor, now=now)
                            deactivated += 1
                        break
            except (wallet_errors.WalletError, SubscriptionError) as exc:
                problems.append(f"subscription {sub.pk} ({sub.name}): {exc}")
                continue
            if sub.status == Status.ACTIVE and sub.next_period_start <= today:
                behind += 1
    last = subs[-1] if subs else None
    return BillingBatch(
        subscriptions=len(subs), billed=billed, deactivated=deactivated,
        cursor=(last.wallet_id, last.pk) if last else None, behind=behind,
        wallets=tuple(sorted(debited)), errors=tuple(problems),
    )  # fmt: skip


def reactivate_funded(
    *,
    at: datetime | None = None,
    limit: int = 100,
    after: tuple[int, int] | None = None,
    actor: Actor = BILLING_JOB_ACTOR,
    wallet_ids: Iterable[int] | None = None,
) -> BillingBatch:
    """Reactivate (and bill) the subscriptions on hold for funds whose wallet can now
    pay the current period. Those it still cannot pay stay as they are."""
    now = at or timezone.now()
    held = PrepaidSubscription.objects.filter(status=Status.DEACTIVATED, hold=Hold.FUNDS)
    if wallet_ids is not None:
        held = held.filter(wallet_id__in=list(wallet_ids))
    if after is not None:
        held = held.filter(Q(wallet_id__gt=after[0]) | Q(wallet_id=after[0], id__gt=after[1]))
    reactivated = 0
    debited: set[int] = set()
    with transaction.atomic(durable=True):
        subs = list(
            held.select_for_update(skip_locked=True, of=("self",))
            .select_related("wallet", "customer")
            .order_by("wallet_id", "id")[:limit]
        )
        for sub in subs:
            if _reactivate(sub, reason="Reactivated: the wallet can pay the current period",
                           actor=actor, now=now) is None:  # fmt: skip
                reactivated += 1
                debited.add(sub.wallet_id)
    last = subs[-1] if subs else None
    return BillingBatch(
        subscriptions=len(subs), billed=reactivated, deactivated=0,
        cursor=(last.wallet_id, last.pk) if last else None, wallets=tuple(sorted(debited)),
    )  # fmt: skip


def billing_batches(*, batch_size: int = 100, at: datetime | None = None) -> Iterator[BillingBatch]:
    """The whole job, batch by batch: subscriptions on hold that can now pay are
    reactivated (the safety net behind the after-credit check), then every due
    period is billed, oldest first; a subscription further behind than one batch
    continues in the batches that follow. After each batch the wallets it debited
    get their automatic top-up looked at (`billing.subscriptions.topup`)."""
    from billing.subscriptions import topup

    at = at or timezone.now()
    cursor: tuple[int, int] | None = None
    while True:
        batch = reactivate_funded(at=at, limit=batch_size, after=cursor)
        if batch.subscriptions == 0:
            break
        yield batch
        cursor = batch.cursor
        topup.check_wallets(wallet_ids=batch.wallets)
    while True:
        cursor = None
        behind = 0
        while True:
            batch = bill_subscriptions(at=at, limit=batch_size, after=cursor)
            if batch.subscriptions == 0:
                break
            yield batch
            behind += batch.behind
            cursor = batch.cursor
            topup.check_wallets(wallet_ids=batch.wallets)
        if not behind:
            return


def wallet_has_held_subscriptions(wallet_id: int) -> bool:
    return PrepaidSubscription.objects.filter(
        wallet_id=wallet_id, status=Status.DEACTIVATED, hold=Hold.FUNDS
    ).exists()


def wallets_of(customer: Customer) -> list[Wallet]:
    return list(Wallet.objects.filter(customer=customer).order_by("currency"))
