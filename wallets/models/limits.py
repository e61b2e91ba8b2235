"""The history of credit-limit changes."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from billing.money import amount_text
from wallets.models.ledger import ZERO, money_field


class CreditLimitChange(models.Model):
    """History of every credit-limit change: who, when, old, new, why."""

    wallet = models.ForeignKey("Wallet", on_delete=models.PROTECT, related_name="limit_changes")
    changed_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=200)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    old_limit = money_field()
    new_limit = money_field()
    old_temporary_increase = money_field(default=ZERO)
    new_temporary_increase = money_field(default=ZERO)
    valid_until = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{amount_text(self.old_limit)} → {amount_text(self.new_limit)} ({self.changed_at:%Y-%m-%d})"
