"""Automatic top-up: "when available funds fall below X, charge Y to the saved card".

The rails, each enforced here while holding the `AutoTopUp` row lock:
- In flight counts: a charge still pending (its grant not yet active) is added to
  the funds before comparing with the threshold, and no second charge starts while
  one is pending.
- One charge per crossing: the funds going below the threshold (from at or above
  it) opens a new crossing (`crossing` += 1); a crossing gets at most one charge
  that succeeds. Each attempt is a row with key `autotopup:<wallet>:<crossing>:<try>`
  (unique), its pending grant carries the same key, and its `StripeCharge` is
  attempted with the charge's own idempotency key, so a retry or a second worker
  reuses the same Stripe request and never charges twice.
- Top up to target: with a target, the charge is the shortfall up to it when that
  is more than the usual amount (a large debit that overshot the threshold).
- Daily cap in count and in amount (charges in flight or succeeded since local
  midnight); a charge past either is held back and listed as such.
- After a decline: back off 1 h, 6 h, then 24 h before the next try of the same
  crossing, notify the customer, and after `max_declines` declines in a row pause
  until the card is updated (`resume_auto_top_up`, called when a card is saved).

Money: the charge pays a pending `top_up` grant (psp_clearing → grant once Stripe
says succeeded, by `billing.stripe_services.apply_charge_effects`; a decline voids
it). Never a Stripe call inside a transaction of ours.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import ROUND_UP, Decimal

from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing.errors import BillingError
from billing.models import StripeCharge, StripePaymentMethod
from billing.models.subscriptions import MAX_MONEY, AutoTopUp, AutoTopUpAttempt
from billing.money import amount_text
from billing.stripe import services as stripe_services
from billing.stripe.gateway import stripe_enabled
from billing.subscriptions.errors import SubscriptionError
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.models import Wallet
from wallets.notifications import enqueue_notification

logger = logging.getLogger(__name__)

TOP_UP_ACTOR = Actor.job("auto_top_up")
BACKOFF = (timedelta(hours=1), timedelta(hours=6), timedelta(hours=24))
Outcome = AutoTopUpAttempt.Outcome
CENT = Decimal("0.01")


def backoff(declines: int) -> timedelta:
    """1 h after the first decline, 6 h after the second, 24 h after each later one."""
    return BACKOFF[min(max(declines, 1), len(BACKOFF)) - 1]


# --- settings ---------------------------------------------------------------------


def settings_problems(
    *,
    threshold: Decimal,
    amount: Decimal,
    target: Decimal | None,
    daily_max_amount: Decimal,
    daily_max_count: int,
    max_declines: int,
) -> list[str]:
    """What is wrong with these settings, each "field: what to do" (empty: nothing)."""
    problems = []
    for field, value in (("threshold", threshold), ("amount", amount),
                         ("daily_max_amount", daily_max_amount), ("target", target)):  # fmt: skip
        if value is None:
            continue
        if not isinstance(value, Decimal) or not value.is_finite():
            problems.append(f"{field}: a number such as 20.00.")
        elif value < 0 or value >= MAX_MONEY:
            problems.append(f"{field}: between 0 and {MAX_MONEY:,.0f}.")
        elif value != value.quantize(CENT):
            problems.append(f"{field}: at most 2 decimal places.")
    if not problems:
        if amount < Decimal("0.50"):
            problems.append("amount: at least 0.50 (card payments below that are refused).")
        if target is not None and target <= threshold:
            problems.append("target: must be above the threshold (or leave it empty).")
        if daily_max_amount < amount:
            problems.append("daily_max_amount: at least the amount of one charge.")
    if not isinstance(daily_max_count, int) or not 1 <= daily_max_count <= 50:
        problems.append("daily_max_count: between 1 and 50.")
    if not isinstance(max_declines, int) or not 1 <= max_declines <= 10:
        problems.append("max_declines: between 1 and 10.")
    return problems


def configure_auto_top_up(
    *,
    wallet: Wallet,
    threshold: Decimal,
    amount: Decimal,
    daily_max_amount: Decimal,
    actor: Actor,
    enabled: bool = True,
    target: Decimal | None = None,
    daily_max_count: int = 3,
    max_declines: int = 3,
) -> AutoTopUp:
    """Create or change the wallet's automatic top-up (admin, portal, API). Saving the
    settings also lifts a pause after declines (the customer acted on them)."""
    problems = settings_problems(
        threshold=threshold, amount=amount, target=target, daily_max_amount=daily_max_amount,
        daily_max_count=daily_max_count, max_declines=max_declines,
    )  # fmt: skip
    if problems:
        raise SubscriptionError(" ".join(problems))
    with transaction.atomic(durable=True):
        settings, _ = AutoTopUp.objects.select_for_update().get_or_create(
            wallet=wallet,
            defaults={"customer_id": wallet.customer_id, "threshold": threshold, "amount": amount,
                      "daily_max_amount": daily_max_amount},
        )  # fmt: skip
        settings.enabled = enabled
        settings.threshold, settings.amount, settings.target = threshold, amount, target
        settings.daily_max_amount, settings.daily_max_count = daily_max_amount, daily_max_count
        settings.max_declines = max_declines
        settings.paused_at, settings.paused_reason = None, ""
        settings.declines, settings.next_attempt_at = 0, None
        settings.save()
    logger.info("auto top-up of wallet %s set by %s", wallet.pk, actor)
    return settings


def resume_auto_top_up(*, customer_id: int) -> int:
    """A card was saved or changed: lift the pause after declines."""
    return AutoTopUp.objects.filter(customer_id=customer_id, paused_at__isnull=False).update(
        paused_at=None, paused_reason="", declines=0, next_attempt_at=None,
        updated_at=timezone.now(),
    )  # fmt: skip


# --- the check --------------------------------------------------------------------


def _day_start(now: datetime) -> datetime:
    return timezone.make_aware(datetime.combine(timezone.localdate(now), time.min))


def _start_attempt(wallet_id: int, now: datetime, actor: Actor) -> int | None:
    """Under the settings row lock: decide whether a charge is due and, if so, commit
    its pending grant, its attempt row and its pending Stripe charge. Returns the
    charge id to attempt (or None)."""
    with transaction.atomic(durable=True):
        settings = (
            AutoTopUp.objects.select_for_update()
            .select_related("wallet", "customer")
            .filter(wallet_id=wallet_id)
            .first()
        )
        if settings is None or not settings.enabled or settings.paused_at is not None:
            return None
        wallet = settings.wallet
        funds = wallet.available_funds(now)
        in_flight = settings.attempts.filter(outcome=Outcome.PENDING).aggregate(s=Sum("amount"))[
            "s"
        ] or Decimal("0")
        if funds + in_flight >= settings.threshold:
            if not settings.armed:
                settings.armed = True  # re-armed: the next fall below is a new crossing
                settings.save(update_fields=["armed", "updated_at"])
            return None
        if settings.armed:
            settings.armed = False
            settings.crossing += 1
            settings.declines, settings.next_attempt_at = 0, None
            settings.save(
                update_fields=["armed", "crossing", "declines", "next_attempt_at", "updated_at"]
            )
        if in_flight:
            return None  # never a second charge while one is pending
        this_crossing = settings.attempts.filter(crossing=settings.crossing)
        if this_crossing.filter(outcome=Outcome.SUCCEEDED).exists():
            return None  # one charge per crossing
        if settings.next_attempt_at is not None and now < settings.next_attempt_at:
            return None  # backing off after a decline
        tries = this_crossing.filter(outcome__in=[Outcome.DECLINED]).count() + 1
        amount = settings.amount
        if settings.target is not None:
            shortfall = (settings.target - funds).quantize(CENT, rounding=ROUND_UP)
            amount = max(amount, shortfall)
        key = f"autotopup:{wallet.pk}:{settings.crossing}:{tries}"
        base = {
            "auto_top_up": settings, "customer_id_copy": settings.customer_id,
            "crossing": settings.crossing, "try_number": tries, "amount": amount,
            "currency": wallet.currency, "available_before": funds, "created_at": now,
        }  # fmt: skip
        today = settings.attempts.filter(
            created_at__gte=_day_start(now), outcome__in=[Outcome.PENDING, Outcome.SUCCEEDED]
        ).aggregate(s=Sum("amount"))
        count_today = settings.attempts.filter(
            created_at__gte=_day_start(now), outcome__in=[Outcome.PENDING, Outcome.SUCCEEDED]
        ).count()
        spent = today["s"] or Decimal("0")
        if count_today >= settings.daily_max_count or spent + amount > settings.daily_max_amount:
            AutoTopUpAttempt.objects.get_or_create(
                key=f"{key}:cap:{timezone.localdate(now).isoformat()}",
                defaults={**base, "outcome": Outcome.SKIPPED_CAP, "finished_at": now,
                          "reason": f"Daily cap: {count_today} of {settings.daily_max_count} "
                          f"charges, {amount_text(spent)} of {amount_text(settings.daily_max_amount)} "
                          f"{wallet.currency} today; {amount_text(amount)} more would pass it."},
            )  # fmt: skip
            return None
        method = StripePaymentMethod.objects.filter(
            customer_id=settings.customer_id, is_default=True
        ).first()
        if not stripe_enabled() or method is None or not settings.customer.stripe_customer_id:
            AutoTopUpAttempt.objects.get_or_create(
                key=f"{key}:no-card",
                defaults={**base, "outcome": Outcome.SKIPPED_NO_CARD, "finished_at": now,
                          "reason": "No default card saved (or card payments are off): save a "
                          "card in the portal under Auto top-up."},
            )  # fmt: skip
            return None
        grant = wallet_services.grant_credit(
            wallet=wallet, amount=amount, kind="top_up", name="Automatic top-up",
            actor=actor, idempotency_key=key, pending=True,
            source_type="auto_top_up", source_id=key,
            memo=f"Automatic top-up: funds {amount_text(funds)} below {amount_text(settings.threshold)}",
        )  # fmt: skip
        charge = StripeCharge.objects.create(
            customer=settings.customer, amount=amount, currency=wallet.currency,
            purpose=StripeCharge.Purpose.AUTO_TOP_UP, grant_id=grant.pk,
            description=f"Automatic top-up {key}",
            stripe_customer_id=settings.customer.stripe_customer_id,
            payment_method_id=method.stripe_payment_method_id, initiated_by=actor.label,
        )  # fmt: skip
        AutoTopUpAttempt.objects.create(
            **base, key=key, outcome=Outcome.PENDING, charge=charge, grant_id=grant.pk
        )
        return charge.pk


def record_outcome(*, charge_id: int, now: datetime | None = None) -> str | None:
    """Follow a settled charge onto its attempt (once): a success clears the decline
    count; a decline backs off, notifies, and pauses after `max_declines`."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        attempt = (
            AutoTopUpAttempt.objects.select_for_update(of=("self",))
            .select_related("charge", "auto_top_up__customer")
            .filter(charge_id=charge_id)
            .first()
        )
        if attempt is None or attempt.outcome != Outcome.PENDING or attempt.charge is None:
            return attempt.outcome if attempt else None
        charge = attempt.charge
        if not charge.is_settled:
            return Outcome.PENDING
        settings = AutoTopUp.objects.select_for_update().get(pk=attempt.auto_top_up_id)
        attempt.finished_at = now
        if charge.status in (StripeCharge.Status.FAILED, StripeCharge.Status.CANCELED):
            attempt.outcome = Outcome.DECLINED
            attempt.reason = charge.failure_reason or charge.failure_code or "declined"
            settings.declines += 1
            settings.next_attempt_at = now + backoff(settings.declines)
            paused = settings.declines >= settings.max_declines
            if paused:
                settings.paused_at = now
                settings.paused_reason = (
                    f"Paused after {settings.declines} declines in a row: update the card "
                    "(save a new one) to resume."
                )
            wait = (
                "paused until you update your card"
                if paused
                else (f"we try again after {settings.next_attempt_at:%Y-%m-%d %H:%M %Z}")
            )
            enqueue_notification(
                customer=settings.customer, kind="auto_top_up_declined",
                subject="Your automatic top-up was declined",
                body=f"We could not charge {amount_text(attempt.amount)} {attempt.currency} to "
                f"your card: {attempt.reason}. Automatic top-up is {wait}.",
                dedupe_key=f"{attempt.key}:declined",
            )  # fmt: skip
        else:
            attempt.outcome = Outcome.SUCCEEDED
            settings.declines, settings.next_attempt_at = 0, None
            # The money lifted the funds back to the threshold: the next fall below it
            # is a new crossing (even if no check looks before the next debit).
            wallet = Wallet.objects.get(pk=settings.wallet_id)
            if wallet.available_funds(now) >= settings.threshold:
                settings.armed = True
        attempt.save(update_fields=["outcome", "reason", "finished_at"])
        settings.save()
        return attempt.outcome


