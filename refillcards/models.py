"""Refill cards (Splynx's Finance → Refill cards): series of prepaid cards sold by
a partner, each card a code that credits a customer's wallet once.

Codes are never stored in plain text (refillcards/codes.py): a card keeps the
HMAC of its code (lookup) and a Fernet token (export). Every write that matters
goes through refillcards/services.py."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.models import currency_choices
from refillcards import codes


class RefillCardSettings(models.Model):
    """The module switch (Splynx: Config → Integrations → Main modules → Finance).
    One row (id 1), edited in the admin. Per-partner portal switches are on the
    partner (`Partner.refill_cards_in_portal`)."""

    enabled = models.BooleanField(
        "refill cards enabled",
        default=True,
        help_text="Off: no series can be generated and no card can be redeemed anywhere "
        "(admin, portal, API). Existing cards keep their state.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "refill card settings"
        verbose_name_plural = "refill card settings"
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="refillcard_settings_single_row")
        ]

    def __str__(self) -> str:
        return f"Refill cards {'enabled' if self.enabled else 'disabled'}"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> RefillCardSettings:
        current, _ = cls.objects.get_or_create(pk=1)
        return current

    @classmethod
    def is_enabled(cls) -> bool:
        return cls.load().enabled


class CardSeries(models.Model):
    class Status(models.TextChoices):
        GENERATING = "generating", "Generating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    prefix = models.CharField(
        max_length=codes.MAX_PREFIX,
        blank=True,
        help_text="Printed before every code of the series (digits and letters except I, L, O, U).",
    )
    quantity = models.PositiveIntegerField()
    amount = models.DecimalField("price", max_digits=18, decimal_places=2)
    currency = models.CharField(max_length=3, choices=currency_choices)
    partner = models.ForeignKey(
        "billing.Partner", on_delete=models.PROTECT, related_name="card_series"
    )
    valid_until = models.DateTimeField()
    note = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.GENERATING)
    generated = models.PositiveIntegerField(default=0, help_text="Cards stored so far.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "refill card series"
        verbose_name_plural = "refill card series"
        permissions = [("view_full_codes", "Can see and export full refill card codes")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="cardseries_amount_positive"),
            models.CheckConstraint(
                condition=Q(quantity__gte=1) & Q(generated__lte=models.F("quantity")),
                name="cardseries_quantity",
            ),
        ]

    def __str__(self) -> str:
        return f"Series {self.pk} ({self.prefix or 'no prefix'}, {self.quantity} × {self.price})"

    @property
    def price(self) -> str:
        return f"{self.amount:.2f} {self.currency}"

    def serial(self, number: int) -> str:
        return f"{self.pk:04d}-{number:06d}"


class RefillCard(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        USED = "used", "Used"
        DISABLED = "disabled", "Disabled"
        EXPIRED = "expired", "Expired"

    series = models.ForeignKey(CardSeries, on_delete=models.PROTECT, related_name="cards")
    number = models.PositiveIntegerField(help_text="Position in the series.")
    serial = models.CharField(max_length=20, unique=True)
    code_hash = models.BinaryField(max_length=32, unique=True, editable=False)
    code_encrypted = models.TextField(editable=False)
    valid_until = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        "billing.Customer",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="refill_cards",
        verbose_name="used by customer",
    )
    redeemed_by = models.CharField(
        max_length=200, blank=True, help_text="Who redeemed it: portal, staff member, API key."
    )
    grant = models.OneToOneField(
        "wallets.CreditGrant",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="refill_card",
    )
    payment = models.OneToOneField(
        "invoices.Payment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="refill_card",
        help_text="The payment (method refill card) recorded when the card was redeemed.",
    )
    # The idempotency key of the redemption (the API's, or one derived by the portal
    # and admin): the same key again replays the first answer.
    redemption_key = models.CharField(max_length=300, null=True, blank=True, unique=True)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["series_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["series", "number"], name="refillcard_series_number"),
            models.CheckConstraint(
                condition=Q(status="used", used_at__isnull=False, used_by__isnull=False)
                | (~Q(status="used") & Q(used_at__isnull=True, used_by__isnull=True)),
                name="refillcard_used_has_who_and_when",
            ),
        ]
        indexes = [
            models.Index(
                fields=["valid_until", "id"],
                condition=Q(status="active"),
                name="refillcard_active_expiry",
            ),
        ]

    def __str__(self) -> str:
        return f"Card {self.serial}"

    @property
    def amount(self) -> Decimal:
        return self.series.amount

    @property
    def currency(self) -> str:
        return self.series.currency

    def masked_code(self) -> str:
        return codes.masked(self.series.prefix)

    def full_code(self) -> str:
        """Decrypts: only for staff with refillcards.view_full_codes, and exports."""
        return codes.display(codes.decrypt(self.code_encrypted), self.series.prefix)


class RedemptionAttempt(models.Model):
    """Every try to redeem a code, with what came of it (staff see why; the person
    who tried saw the same answer for every refusal)."""

    class Channel(models.TextChoices):
        PORTAL = "portal", "Portal"
        STAFF = "staff", "Staff (admin)"
        API = "api", "API"

    class Outcome(models.TextChoices):
        REDEEMED = "redeemed", "Redeemed"
        REPLAYED = "replayed", "Replayed (same request again)"
        MALFORMED = "malformed", "Refused: not a code (check character)"
        UNKNOWN = "unknown", "Refused: unknown code"
        USED = "used", "Refused: already used"
        EXPIRED = "expired", "Refused: expired"
        DISABLED = "disabled", "Refused: disabled"
        OTHER_PARTNER = "other_partner", "Refused: another partner's card"
        CURRENCY = "currency", "Refused: currency differs from the customer's"
        PORTAL_OFF = "portal_off", "Refused: not enabled for the partner's portal"
        MODULE_OFF = "module_off", "Refused: refill cards disabled"
        LOCKED = "locked", "Refused: locked out after failures"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    customer = models.ForeignKey(
        "billing.Customer", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    card = models.ForeignKey(
        RefillCard, on_delete=models.SET_NULL, null=True, blank=True, related_name="attempts"
    )
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["outcome", "created_at"])]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.get_outcome_display()} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class CardExport(models.Model):
    """Every export of a series' codes: who, when, which series, which format."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        PDF = "pdf", "PDF"

    # The log outlives a deleted series (the label says which it was).
    series = models.ForeignKey(
        CardSeries, on_delete=models.SET_NULL, null=True, related_name="exports"
    )
    series_label = models.CharField(max_length=200)
    format = models.CharField(max_length=3, choices=Format.choices)
    cards = models.PositiveIntegerField()
    exported_by = models.CharField(max_length=200)
    exported_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-exported_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_format_display()} of {self.series_label} by {self.exported_by}"
