"""Usage events: what the usage API recorded, once per idempotency key."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.models.api_keys import ApiKey
from billing.models.catalogue import RATE_PLACES, Price, ProductItem
from billing.models.customers import Customer


class UsageEvent(models.Model):
    """One metered usage event sent through the API, and what it cost.

    `event_id` is the sender's idempotency key, unique per customer (not per API
    key: a key rotated mid-stream must not bill an event twice). The ledger
    transaction it booked is referenced by id (`transaction_id`), because this
    module sits below the wallets app. `response` is the API answer given when
    the event was booked; sending the same event again returns it."""

    class Status(models.TextChoices):
        BOOKED = "booked", "Booked"
        REFUSED = "refused", "Refused (insufficient funds)"
        REVERSED = "reversed", "Reversed"

    # No index of their own: the leading columns of the unique (customer, event_id)
    # and of usage_customer_time / usage_item_time serve them (migration 0008).
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="usage_events", db_index=False
    )
    product_item = models.ForeignKey(
        ProductItem, on_delete=models.PROTECT, related_name="usage_events", db_index=False
    )
    event_id = models.CharField(max_length=200, help_text="The sender's id for this event.")
    quantity = models.DecimalField(max_digits=24, decimal_places=RATE_PLACES)
    dimensions = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField(help_text="When the usage happened (business time).")
    price = models.ForeignKey(
        Price, on_delete=models.PROTECT, null=True, blank=True, related_name="usage_events"
    )
    unit_price = models.DecimalField(max_digits=18, decimal_places=RATE_PLACES)
    amount = models.DecimalField(
        max_digits=24,
        decimal_places=RATE_PLACES,
        help_text="quantity × unit price, rounded half up to 6 places.",
    )
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices)
    message = models.TextField(blank=True, help_text="Why it was refused.")
    wallet_id = models.PositiveBigIntegerField(null=True, blank=True)
    transaction_id = models.PositiveBigIntegerField(
        null=True, blank=True, unique=True, help_text="The ledger transaction that drew it down."
    )
    reversal_transaction_id = models.PositiveBigIntegerField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64, help_text="Hash of what was sent, to spot reuse.")
    response = models.JSONField(default=dict, blank=True, help_text="The answer when booked.")
    reversal_response = models.JSONField(default=dict, blank=True)
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, blank=True, related_name="usage_events"
    )
    actor = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversed_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "event_id"], name="billing_usage_event_id_unique_per_customer"
            ),
            # Partial: almost every event is never reversed (NULL), and NULLs never conflict.
            models.UniqueConstraint(
                fields=["reversal_transaction_id"],
                condition=Q(reversal_transaction_id__isnull=False),
                name="usage_reversal_once",
            ),
            models.CheckConstraint(
                condition=Q(quantity__gt=0), name="billing_usage_quantity_positive"
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=0) & Q(unit_price__gte=0),
                name="billing_usage_amount_not_negative",
            ),
            models.CheckConstraint(
                condition=~Q(status="reversed") | Q(reversed_at__isnull=False),
                name="billing_usage_reversed_has_date",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "timestamp"], name="usage_customer_time"),
            models.Index(fields=["product_item", "timestamp"], name="usage_item_time"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} · {self.quantity} {self.product_item.unit} ({self.status})"
