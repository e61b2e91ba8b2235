"""The global "maximum possible increase" for temporary credit-limit increases
(PortaBilling's prompt on the Balance & Credits tab). A customer class may set its
own; this one row (id 1, edited in the admin) applies to everyone else.

Re-exported by `wallets.models`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class CreditLimitSettings(models.Model):
    """Staff-editable maximum temporary credit-limit increase, for customers whose
    class does not set one. One row (id 1)."""

    max_temporary_increase_amount = models.DecimalField(
        "maximum temporary credit-limit increase (amount)",
        max_digits=18,
        decimal_places=2,
        default=Decimal("1000.00"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1e15"))],
        help_text="In the customer's currency. 0: no temporary increases.",
    )
    max_temporary_increase_days = models.PositiveIntegerField(
        "maximum temporary credit-limit duration (days)",
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text="Valid Until may be at most this many days from now.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "credit limit settings"
        verbose_name_plural = "credit limit settings"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="credit_limit_settings_single_row"),
            models.CheckConstraint(
                condition=Q(max_temporary_increase_amount__gte=0)
                & Q(max_temporary_increase_days__gte=1),
                name="credit_limit_settings_sane",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"Credit limit settings (maximum temporary increase {self.max_temporary_increase_amount}"
            f" for {self.max_temporary_increase_days} days)"
        )

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> CreditLimitSettings:
        current, _ = cls.objects.get_or_create(pk=1)
        return current

    @property
    def max_duration(self) -> timedelta:
        return timedelta(days=self.max_temporary_increase_days)
