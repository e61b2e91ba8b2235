"""Credit grants (a prepaid "card" with its own account) and the lots that record
which grants a transaction drew from."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.money import amount_text
from wallets.models.ledger import ZERO, Account, LedgerTransaction, money_field


class CreditGrantQuerySet(models.QuerySet):
    def in_force(self, at: datetime) -> CreditGrantQuerySet:
        """Active grants whose credit counts at `at`: effective, not yet expired.
        Twin of SQL `wallets_grant_in_force` (wallets/sql/wallets_grant_in_force.sql;
        tests/wallets/test_rules_differential.py pins them)."""
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

    wallet = models.ForeignKey("Wallet", on_delete=models.PROTECT, related_name="grants")
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

    def is_in_force(self, at: datetime) -> bool:
        """Effective and not yet expired at `at` (time only; the status is checked
        beside it): `CreditGrantQuerySet.in_force` for one grant in hand. SQL home:
        `wallets_grant_in_force` (wallets/sql/, pinned by test_rules_differential)."""
        return self.effective_at <= at and (self.expires_at is None or at < self.expires_at)


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
