"""The wallet: one per (customer, currency); its balances are caches of the ledger."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from wallets.models.ledger import ZERO, Account, money_field


class Wallet(models.Model):
    """One per (customer, currency). Balances are caches of the ledger."""

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="wallets"
    )
    currency = models.CharField(max_length=3)
    receivable_account = models.OneToOneField(
        Account, on_delete=models.PROTECT, related_name="receivable_of"
    )
    # Σ remaining of active grants, and the part of it restricted by a condition.
    credit_balance = money_field(default=ZERO)
    restricted_balance = money_field(default=ZERO)
    # What the customer owes (the receivable account's balance).
    debt = money_field(default=ZERO)
    # Permanent credit limit; 0 for prepaid unless staff set one.
    credit_limit = money_field(default=ZERO)
    temporary_credit_increase = money_field(default=ZERO)
    temporary_increase_valid_until = models.DateTimeField(null=True, blank=True)
    # Copies of the customer's warning thresholds (billing.thresholds), read by the
    # database trigger that queues a warning when a change of the balances crosses
    # one (wallets/sql/wallets_balance_warnings.sql). NULL: no warnings, and the trigger does not even run.
    low_funds_thresholds = ArrayField(money_field(), null=True, blank=True, editable=False)
    credit_limit_warnings = ArrayField(
        models.DecimalField(max_digits=5, decimal_places=2),
        null=True,
        blank=True,
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "currency"], name="one_wallet_per_currency"
            ),
            models.CheckConstraint(
                condition=Q(credit_balance__gte=0), name="wallet_balance_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(restricted_balance__gte=0)
                & Q(restricted_balance__lte=models.F("credit_balance")),
                name="wallet_restricted_within_balance",
            ),
            models.CheckConstraint(condition=Q(debt__gte=0), name="wallet_debt_not_negative"),
            models.CheckConstraint(
                condition=Q(credit_limit__gte=0), name="wallet_limit_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(temporary_credit_increase__gte=0),
                name="wallet_temp_increase_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer} · {self.currency}"

    @property
    def unrestricted_balance(self) -> Decimal:
        return self.credit_balance - self.restricted_balance

    def effective_credit_limit(self, at: datetime | None = None) -> Decimal:
        """Permanent limit plus the temporary increase while it is valid. Computed at
        read time, so the reversion is exact even if the beat job runs late. Twin of
        SQL `wallets_effective_credit_limit` (wallets/sql/; a differential test in
        tests/wallets/test_time_rules.py pins them). The limit that allows debt is always the one in force *now*."""
        at = at or timezone.now()
        valid = self.temporary_increase_valid_until
        if self.temporary_credit_increase > 0 and valid is not None and at < valid:
            return self.credit_limit + self.temporary_credit_increase
        return self.credit_limit

    def spendable_credit(self, at: datetime | None = None) -> Decimal:
        """Unrestricted credit the customer can spend at `at`: the remaining of active
        grants in force then (effective, not yet expired). Credit that is not yet
        effective, or expired but not yet swept, is in `credit_balance` (the cache of
        every live grant) but not here."""
        at = at or timezone.now()
        if self.pk is None:  # a wallet not opened yet holds no grants
            return ZERO
        total = (
            self.grants.in_force(at)
            .filter(restricted=False)
            .aggregate(total=models.Sum("remaining"))["total"]
        )
        return total or ZERO

    def available_funds(self, at: datetime | None = None) -> Decimal:
        """What the customer can still spend on anything at `at` (default now):
        spendable credit plus the credit limit in force then, less what is owed.
        The one definition every reader and writer uses; its SQL twin is
        `wallets_available_funds(wallet, at)` (wallets/sql/), which the draw-down,
        the usage answers and the warning trigger use, pinned by a differential test."""
        at = at or timezone.now()
        return self.spendable_credit(at) + self.effective_credit_limit(at) - self.debt
