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
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.money import amount_text
from billing.periods import PeriodUnit, add_period

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
    # Copies of the customer's warning thresholds (billing.thresholds), read by the
    # database trigger that queues a warning when a change of the balances crosses
    # one (migration 0006). NULL: no warnings, and the trigger does not even run.
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
        SQL `wallets_effective_credit_limit` (wallets 0010; a differential test pins
        them). The limit that allows debt is always the one in force *now*."""
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
        total = (
            CreditGrant.objects.in_force(at)
            .filter(wallet_id=self.pk, restricted=False)
            .aggregate(total=models.Sum("remaining"))["total"]
        )
        return total or ZERO

    def available_funds(self, at: datetime | None = None) -> Decimal:
        """What the customer can still spend on anything at `at` (default now):
        spendable credit plus the credit limit in force then, less what is owed.
        The one definition every reader and writer uses; its SQL twin is
        `wallets_available_funds(wallet, at)` (wallets 0010), which the draw-down,
        the usage answers and the warning trigger use, pinned by a differential test."""
        at = at or timezone.now()
        return self.spendable_credit(at) + self.effective_credit_limit(at) - self.debt


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
        REFUND = "refund", "Payment for credit refunded"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Indexed by `tx_wallet_recent` (wallet, -id), which also serves "wallet = X".
    wallet = models.ForeignKey(
        Wallet,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="transactions",
        db_index=False,
    )
    # Looked up by equality only (never LIKE): migration 0008 drops the
    # varchar_pattern_ops twin Django creates next to the unique index.
    idempotency_key = models.CharField(max_length=255, unique=True)
    # Fingerprint of the request: the same key with other arguments is a conflict.
    request_hash = models.CharField(max_length=64)
    effective_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=200)
    # Indexed only where set (`tx_actor_user`): jobs, API keys and the system book
    # most transactions and leave it NULL.
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    memo = models.CharField(max_length=500, blank=True)
    reference = models.CharField(max_length=255, blank=True, help_text="e.g. a usage event id")
    amount = money_field(default=ZERO)
    currency = models.CharField(max_length=3)
    # The wallet right after this transaction, so statements need no recomputation.
    balance_after = money_field(null=True, blank=True)
    restricted_after = money_field(null=True, blank=True)
    debt_after = money_field(null=True, blank=True)
    # A transaction is reversed at most once (`tx_reverses_once`, a unique index
    # over the few reversals only: every other transaction has NULL here).
    reverses = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="reversed_by",
        db_index=False,
    )
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        # Every index here costs each booking (one expiry transaction per grant,
        # one usage transaction per event): keep only what a real query uses.
        indexes = [
            # statements, portal, API, admin filtered by wallet; FK lookups
            models.Index(fields=["wallet", "-id"], name="tx_wallet_recent"),
            # admin: kind filter and the effective_at date hierarchy
            models.Index(fields=["kind", "effective_at"], name="tx_kind_effective"),
            # deleting a user sets actor_user NULL
            models.Index(
                fields=["actor_user"], name="tx_actor_user", condition=Q(actor_user__isnull=False)
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["reverses"], name="tx_reverses_once", condition=Q(reverses__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class Entry(models.Model):
    """A transfer of `amount` from `debit_account` to `credit_account`. Immutable."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    # Not indexed: no query looks entries up by account (check_ledger aggregates
    # whole tables; statements go through transactions), and each index would
    # cost every booking. Add one with the first query that needs it.
    debit_account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="debits", db_index=False
    )
    credit_account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="credits", db_index=False
    )
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

    def __str__(self) -> str:
        return f"{amount_text(self.amount)} {self.currency}: {self.debit_account_id} → {self.credit_account_id}"


class CreditGrantQuerySet(models.QuerySet):
    def in_force(self, at: datetime) -> CreditGrantQuerySet:
        """Active grants whose credit counts at `at`: effective, not yet expired.
        Twin of SQL `wallets_grant_in_force` (wallets 0010)."""
        return self.filter(status=CreditGrant.Status.ACTIVE, effective_at__lte=at).exclude(
            expires_at__lte=at
        )


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

    objects = CreditGrantQuerySet.as_manager()

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
            # The expiry sweep walks due grants in (expires_at, id) order.
            models.Index(
                fields=["expires_at", "id"],
                name="grant_expiry_sweep",
                condition=Q(status__in=["active", "exhausted", "pending"]),
            ),
            models.Index(fields=["status"], name="grant_pending", condition=Q(status="pending")),
        ]

    def __str__(self) -> str:
        return (
            f"{self.name} ({amount_text(self.remaining)}/{amount_text(self.amount)} "
            f"{self.currency})"
        )

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
        return f"{amount_text(self.amount)} from grant {self.grant_id}"


class CreditLimitChange(models.Model):
    """History of every credit-limit change: who, when, old, new, why."""

    class Kind(models.TextChoices):
        PERMANENT = "permanent", "Permanent limit changed"
        TEMPORARY = "temporary", "Temporary increase granted"
        ENDED = "ended", "Temporary increase ended early"
        REVERTED = "reverted", "Temporary increase reverted at Valid Until"
        CLASS_MAXIMUM = "class_maximum", "Maximum possible increase changed"

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="limit_changes")
    kind = models.CharField(max_length=15, choices=Kind.choices, default=Kind.PERMANENT)
    # Set by the limit services (wallets.limits): the same key never records twice.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    request_hash = models.CharField(max_length=64, blank=True)
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


# --- scheduled jobs: prepaid credit settings, recurring grants, notifications -------


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

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="recurring_rules")
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


class Notification(models.Model):
    """The outbox: a message to a customer, queued in the same transaction as whatever
    caused it and sent by the `send_notifications` job. `dedupe_key` makes queueing
    idempotent (e.g. `threshold:<wallet>:<threshold>:<crossing>`)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    customer = models.ForeignKey(
        "billing.Customer",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="notifications",
    )
    kind = models.CharField(max_length=50, help_text="e.g. low_balance, credit_expiring")
    recipient = models.EmailField(blank=True, help_text="Empty: the customer's email address.")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    dedupe_key = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=6, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="notification_due",
                condition=Q(status="queued"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}"


from wallets.limit_models import CreditLimitSettings  # noqa: E402, F401 (wallets.limits)
