"""Recurring grants: each rule issues its grant once per billing period.

A period gets a grant when it overlaps the rule's [starts_on, ends_on) while the
rule is active, and has begun (a period is issued on its first day, at the latest
when the job next runs; a job that was down catches up every period it missed).
Each grant goes through `wallets.services.grant_credit` with the idempotency key
`recurring:<rule id>:<period start>`, and the rule's cursor (`next_period_start`)
moves on in the same transaction, so a run killed at any point and rerun issues
every period exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.periods import BillingPeriod, period_containing
from wallets import errors, services
from wallets.actors import Actor
from wallets.models import RecurringGrantRule

RECURRING_JOB_ACTOR = Actor.job("issue_recurring_grants")
# Periods one rule catches up per batch; a rule further behind continues next batch.
MAX_PERIODS_PER_BATCH = 12


@dataclass(frozen=True)
class RecurringBatch:
    rules: int  # rules looked at
    issued: int  # periods granted (a replayed key counts: the period has its grant)
    cursor: tuple[int, int] | None  # (wallet id, rule id) of the last rule looked at
    behind: int = 0  # rules with periods still to issue after this batch
    errors: tuple[str, ...] = ()

    @property
    def processed(self) -> int:
        return self.issued

    @property
    def failed(self) -> int:
        return len(self.errors)


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def first_open_period(rule: RecurringGrantRule, anchor_day: int) -> BillingPeriod:
    """The earliest period the rule has not issued yet."""
    first = period_containing(rule.starts_on, anchor_day)
    if rule.next_period_start is None:
        return first
    following = period_containing(rule.next_period_start, anchor_day)
    if following.start < rule.next_period_start:
        # The customer's anchor day changed since: the period holding the cursor was
        # issued under the old anchor, the new anchor applies from the next one.
        following = following.next(anchor_day)
    return following if following.start > first.start else first


def due_periods(
    rule: RecurringGrantRule, *, today: date, anchor_day: int, limit: int = MAX_PERIODS_PER_BATCH
) -> tuple[list[BillingPeriod], date]:
    """The periods to issue now (at most `limit`), and the cursor after them."""
    period = first_open_period(rule, anchor_day)
    periods: list[BillingPeriod] = []
    while (
        len(periods) < limit
        and period.start <= today
        and (rule.ends_on is None or period.start < rule.ends_on)
    ):
        periods.append(period)
        period = period.next(anchor_day)
    return periods, period.start


def issue_key(rule: RecurringGrantRule, period: BillingPeriod) -> str:
    return f"recurring:{rule.pk}:{period.start.isoformat()}"


def issue_recurring_grants(
    *,
    at: datetime | None = None,
    limit: int = 100,
    after: tuple[int, int] | None = None,
    actor: Actor = RECURRING_JOB_ACTOR,
    rule_ids: Sequence[int] | None = None,
) -> RecurringBatch:
    """Issue the due periods of up to `limit` rules (after the cursor; only
    `rule_ids` if given, e.g. the rule staff just created), in one transaction.
    Rules are taken in wallet order, so wallets are locked in id order (as transfers
    lock them); a rule whose grant fails is rolled back alone and reported, the
    others go on."""
    at = at or timezone.now()
    today = timezone.localdate(at)
    due = (
        RecurringGrantRule.objects.filter(active=True, starts_on__lte=today)
        .filter(Q(next_period_start__isnull=True) | Q(next_period_start__lte=today))
        .filter(
            Q(ends_on__isnull=True)
            | Q(next_period_start__isnull=True)
            | Q(next_period_start__lt=F("ends_on"))
        )
    )
    if rule_ids is not None:
        due = due.filter(pk__in=list(rule_ids))
    if after is not None:
        due = due.filter(Q(wallet_id__gt=after[0]) | Q(wallet_id=after[0], id__gt=after[1]))
    issued = behind = 0
    problems: list[str] = []
    with transaction.atomic(durable=True):
        rules = list(
            due.select_for_update(skip_locked=True, of=("self",))
            .select_related("wallet__customer", "condition_item")
            .order_by("wallet_id", "id")[:limit]
        )
        for rule in rules:
            anchor = rule.wallet.customer.billing_anchor_day
            periods, next_start = due_periods(rule, today=today, anchor_day=anchor)
            try:
                with transaction.atomic():  # a savepoint: this rule alone on failure
                    for period in periods:
                        effective = max(period.starts_at, _day_start(rule.starts_on))
                        services.grant_credit(
                            wallet=rule.wallet_id, amount=rule.amount, kind=rule.kind,
                            name=f"{rule.name} ({period})", actor=actor,
                            idempotency_key=issue_key(rule, period), pending=rule.pending,
                            effective_at=effective, expires_at=rule.expiry_for(effective),
                            priority=rule.priority, condition_item=rule.condition_item,
                            condition_dimensions=rule.condition_dimensions,
                            source_type="recurring_rule", source_id=str(rule.pk),
                            memo=f"Recurring grant for {period}",
                        )  # fmt: skip
                    rule.next_period_start = next_start
                    rule.save(update_fields=["next_period_start", "updated_at"])
            except errors.WalletError as exc:
                problems.append(f"rule {rule.pk} ({rule.name}): {exc}")
                continue
            issued += len(periods)
            if next_start <= today and (rule.ends_on is None or next_start < rule.ends_on):
                behind += 1
    last = rules[-1] if rules else None
    return RecurringBatch(
        rules=len(rules),
        issued=issued,
        cursor=(last.wallet_id, last.pk) if last else None,
        behind=behind,
        errors=tuple(problems),
    )


def issue_recurring_grant_batches(
    *, batch_size: int = 100, at: datetime | None = None
) -> Iterator[RecurringBatch]:
    """The whole job, batch by batch. A rule further behind than one batch catches up
    (MAX_PERIODS_PER_BATCH periods at a time) in the batches that follow."""
    at = at or timezone.now()
    while True:
        cursor: tuple[int, int] | None = None
        behind = 0
        while True:
            batch = issue_recurring_grants(at=at, limit=batch_size, after=cursor)
            if batch.rules == 0:
                break
            yield batch
            behind += batch.behind
            cursor = batch.cursor
        if not behind:
            return  # another pass only for rules that were further behind than one batch


def pause_rules(*, rule_ids: list[int]) -> int:
    """Stop issuing; periods that start while paused get no grant."""
    return RecurringGrantRule.objects.filter(pk__in=rule_ids, active=True).update(
        active=False, updated_at=timezone.now()
    )


def resume_rules(*, rule_ids: list[int], at: datetime | None = None) -> int:
    """Issue again from the current period on: the periods that passed while the rule
    was paused are not caught up (unlike periods a stopped job missed)."""
    today = timezone.localdate(at or timezone.now())
    resumed = 0
    with transaction.atomic(durable=True):
        rules = (
            RecurringGrantRule.objects.select_for_update(of=("self",))
            .select_related("wallet__customer")
            .filter(pk__in=rule_ids, active=False)
            .order_by("pk")
        )
        for rule in rules:
            anchor = rule.wallet.customer.billing_anchor_day
            current = period_containing(today, anchor).start
            if first_open_period(rule, anchor).start < current:
                rule.next_period_start = current
            rule.active = True
            rule.save(update_fields=["active", "next_period_start", "updated_at"])
            resumed += 1
    return resumed
