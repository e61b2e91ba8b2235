"""The double-entry ledger: accounts, transactions and their entries (immutable:
the wallets_forbid_change trigger refuses UPDATE and DELETE). Money is numeric(24, 6)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.money import amount_text

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
        "Wallet",
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