def check_wallet(
    *, wallet_id: int, now: datetime | None = None, actor: Actor = TOP_UP_ACTOR
) -> str | None:
    """Look at one wallet: start (and attempt) a charge if the rules say so, and
    record its outcome. Safe to call any number of times, from any number of
    workers at once. Returns the new attempt's outcome, or None."""
    charge_id = _start_attempt(wallet_id, now or timezone.now(), actor)
    if charge_id is None:
        return None
    try:
        stripe_services.attempt_charge(charge_id=charge_id)
    except BillingError as exc:  # no definite answer: the sweep retries with the same key
        logger.warning("auto top-up charge %s: %s", charge_id, exc)
    return record_outcome(charge_id=charge_id)


def check_wallets(*, wallet_ids: Iterable[int]) -> int:
    """The wallets just debited (billing job): those with an enabled top-up."""
    ids = list(
        AutoTopUp.objects.filter(wallet_id__in=list(wallet_ids), enabled=True, paused_at=None)
        .order_by("wallet_id")
        .values_list("wallet_id", flat=True)
    )
    return sum(1 for wallet_id in ids if check_wallet(wallet_id=wallet_id))


@dataclass(frozen=True)
class TopUpBatch:
    wallets: int
    charged: int
    cursor: int | None
    errors: tuple[str, ...] = ()

    @property
    def processed(self) -> int:
        return self.charged

    @property
    def failed(self) -> int:
        return len(self.errors)


