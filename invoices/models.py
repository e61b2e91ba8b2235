"""Invoices: gapless numbering per series, lines, and the usage they bill.

Money on a document is in the currency's minor unit (2 places here); the exact
6-place figures stay in the ledger. A usage invoice rounds once, and the rounding
difference is booked by `wallets.services.round_debt` so the ledger still
balances to the cent billed."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

CENT = Decimal("0.01")


def doc_money(**kwargs) -> models.DecimalField:
    return models.DecimalField(max_digits=18, decimal_places=2, **kwargs)


class InvoiceSeries(models.Model):
    """Numbers are taken under this row's lock when an invoice is issued: no gaps,
    no duplicates, whatever the concurrency."""

    code = models.SlugField(max_length=20, unique=True)
    prefix = models.CharField(max_length=20)
    next_number = models.PositiveIntegerField(default=1)

    class Meta:
        verbose_name_plural = "invoice series"

    def __str__(self) -> str:
        return f"{self.code} ({self.prefix}…, next {self.next_number})"


class Invoice(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        TOP_UP = "top_up", "Top-up"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ISSUED = "issued", "Issued"
        # top-up invoices (B3Networks): draft → sent → partially paid → paid, or void
        SENT = "sent", "Sent (awaiting payment)"
        PARTIALLY_PAID = "partially_paid", "Partially paid"
        PAID = "paid", "Paid and provisioned"
        VOID = "void", "Void"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=200, blank=True, help_text="A top-up invoice's name.")
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="invoices"
    )
    currency = models.CharField(max_length=3)
    series = models.ForeignKey(InvoiceSeries, on_delete=models.PROTECT, related_name="invoices")
    number = models.PositiveIntegerField(null=True, blank=True)
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(
        null=True, blank=True, help_text="Exclusive: the next period's first day."
    )
    subtotal = doc_money(default=Decimal("0"))
    credits_applied = doc_money(default=Decimal("0"))
    amount_due = doc_money(default=Decimal("0"))
    # Σ live payment allocations (a cache, under the invoice row lock; check_ledger
    # recomputes it); open amount = amount_due − amount_paid.
    amount_paid = doc_money(default=Decimal("0"))
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    emailed_at = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=500, blank=True)
    usage_events = models.ManyToManyField("billing.UsageEvent", related_name="invoices", blank=True)
    rounding_transaction_id = models.PositiveBigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["series", "number"], name="invoice_number_unique_in_series"
            ),
            # one live usage invoice per customer, currency and period
            models.UniqueConstraint(
                fields=["customer", "currency", "period_start"],
                condition=Q(kind="usage") & ~Q(status="void"),
                name="one_live_usage_invoice_per_period",
            ),
            models.CheckConstraint(
                condition=Q(amount_due__gte=0) & Q(credits_applied__gte=0),
                name="invoice_amounts_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(subtotal=models.F("credits_applied") + models.F("amount_due")),
                name="invoice_subtotal_is_credits_plus_due",
            ),
            models.CheckConstraint(
                condition=Q(amount_paid__gte=0) & Q(amount_paid__lte=models.F("amount_due")),
                name="invoice_paid_within_amount_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_number} · {self.customer}"

    @property
    def period_last_day(self) -> date | None:
        return self.period_end - timedelta(days=1) if self.period_end else None

    @property
    def open_amount(self) -> Decimal:
        return self.amount_due - self.amount_paid

    @property
    def display_number(self) -> str:
        if self.number is None:
            return f"draft #{self.pk}"
        return f"{self.series.prefix}{self.number:06d}"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    product_item = models.ForeignKey(
        "billing.ProductItem", on_delete=models.PROTECT, null=True, blank=True
    )
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=24, decimal_places=6)
    unit_price = models.DecimalField(max_digits=24, decimal_places=6)
    amount = doc_money()
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.description


class PaymentQuerySet(models.QuerySet["Payment"]):
    def unallocated(self) -> PaymentQuerySet:
        """Recorded payments with something left to allocate."""
        return self.filter(status=Payment.Status.RECORDED, allocated__lt=models.F("amount"))


class Payment(models.Model):
    """Money received from a customer (PortaBilling's payment; B3's Finance app).

    Its money is on the customer's balance from the moment it is recorded: the part
    not allocated to an invoice sits in `credit_grant` (a payment-on-account grant,
    or the refill card's grant), and each allocation to a top-up invoice turns its
    part into that invoice's top-up grant. `allocated` caches Σ live allocations;
    allocated + unallocated = amount, always (CHECK here, recomputed by check_ledger)."""

    class Method(models.TextChoices):
        CASH = "cash", "Cash"
        BANK_TRANSFER = "bank_transfer", "Bank transfer"
        CARD = "card", "Card"
        DIRECT_DEBIT = "direct_debit", "Direct debit"
        REFILL_CARD = "refill_card", "Refill card"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        RECORDED = "recorded", "Recorded"
        REMOVED = "removed", "Removed"

    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="payments"
    )
    method = models.CharField(max_length=20, choices=Method.choices)
    amount = doc_money()
    currency = models.CharField(max_length=3)
    received_on = models.DateField(help_text="The day the money was received.")
    reference = models.CharField(
        max_length=200, blank=True, help_text="Bank reference, cheque number, card serial…"
    )
    comment = models.CharField(max_length=1000, blank=True)
    allocated = doc_money(default=Decimal("0"))
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECORDED)
    credit_grant = models.ForeignKey(
        "wallets.CreditGrant",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The grant holding the unallocated part on the customer's balance.",
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.CharField(max_length=200, blank=True)

    objects = PaymentQuerySet.as_manager()

    class Meta:
        ordering = ["-received_on", "-id"]
        indexes = [models.Index(fields=["customer", "currency", "received_on"])]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(allocated__gte=0) & Q(allocated__lte=models.F("amount")),
                name="payment_allocated_within_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"Payment #{self.pk} · {self.amount} {self.currency} · {self.get_method_display()}"

    @property
    def unallocated(self) -> Decimal:
        return self.amount - self.allocated if self.status == self.Status.RECORDED else Decimal(0)


class PaymentAllocation(models.Model):
    """Part of a payment applied to a sent invoice. An allocation to a top-up
    invoice provisions a top-up grant (`grant`) for the credit it brought. Removed
    allocations stay, with `removed_at`, for the audit trail."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="allocations")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="allocations")
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.PROTECT, related_name="payment_allocations"
    )
    amount = doc_money()
    grant = models.ForeignKey(
        "wallets.CreditGrant", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="allocation_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} of payment #{self.payment_id} to {self.invoice.display_number}"

    @property
    def live(self) -> bool:
        return self.removed_at is None
