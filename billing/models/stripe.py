"""Stripe records: payment methods, charges and webhook events, and the plain
values Stripe answers with (which the gateway returns and the records follow)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from billing.errors import StripeMismatch
from billing.models.customers import Customer
from billing.money import to_stripe_amount

# --- what Stripe says: plain values the gateway returns and our records follow ---


@dataclass(frozen=True)
class PaymentMethodDetails:
    id: str
    customer_id: str
    brand: str
    last4: str
    exp_month: int | None
    exp_year: int | None

    @classmethod
    def from_stripe(cls, obj: Mapping[str, Any]) -> PaymentMethodDetails:
        card = obj.get("card") or {}
        return cls(
            id=obj["id"],
            customer_id=stripe_id_of(obj.get("customer")),
            brand=str(card.get("brand") or obj.get("type") or ""),
            last4=str(card.get("last4") or ""),
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
        )


@dataclass(frozen=True)
class PaymentIntentState:
    """What Stripe says about one PaymentIntent (from an API answer or a webhook)."""

    id: str
    status: str
    amount: int
    currency: str
    customer_id: str = ""
    payment_method_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    failure_code: str = ""
    failure_reason: str = ""
    cancellation_reason: str = ""
    latest_charge_id: str = ""
    amount_refunded: int | None = None  # known only when latest_charge is expanded

    @classmethod
    def from_stripe(cls, obj: Mapping[str, Any]) -> PaymentIntentState:
        error = obj.get("last_payment_error") or {}
        latest_charge = obj.get("latest_charge")
        refunded = latest_charge.get("amount_refunded") if isinstance(latest_charge, dict) else None
        return cls(
            id=obj["id"],
            status=obj["status"],
            amount=int(obj["amount"]),
            currency=str(obj["currency"]).upper(),
            customer_id=stripe_id_of(obj.get("customer")),
            payment_method_id=stripe_id_of(obj.get("payment_method")),
            metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
            failure_code=str(error.get("decline_code") or error.get("code") or ""),
            failure_reason=str(error.get("message") or ""),
            cancellation_reason=str(obj.get("cancellation_reason") or ""),
            latest_charge_id=stripe_id_of(latest_charge),
            amount_refunded=int(refunded) if refunded is not None else None,
        )


@dataclass(frozen=True)
class RefundResult:
    id: str
    status: str
    amount: int


def stripe_id_of(value: Any) -> str:
    """Stripe expands some references into objects; we want the id either way."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(value["id"])