def top_up_batches(*, batch_size: int = 100, now: datetime | None = None) -> Iterator[TopUpBatch]:
    """The sweep: attempts whose charge settled meanwhile (webhook, Stripe sweep) get
    their outcome; then every enabled, unpaused top-up is looked at, in wallet order.
    (A wallet above its threshold costs one read.)"""
    now = now or timezone.now()
    settled = AutoTopUpAttempt.objects.filter(outcome=Outcome.PENDING).exclude(
        charge__status=StripeCharge.Status.PENDING
    )
    for charge_id in settled.values_list("charge_id", flat=True)[:batch_size]:
        record_outcome(charge_id=charge_id, now=now)
    cursor = 0
    while True:
        ids = list(
            AutoTopUp.objects.filter(enabled=True, paused_at=None, wallet_id__gt=cursor)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .order_by("wallet_id")
            .values_list("wallet_id", flat=True)[:batch_size]
        )
        if not ids:
            return
        charged = 0
        problems: list[str] = []
        for wallet_id in ids:
            try:
                charged += 1 if check_wallet(wallet_id=wallet_id, now=now) else 0
            except (BillingError, ValueError) as exc:
                problems.append(f"wallet {wallet_id}: {exc}")
        cursor = ids[-1]
        yield TopUpBatch(wallets=len(ids), charged=charged, cursor=cursor, errors=tuple(problems))
