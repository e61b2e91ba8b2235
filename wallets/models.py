"""The ledger: accounts, transactions, entries; wallets and credit grants.

Only `wallets.services` writes these rows. Entries are immutable (a PostgreSQL
trigger refuses UPDATE and DELETE); cached balances on wallets and grants are
kept in step with the entries inside the same database transaction, under the
wallet's row lock, and `manage.py check_ledger` proves they agree.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# numeric(24, 6): a usage rate of 0.0001 per call draws down exactly.
MONEY_DIGITS = 24
MONEY_PLACES = 6
ZERO = Decimal("0")


def money_field(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, **kwargs)


class Account(models.Model):
    """One side of a transfer. Grants and receivables belong to a wallet;
    system accounts (cash, revenue, breakage, ...) are one per code and currency."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Credit grant"
        RECEIVABLE = "receivable", "Receivable (customer debt)"
        SYSTEM = "system", "System"

    class Code(models.TextChoices):
        CASH = "cash", "Cash and bank"
        PSP_CLEARING = "psp_clearing", "Card payments clearing (Stripe)"
        PROMOTIONS = "promotions", "Promotions and corrections"
        USAGE_REVENUE = "usage_revenue", "Usage revenue"
        BREAKAGE = "breakage", "Breakage (expired credit)"
        REFILL_CARDS = "refill_cards", "Refill cards sold"
        ROUNDING = "rounding", "Rounding"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    code = models.CharField(max_length=20, choices=Code.choices, blank=True)
    currency = models.CharField(max_length=3)
    wallet = models.ForeignKey(
        "Wallet", on_delete=models.PROTECT, null=True, blank=True, related_name="accounts"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["code", "currency"],
                condition=Q(kind="system"),
                name="one_system_account_per_code_and_currency",
            ),
            models.CheckConstraint(
                condition=(Q(kind="system") & ~Q(code="") & Q(wallet__isnull=True))
                | (~Q(kind="system") & Q(code="")),
                name="system_accounts_have_a_code_and_no_wallet",
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.SYSTEM:
            return f"{self.get_code_display()} ({self.currency})"
        return f"{self.get_kind_display()} #{self.pk} ({self.currency})"


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
        read time, so the reversion is exact even if the beat job runs late."""
        at = at or timezone.now()
        valid = self.temporary_increase_valid_until
        if self.temporary_credit_increase and valid is not None and at < valid:
            return self.credit_limit + self.temporary_credit_increase
        return self.credit_limit

    def available_funds(self, at: datetime | None = None) -> Decimal:
        """What the customer can still spend on anything: unrestricted credit plus the
        credit limit, less what is owed. The one definition every caller uses."""
        return self.unrestricted_balance + self.effective_credit_limit(at) - self.debt

    def debt_headroom(self, at: datetime | None = None) -> Decimal:
        """How much more debt the limit allows right now."""
        return max(ZERO, self.effective_credit_limit(at) - self.debt)


class LedgerTransaction(models.Model):
    """One business operation; its entries balance by construction."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Credit granted"
        ACTIVATION = "activation", "Pending credit activated"
        USAGE = "usage", "Usage drawn down"
        EXPIRY = "expiry", "Credit expired"
        VOID = "void", "Credit voided"
        TRANSFER = "transfer", "Transfer between wallets"
        DEBT_PAYMENT = "debt_payment", "Payment on debt"
        DEBT_SETTLEMENT = "debt_settlement", "Debt settled from credit"
        REVERSAL = "reversal", "Reversal"
        ROUNDING = "rounding", "Rounding to the cent"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    wallet = models.ForeignKey(
        Wallet, on_delete=models.PROTECT, null=True, blank=True, related_name="transactions"
    )
    idempotency_key = models.CharField(max_length=255, unique=True)
    # Fingerprint of the request: the same key with other arguments is a conflict.
    request_hash = models.CharField(max_length=64)
    effective_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=200)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    memo = models.CharField(max_length=500, blank=True)
    reference = models.CharField(max_length=255, blank=True, help_text="e.g. a usage event id")
    amount = money_field(default=ZERO)
    currency = models.CharField(max_length=3)
    # The wallet right after this transaction, so statements need no recomputation.
    balance_after = money_field(null=True, blank=True)
    restricted_after = money_field(null=True, blank=True)
    debt_after = money_field(null=True, blank=True)
    reverses = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="reversed_by"
    )
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["wallet", "-id"], name="tx_wallet_recent"),
            models.Index(fields=["kind", "effective_at"], name="tx_kind_effective"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class Entry(models.Model):
    """A transfer of `amount` from `debit_account` to `credit_account`. Immutable."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    debit_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="debits")
    credit_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="credits")
    amount = money_field()
    currency = models.CharField(max_length=3)

    class Meta:
        verbose_name_plural = "entries"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="entry_amount_positive"),
            models.CheckConstraint(
                condition=~Q(debit_account=models.F("credit_account")), name="entry_accounts_differ"
            ),
        ]
        indexes = [
            models.Index(fields=["debit_account"], name="entry_debit"),
            models.Index(fields=["credit_account"], name="entry_credit"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}: {self.debit_account_id} → {self.credit_account_id}"


class CreditGrant(models.Model):
    """A prepaid "card" in the wallet (Amberflo's word), with its own account."""

    class Kind(models.TextChoices):
        PAID = "paid", "Paid"
        FREE = "free", "Free (promotion or correction)"
        REFILL_CARD = "refill_card", "Refill card"
        TOP_UP = "top_up", "Top-up invoice"
        TRANSFER = "transfer", "Transfer received"
        PAYMENT_ON_ACCOUNT = "payment_on_account", "Payment on account"

    class Status(models.TextChoices):
        PENDING = "pending", "Requires Action"
        ACTIVE = "active", "Active"
        EXHAUSTED = "exhausted", "Exhausted"
        EXPIRED = "expired", "Expired"
        VOIDED = "voided", "Voided"

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="grants")
    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="grant")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount = money_field()
    remaining = money_field(default=ZERO)
    currency = models.CharField(max_length=3)
    effective_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(
        default=100, help_text="Lower is drawn first (after more specific conditions)."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # Condition: usable only for this product item and/or these dimension values.
    condition_item = models.ForeignKey(
        "billing.ProductItem", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    condition_dimensions = models.JSONField(default=dict, blank=True)
    # Derived from the condition when the grant is made (conditions never change):
    # how specific it is (drawn first) and whether it is restricted at all.
    specificity = models.PositiveSmallIntegerField(default=0, editable=False)
    restricted = models.BooleanField(default=False, editable=False)
    # Where it came from: which account paid for it, and the business source.
    funding_code = models.CharField(
        max_length=20, choices=Account.Code.choices, default=Account.Code.CASH
    )
    source_type = models.CharField(
        max_length=40, blank=True, help_text="invoice, card, payment, ..."
    )
    source_id = models.CharField(max_length=64, blank=True)
    external_transaction_id = models.CharField(max_length=255, blank=True)
    issued_by = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="grant_amount_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=models.F("amount")),
                name="grant_remaining_within_amount",
            ),
            # Only a live grant holds credit: pending, expired and voided hold none.
            models.CheckConstraint(
                condition=Q(status__in=["active", "exhausted"]) | Q(remaining=0),
                name="grant_only_live_grants_hold_credit",
            ),
            models.CheckConstraint(
                condition=~Q(status="exhausted") | Q(remaining=0),
                name="grant_exhausted_means_empty",
            ),
        ]
        indexes = [
            models.Index(
                fields=["wallet", "priority"],
                name="grant_usable",
                condition=Q(status="active"),
            ),
            models.Index(
                fields=["expires_at"], name="grant_expiry_due", condition=Q(status="active")
            ),
            models.Index(fields=["status"], name="grant_pending", condition=Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.remaining}/{self.amount} {self.currency})"

    @property
    def used(self) -> Decimal:
        return self.amount - self.remaining if self.status in ("active", "exhausted") else ZERO

    def is_usable_for(self, item_id: int | None, dimensions: dict, at: datetime) -> bool:
        """Would a usage event for this item and dimensions draw from this grant now?"""
        return (
            self.status == self.Status.ACTIVE
            and self.remaining > 0
            and self.effective_at <= at
            and (self.expires_at is None or at < self.expires_at)
            and (self.condition_item_id is None or self.condition_item_id == item_id)
            and all(dimensions.get(k) == v for k, v in self.condition_dimensions.items())
        )


class GrantConsumption(models.Model):
    """Which grants a transaction drew from and how much (a lot). Positive = drawn,
    negative = returned by a reversal; a reversal reads these to return credit to
    the very grants it came from, with their original expiry and conditions."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="lots"
    )
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="lots")
    amount = money_field()

    class Meta:
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="lot_amount_not_zero")]

    def __str__(self) -> str:
        return f"{self.amount} from grant {self.grant_id}"


class CreditLimitChange(models.Model):
    """History of every credit-limit change: who, when, old, new, why."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="limit_changes")
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
        return f"{self.old_limit} → {self.new_limit} ({self.changed_at:%Y-%m-%d})"