class StripePaymentMethod(models.Model):
    """Our copy of a card saved at Stripe for a customer (Stripe stays the source)."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="stripe_payment_methods"
    )
    stripe_payment_method_id = models.CharField(
        "Stripe payment method", max_length=255, unique=True
    )
    brand = models.CharField(max_length=50, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer", "-is_default", "created_at"]
        verbose_name = "Stripe payment method"
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(is_default=True),
                name="billing_one_default_stripe_payment_method",
            )
        ]

    def __str__(self) -> str:
        expiry = f" exp {self.exp_month:02d}/{self.exp_year}" if self.exp_month else ""
        return f"{self.brand or 'card'} •••• {self.last4}{expiry}"

    @classmethod
    def follow(
        cls, *, customer: Customer, details: PaymentMethodDetails, is_default: bool | None = None
    ) -> StripePaymentMethod:
        """Our copy of one card as Stripe describes it (created or updated);
        ``is_default=None`` leaves the default flag as it is."""
        defaults: dict[str, Any] = {
            "customer": customer,
            "brand": details.brand,
            "last4": details.last4,
            "exp_month": details.exp_month,
            "exp_year": details.exp_year,
        }
        if is_default is not None:
            defaults["is_default"] = is_default
        method, _ = cls.objects.update_or_create(
            stripe_payment_method_id=details.id, defaults=defaults
        )
        return method


class StripeChargeQuerySet(models.QuerySet["StripeCharge"]):
    def effects_due(self) -> StripeChargeQuerySet:
        """Settled at Stripe, but the money effect (grant activated/voided) not yet done."""
        return self.exclude(status=StripeCharge.Status.PENDING).filter(
            effects_applied_at__isnull=True
        )


class StripeCharge(models.Model):
    """Our record of one off-session card charge, written before Stripe is called.

    ``pending`` until Stripe gives a definite answer; a timeout or a 5xx leaves it
    pending with ``last_error``, and a retry reuses the idempotency key
    ``charge-<id>``, so Stripe never charges twice for one record.
    """

    class Purpose(models.TextChoices):
        GRANT = "grant", "Paid credit grant ('Now')"
        TOP_UP = "top_up", "Portal top-up"
        AUTO_TOP_UP = "auto_top_up", "Automatic top-up"
        TOP_UP_INVOICE = "top_up_invoice", "Top-up invoice (portal)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"
        PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
        CANCELED = "canceled", "Canceled"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="stripe_charges")
    amount = models.DecimalField(max_digits=18, decimal_places=2)
    currency = models.CharField(max_length=3)
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    grant_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The wallets credit grant this charge pays for."
    )
    invoice_id = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="The top-up invoice this charge pays (an invoices.Invoice id).",
    )
    description = models.CharField(max_length=255, blank=True)
    stripe_customer_id = models.CharField(max_length=255)
    payment_method_id = models.CharField("Stripe payment method", max_length=255)
    payment_intent_id = models.CharField("Stripe PaymentIntent", max_length=255, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_reason = models.TextField(blank=True, help_text="Why Stripe did not take the money.")
    last_error = models.TextField(
        blank=True, help_text="The last attempt got no definite answer (timeout, 5xx): retry."
    )
    attempts = models.PositiveIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    refunded_amount = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0"))
    effects_applied_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the effect of the current status (grant activated or voided) was done.",
    )
    effects_error = models.TextField(blank=True)
    effects_attempts = models.PositiveIntegerField(default=0)
    initiated_by = models.CharField(max_length=255, help_text="Who asked for the charge.")
    refunded_by = models.CharField(
        max_length=255, blank=True, help_text="Who asked for the last refund."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = StripeChargeQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "Stripe charge"
        indexes = [models.Index(fields=["status", "created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="billing_stripecharge_amount_gt_0"
            ),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0) & Q(refunded_amount__lte=F("amount")),
                name="billing_stripecharge_refunded_within_amount",
            ),
            models.CheckConstraint(
                condition=~Q(purpose="grant") | Q(grant_id__isnull=False),
                name="billing_stripecharge_grant_purpose_has_grant",
            ),
            models.CheckConstraint(
                condition=~Q(purpose="top_up_invoice") | Q(invoice_id__isnull=False),
                name="billing_stripecharge_invoice_purpose_has_invoice",
            ),
            # One card payment of an invoice in flight at a time: a double click
            # or two tabs cannot charge the card twice for the same invoice.
            models.UniqueConstraint(
                fields=["invoice_id"],
                condition=Q(status="pending", invoice_id__isnull=False),
                name="billing_stripecharge_one_pending_per_invoice",
            ),
            models.UniqueConstraint(
                fields=["payment_intent_id"],
                condition=~Q(payment_intent_id=""),
                name="billing_stripecharge_unique_payment_intent",
            ),
        ]

    def __str__(self) -> str:
        return f"Stripe charge #{self.pk} {self.amount} {self.currency} ({self.status})"

    @property
    def idempotency_key(self) -> str:
        return f"charge-{self.pk}"

    @property
    def is_settled(self) -> bool:
        return self.status != self.Status.PENDING

    @property
    def refundable_amount(self) -> Decimal:
        if self.status not in (self.Status.SUCCEEDED, self.Status.PARTIALLY_REFUNDED):
            return Decimal("0")
        return self.amount - self.refunded_amount

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.finished_at = self.finished_at or timezone.now()
            self._effects_due()

    def _effects_due(self) -> None:
        """The new state has its own money effect to apply (see ``apply_charge_effects``)."""
        self.effects_applied_at = None
        self.effects_error = ""
        self.effects_attempts = 0

    def record_intent(self, intent: PaymentIntentState) -> bool:
        """Follow what Stripe says about our PaymentIntent; True when our status changed.

        Stripe is the truth about money: a succeeded intent wins over an earlier
        decline; a charge that succeeded is never turned back into a failure.
        """
        if self.payment_intent_id and self.payment_intent_id != intent.id:
            raise StripeMismatch(
                f"Stripe charge #{self.pk} belongs to {self.payment_intent_id}, not {intent.id}."
            )
        if (intent.amount, intent.currency.upper()) != (
            to_stripe_amount(self.amount, self.currency),
            self.currency,
        ):
            raise StripeMismatch(
                f"{intent.id} is for {intent.amount} {intent.currency} (minor units) but "
                f"Stripe charge #{self.pk} is for {self.amount} {self.currency}; not applied."
            )
        self.payment_intent_id = intent.id
        before = self.status
        if intent.status == "succeeded":
            if self.status in (self.Status.PENDING, self.Status.FAILED, self.Status.CANCELED):
                self._set_status(self.Status.SUCCEEDED)
                self.failure_code = self.failure_reason = ""
        elif intent.status == "canceled":
            if self.status == self.Status.PENDING:
                self._set_status(self.Status.CANCELED)
                self.failure_reason = (
                    f"Canceled at Stripe ({intent.cancellation_reason or 'no reason given'})."
                )
        elif intent.status in ("requires_payment_method", "requires_action"):
            # We confirm at creation, so either state means this attempt did not pay.
            if self.status == self.Status.PENDING:
                self._set_status(self.Status.FAILED)
                self.failure_code = intent.failure_code or intent.status
                self.failure_reason = intent.failure_reason or (
                    "The bank asks the customer to authenticate this payment; an "
                    "off-session charge cannot do that. Ask the customer to pay in the portal."
                    if intent.status == "requires_action"
                    else "Stripe did not take the payment."
                )
        # processing / requires_capture / requires_confirmation: still pending.
        if self.status != self.Status.PENDING:
            self.last_error = ""
        return self.status != before

    def record_decline(self, *, code: str, reason: str, payment_intent_id: str = "") -> bool:
        """Stripe declined the card or refused the request: nothing was charged."""
        if self.status != self.Status.PENDING:
            return False
        self.payment_intent_id = self.payment_intent_id or payment_intent_id
        self._set_status(self.Status.FAILED)
        self.failure_code = code
        self.failure_reason = reason
        self.last_error = ""
        return True

    def record_refunded_total(self, refunded: Decimal) -> bool:
        """Stripe's running total of refunds for this payment; it only grows."""
        if refunded <= self.refunded_amount:
            return False
        if refunded > self.amount:
            raise StripeMismatch(
                f"Stripe reports {refunded} {self.currency} refunded on charge #{self.pk} "
                f"of {self.amount} {self.currency}; not applied."
            )
        self.refunded_amount = refunded
        self._set_status(
            self.Status.REFUNDED if refunded == self.amount else self.Status.PARTIALLY_REFUNDED
        )
        # A new refund total is a new effect even when the status stays partially refunded.
        self._effects_due()
        return True


class StripeEvent(models.Model):
    """Webhook inbox: every verified Stripe event, stored once by its id."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received (to process)"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed"
        IGNORED = "ignored", "Ignored"

    event_id = models.CharField("Stripe event", max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    object_id = models.CharField(
        max_length=255, blank=True, db_index=True, help_text="The id of data.object."
    )
    livemode = models.BooleanField(default=False)
    stripe_created_at = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "Stripe event"
        indexes = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"

    @property
    def data_object(self) -> dict:
        return (self.payload.get("data") or {}).get("object") or {}
