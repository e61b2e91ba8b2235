"""Prepaid subscriptions (CRM.COM's prepaid billing) and automatic top-up.

Models only (data, constraints, small behaviour on one object). Re-exported by
`billing.models`; they reach the ledger only by string FKs: every write that moves money is in `billing.subscriptions.services`
and `billing.subscriptions.topup`, through `wallets.services`.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from billing.money import amount_text
from billing.periods import BillingPeriod, period_containing, period_starting

__all__ = [
    "AutoTopUp", "AutoTopUpAttempt", "PrepaidSubscription", "Service", "ServiceRate",
    "SubscriptionCharge", "SubscriptionStatusChange",
]  # fmt: skip

ZERO = Decimal("0")
MAX_MONEY = Decimal("1000000000")  # one fee or top-up below 10^9: a typo, not a price


def _money(verbose_name: str | None = None, **kwargs) -> models.DecimalField:
    return models.DecimalField(verbose_name, max_digits=18, decimal_places=2, **kwargs)


class Service(models.Model):
    """Something a subscription provides (a TV package, a line, a support plan)."""

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ServiceRate(models.Model):
    """What a service costs in one currency: a fee per billing period and/or per day.

    A period's charge is `per_period` plus `per_day` × the days of the period the
    subscription covers (so a subscription starting mid-period pays the per-day part
    only for its own days)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="rates")
    currency = models.CharField(max_length=3)
    per_period = _money(
        "fee per billing period",
        default=ZERO,
        validators=[MinValueValidator(ZERO), MaxValueValidator(MAX_MONEY)],
    )
    per_day = _money(
        "fee per day",
        default=ZERO,
        validators=[MinValueValidator(ZERO), MaxValueValidator(MAX_MONEY)],
    )

    class Meta:
        ordering = ["service", "currency"]
        constraints = [
            models.UniqueConstraint(fields=["service", "currency"], name="one_rate_per_currency"),
            models.CheckConstraint(
                condition=Q(per_period__gte=0) & Q(per_day__gte=0),
                name="service_rate_not_negative",
            ),
        ]

    def __str__(self) -> str:
        parts = []
        if self.per_period:
            parts.append(f"{self.per_period} {self.currency} per period")
        if self.per_day:
            parts.append(f"{self.per_day} {self.currency} per day")
        return f"{self.service}: " + (" + ".join(parts) or "free")


class PrepaidSubscription(models.Model):
    """A subscription paid in advance, period by period, from a wallet.

    `next_period_start` is the billing cursor: the first day not yet billed. The
    billing job bills each period once (`SubscriptionCharge`, unique per period) and
    moves the cursor in the same transaction."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DEACTIVATED = "deactivated", "Deactivated"
        CANCELLED = "cancelled", "Cancelled"

    class Hold(models.TextChoices):
        NONE = "", "—"
        # funds: reactivated as soon as the wallet can pay; staff: only staff reactivate
        FUNDS = "funds", "Insufficient funds"
        STAFF = "staff", "By staff"

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="subscriptions"
    )
    wallet = models.ForeignKey(
        "wallets.Wallet", on_delete=models.PROTECT, related_name="subscriptions"
    )
    name = models.CharField(max_length=200)
    services = models.ManyToManyField(Service, related_name="subscriptions")
    anchor_day = models.PositiveSmallIntegerField(
        "billing anchor day",
        validators=[MinValueValidator(1), MaxValueValidator(28)],
        help_text="Day of the month a billing period starts (1–28). Periods are monthly.",
    )
    starts_on = models.DateField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    hold = models.CharField(max_length=5, choices=Hold.choices, default=Hold.NONE, blank=True)
    status_reason = models.CharField(max_length=500, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    next_period_start = models.DateField(
        help_text="The billing cursor: the first day not billed yet."
    )
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "prepaid subscription"
        indexes = [
            models.Index(fields=["customer"], name="subscription_customer"),
            # the billing job: active ones whose next period has begun
            models.Index(
                fields=["next_period_start", "wallet", "id"],
                name="subscription_due",
                condition=Q(status="active"),
            ),
            models.Index(
                fields=["wallet", "id"],
                name="subscription_on_hold",
                condition=Q(status="deactivated", hold="funds"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(anchor_day__gte=1) & Q(anchor_day__lte=28),
                name="subscription_anchor_day_1_28",
            ),
            models.CheckConstraint(
                condition=Q(status="deactivated") | Q(hold=""),
                name="subscription_hold_only_when_deactivated",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.customer.account_number})"

    def period_from(self, day: date) -> BillingPeriod:
        return period_starting(day, self.anchor_day)

    def current_period(self, today: date) -> BillingPeriod:
        return period_containing(today, self.anchor_day)

    @property
    def next_billing_date(self) -> date | None:
        return self.next_period_start if self.status == self.Status.ACTIVE else None


class SubscriptionStatusChange(models.Model):
    """Every status change of a subscription: from, to, why, who and when."""

    subscription = models.ForeignKey(
        PrepaidSubscription, on_delete=models.CASCADE, related_name="status_changes"
    )
    customer_id_copy = models.BigIntegerField("customer id", db_index=True)
    old_status = models.CharField(max_length=12, blank=True)
    new_status = models.CharField(max_length=12)
    reason = models.CharField(max_length=500)
    actor = models.CharField(max_length=200)
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.old_status or 'new'} → {self.new_status}"


class SubscriptionCharge(models.Model):
    """One billed period: the debit wallet transaction for (subscription, period)."""

    subscription = models.ForeignKey(
        PrepaidSubscription, on_delete=models.PROTECT, related_name="charges"
    )
    customer_id_copy = models.BigIntegerField("customer id", db_index=True)
    period_start = models.DateField()
    period_end = models.DateField(help_text="First day of the next period (exclusive).")
    amount = models.DecimalField(max_digits=24, decimal_places=6)
    currency = models.CharField(max_length=3)
    transaction = models.OneToOneField(
        "wallets.LedgerTransaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="subscription_charge",
        help_text="The debit; none when the period cost nothing.",
    )
    billed_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start"], name="one_charge_per_period"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.period_start:%Y-%m-%d} – {self.last_day:%Y-%m-%d}: "
            f"{amount_text(self.amount)} {self.currency}"
        )

    @property
    def last_day(self) -> date:
        """The period's last day (`period_end` is the first day of the next one)."""
        return self.period_end - timedelta(days=1)


