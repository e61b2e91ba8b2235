"""Staff-edited settings of prepaid credit: default expiry, recurring grant rules."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.money import amount_text
from billing.periods import PeriodUnit, add_period
from wallets.models.ledger import money_field


class PrepaidCreditSettings(models.Model):
    """Staff-editable defaults for prepaid credit. One row (id 1), edited in the admin."""

    default_expiry_count = models.PositiveSmallIntegerField(
        "default expiry period",
        default=12,
        validators=[MinValueValidator(1)],
        help_text="A grant expires this long after it becomes effective, unless the grant "
        "says otherwise.",
    )
    default_expiry_unit = models.CharField(
        "unit", max_length=6, choices=PeriodUnit.choices, default=PeriodUnit.MONTHS
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "prepaid credit settings"
        verbose_name_plural = "prepaid credit settings"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="prepaid_settings_single_row"),
            models.CheckConstraint(
                condition=Q(default_expiry_count__gte=1), name="prepaid_settings_expiry_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"Prepaid credit settings (credit expires after {self.default_period})"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> PrepaidCreditSettings:
        current, _ = cls.objects.get_or_create(pk=1)
        return current

    @property
    def default_period(self) -> str:
        return f"{self.default_expiry_count} {self.get_default_expiry_unit_display()}"

    def default_expiry(self, effective_at: datetime) -> datetime:
        return add_period(effective_at, self.default_expiry_count, self.default_expiry_unit)


class RecurringGrantRule(models.Model):
    """Issues one grant into the wallet per billing period of its customer (periods
    start on the customer's billing anchor day), from the period containing
    `starts_on` until the last period starting before `ends_on`."""

    class Kind(models.TextChoices):
        PAID = "paid", "Paid"
        FREE = "free", "Free (promotion)"

    wallet = models.ForeignKey("Wallet", on_delete=models.PROTECT, related_name="recurring_rules")
    name = models.CharField(max_length=200, help_text="Each grant gets this name and the period.")
    amount = money_field(validators=[MinValueValidator(Decimal("0.000001"))])
    kind = models.CharField(max_length=4, choices=Kind.choices, default=Kind.FREE)
    pending = models.BooleanField(
        "reconcile later",
        default=False,
        help_text="Paid rules only: each period's grant waits as Requires Action until staff "
        "activate it with the payment's transaction id.",
    )
    condition_item = models.ForeignKey(
        "billing.ProductItem", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    condition_dimensions = models.JSONField(
        default=dict,
        blank=True,
        help_text='Dimension values the usage must match, e.g. {"region": "eu"}.',
    )
    priority = models.PositiveSmallIntegerField(default=100)
    expiry_count = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Each grant expires this long after its period starts. Empty: the default "
        "from Prepaid credit settings.",
    )
    expiry_unit = models.CharField(max_length=6, choices=PeriodUnit.choices, blank=True)
    active = models.BooleanField(default=True)
    starts_on = models.DateField(default=timezone.localdate)
    ends_on = models.DateField(
        null=True, blank=True, help_text="No grant for periods that start on or after this date."
    )
    # The next period to issue (its start date); moved on in the same transaction as
    # the grant, so the job never looks at a period twice.
    next_period_start = models.DateField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["wallet", "name"]
        indexes = [
            models.Index(
                fields=["next_period_start"], name="recurring_rule_due", condition=Q(active=True)
            )
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="recurring_amount_positive"),
            models.CheckConstraint(
                condition=(Q(expiry_count__isnull=True) & Q(expiry_unit=""))
                | (Q(expiry_count__gte=1) & ~Q(expiry_unit="")),
                name="recurring_expiry_count_and_unit_together",
            ),
            models.CheckConstraint(
                condition=Q(ends_on__isnull=True) | Q(ends_on__gt=models.F("starts_on")),
                name="recurring_ends_after_start",
            ),
            models.CheckConstraint(
                condition=Q(kind="paid") | Q(pending=False), name="recurring_only_paid_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {amount_text(self.amount)} {self.wallet.currency} per billing period"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if (self.expiry_count is None) != (not self.expiry_unit):
            errors["expiry_unit"] = "Give both the expiry period and its unit, or neither."
        if self.ends_on and self.ends_on <= self.starts_on:
            errors["ends_on"] = "The end date must be after the start date."
        if self.pending and self.kind != self.Kind.PAID:
            errors["pending"] = (
                "Only paid credit waits for a payment; free credit is usable at once."
            )
        dims = self.condition_dimensions
        if not isinstance(dims, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str | int) and not isinstance(v, bool)
            for k, v in dims.items()
        ):
            errors["condition_dimensions"] = (
                'Write a mapping of dimension names to values, e.g. {"region": "eu"}.'
            )
        if errors:
            raise ValidationError(errors)

    def expiry_for(self, effective_at: datetime) -> datetime:
        """When a grant of this rule that starts at `effective_at` expires."""
        if self.expiry_count:
            return add_period(effective_at, self.expiry_count, self.expiry_unit)
        return PrepaidCreditSettings.load().default_expiry(effective_at)