class AutoTopUp(models.Model):
    """Per wallet: when available funds fall below `threshold`, charge `amount` (or up
    to `target`) to the customer's default saved card, off-session, with rails."""

    wallet = models.OneToOneField(
        "wallets.Wallet", on_delete=models.CASCADE, related_name="auto_top_up"
    )
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.CASCADE, related_name="auto_top_ups"
    )
    enabled = models.BooleanField(default=True)
    threshold = _money(
        "when available funds fall below",
        validators=[MinValueValidator(ZERO), MaxValueValidator(MAX_MONEY)],
    )
    amount = _money(
        "charge", validators=[MinValueValidator(Decimal("0.50")), MaxValueValidator(MAX_MONEY)]
    )
    target = _money(
        "top up to",
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO), MaxValueValidator(MAX_MONEY)],
        help_text="Optional: when a large debit overshoots, charge the shortfall up to this "
        "amount instead (never less than the charge above).",
    )
    daily_max_count = models.PositiveSmallIntegerField(
        "at most this many charges a day",
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
    )
    daily_max_amount = _money(
        "at most this much a day",
        validators=[MinValueValidator(Decimal("0.50")), MaxValueValidator(MAX_MONEY)],
    )
    max_declines = models.PositiveSmallIntegerField(
        "pause after this many declines in a row",
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
    )
    # State the service keeps (never edited in forms):
    armed = models.BooleanField(default=True, editable=False)
    crossing = models.PositiveIntegerField(default=0, editable=False)
    declines = models.PositiveSmallIntegerField(default=0, editable=False)
    next_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    paused_reason = models.CharField(max_length=300, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "automatic top-up"
        constraints = [
            models.CheckConstraint(
                condition=Q(threshold__gte=0) & Q(amount__gt=0) & Q(daily_max_amount__gt=0),
                name="auto_top_up_amounts_positive",
            ),
            models.CheckConstraint(
                condition=Q(target__isnull=True) | Q(target__gt=models.F("threshold")),
                name="auto_top_up_target_above_threshold",
            ),
        ]

    def __str__(self) -> str:
        return f"Auto top-up {self.wallet}: below {self.threshold} charge {self.amount}"

    @property
    def state(self) -> str:
        if not self.enabled:
            return "off"
        if self.paused_at:
            return "paused"
        return "on"


class AutoTopUpAttempt(models.Model):
    """Every attempt (a charge, or a charge the rails held back) with its outcome."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Charge in flight"
        SUCCEEDED = "succeeded", "Charged"
        DECLINED = "declined", "Declined"
        SKIPPED_CAP = "skipped_cap", "Held back: daily cap reached"
        SKIPPED_NO_CARD = "skipped_no_card", "Held back: no default card"

    auto_top_up = models.ForeignKey(AutoTopUp, on_delete=models.CASCADE, related_name="attempts")
    customer_id_copy = models.BigIntegerField("customer id", db_index=True)
    key = models.CharField(max_length=200, unique=True)
    crossing = models.PositiveIntegerField()
    try_number = models.PositiveSmallIntegerField()
    amount = _money()
    currency = models.CharField(max_length=3)
    available_before = models.DecimalField(max_digits=24, decimal_places=6)
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    reason = models.CharField(max_length=500, blank=True)
    charge = models.OneToOneField(
        "billing.StripeCharge",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="auto_top_up_attempt",
    )
    grant_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["auto_top_up"],
                name="auto_top_up_in_flight",
                condition=Q(outcome="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key}: {self.get_outcome_display()}"
