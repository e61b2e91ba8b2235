"""Reference data: partners, customer classes, customers and their portal users.

This module is the bottom layer: it imports no other app of ours.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connection, models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from billing import thresholds
from billing.errors import StripeMismatch
from billing.money import decimal_text

if TYPE_CHECKING:
    from billing.stripe_gateway import PaymentIntentState


def currency_choices() -> list[tuple[str, str]]:
    return [(code, code) for code in settings.CURRENCIES]


class Partner(models.Model):
    """A reseller or brand; refill-card series and portal settings hang off it."""

    name = models.CharField(max_length=200, unique=True)
    refill_cards_in_portal = models.BooleanField(
        "refill cards enabled in portal",
        default=True,
        help_text="Customers of this partner may redeem refill cards in the portal.",
    )
    top_up_in_portal = models.BooleanField(
        "card top-up enabled in portal",
        default=True,
        help_text="Customers of this partner may top up by card (Stripe) in the portal.",
    )
    transfers_in_portal = models.BooleanField(
        "transfers enabled in portal",
        default=True,
        help_text="Show the balance transfer page in the portal (transfer rules still apply).",
    )
    support_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CustomerClass(models.Model):
    """A group of customers sharing policy (PortaBilling's customer class)."""

    name = models.CharField(max_length=200, unique=True)
    transfers_allowed = models.BooleanField(
        "subscriber-to-subscriber transfers allowed",
        default=False,
        help_text="Customers whose transfer policy is 'As defined by the customer class' follow this.",
    )
    max_temporary_increase_amount = models.DecimalField(
        "maximum temporary credit-limit increase (amount)",
        max_digits=18,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Empty: the global default applies.",
    )
    max_temporary_increase_days = models.PositiveIntegerField(
        "maximum temporary credit-limit duration (days)",
        null=True,
        blank=True,
        help_text="Empty: the global default applies.",
    )
    low_funds_thresholds = models.CharField(
        "default low funds warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_amounts],
        help_text="Comma-separated amounts, e.g. 50, 20, 5: used for the class's customers "
        "whose own list is empty.",
    )
    credit_limit_warnings = models.CharField(
        "default credit limit warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_percents],
        help_text="Comma-separated percentages, e.g. 80%, 90%, 100%: used for the class's "
        "customers whose own list is empty.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "customer classes"

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # The wallets get the new defaults from an explicit service call by whoever
        # changed the class (`wallets.services.copy_class_warning_thresholds`).
        thresholds.normalise(self)
        super().save(*args, **kwargs)

    @property
    def max_temporary_increase_duration(self) -> timedelta | None:
        days = self.max_temporary_increase_days
        return timedelta(days=days) if days is not None else None


ACCOUNT_NUMBER_SEQUENCE = "billing_customer_account_number_seq"


def next_account_number() -> str:
    """Account numbers come from a PostgreSQL sequence: unique without a retry loop."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(%s)", [ACCOUNT_NUMBER_SEQUENCE])
        (value,) = cursor.fetchone()
    return f"A{value:07d}"


class Customer(models.Model):
    class BalanceModel(models.TextChoices):
        PREPAID = "prepaid", "Prepaid (debit)"
        POSTPAID = "postpaid", "Postpaid (credit)"

    class TransferPolicy(models.TextChoices):
        INHERIT = "inherit", "As defined by the customer class"
        YES = "yes", "Yes"
        NO = "no", "No"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    account_number = models.CharField(
        max_length=32,
        unique=True,
        blank=True,
        validators=[RegexValidator(r"^[A-Za-z0-9_-]+$", "Use letters, digits, '-' or '_' only.")],
        help_text="Leave empty to number the account automatically.",
    )
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="customers")
    customer_class = models.ForeignKey(
        CustomerClass,
        on_delete=models.PROTECT,
        related_name="customers",
        null=True,
        blank=True,
    )
    balance_model = models.CharField(
        max_length=10, choices=BalanceModel.choices, default=BalanceModel.PREPAID
    )
    currency = models.CharField(max_length=3, choices=currency_choices)
    billing_anchor_day = models.PositiveSmallIntegerField(
        "billing period anchor day",
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(28)],
        help_text="Day of the month a billing period starts (1–28).",
    )
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    transfer_policy = models.CharField(
        "subscriber-to-subscriber transfers allowed",
        max_length=10,
        choices=TransferPolicy.choices,
        default=TransferPolicy.INHERIT,
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    low_funds_thresholds = models.CharField(
        "low funds warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_amounts],
        help_text="Comma-separated amounts in the customer's currency, e.g. 50, 20, 5: "
        "the customer is emailed each time the available funds fall below one of them. "
        "Empty: the customer class's default.",
    )
    credit_limit_warnings = models.CharField(
        "credit limit warning thresholds",
        max_length=200,
        blank=True,
        validators=[thresholds.validate_percents],
        help_text="Comma-separated percentages of the credit limit, e.g. 80%, 90%, 100%: "
        "the customer is emailed each time the share of the limit in use reaches one. "
        "Empty: the customer class's default.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_number"]
        indexes = [models.Index(fields=["name"]), models.Index(fields=["email"])]

    def __str__(self) -> str:
        return f"{self.account_number} {self.name}"

    def save(self, *args, **kwargs) -> None:
        if not self.account_number:
            self.account_number = next_account_number()
        # "50, 20, 5" / "80%, 90%"; the wallets get them from an explicit service
        # call by whoever changed the customer (`wallets.services.copy_warning_thresholds`).
        thresholds.normalise(self)
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("admin:billing_customer_change", args=[self.pk])

    @property
    def is_prepaid(self) -> bool:
        return self.balance_model == self.BalanceModel.PREPAID

    def transfers_allowed(self) -> bool:
        """PortaBilling's rule: the customer's own Yes/No wins, else the class decides."""
        if self.transfer_policy == self.TransferPolicy.YES:
            return True
        if self.transfer_policy == self.TransferPolicy.NO:
            return False
        return bool(self.customer_class and self.customer_class.transfers_allowed)


class PortalUser(models.Model):
    """A login that may act for one customer in the self-service portal."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_access"
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="portal_users")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "portal user"

    def __str__(self) -> str:
        return f"{self.user} → {self.customer}"


class ProductItem(models.Model):
    """Something usage is measured in (calls, minutes, GB); prices hang off it."""

    code = models.SlugField(
        max_length=64, unique=True, help_text="Used by the API, e.g. 'api-calls'."
    )
    name = models.CharField(max_length=200)
    unit = models.CharField(max_length=32, default="unit", help_text="e.g. call, minute, GB")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


# --- Catalogue: prices ---------------------------------------------------------------

# Prices and usage quantities keep 6 decimal places, like the ledger: a rate of
# 0.0001 per call is exact.
RATE_PLACES = 6


MAX_DIMENSIONS = 20
MAX_DIMENSION_TEXT = 100  # characters of a dimension name or value
MAX_DIMENSION_INTEGER = 10**15  # an integer value is less than this (either sign)


def clean_dimensions(value: object, *, what: str = "dimensions") -> dict[str, str]:
    """A mapping of dimension name to value, compared as strings ({"region": "eu",
    "tier": "2"}); integers become strings. Anything else raises ValueError with a
    message that says what to fix."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'{what} must be a JSON object of name to value, e.g. {{"region": "eu"}}.')
    if len(value) > MAX_DIMENSIONS:
        raise ValueError(f"{what}: at most {MAX_DIMENSIONS} dimensions, got {len(value)}.")
    clean: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{what}: every dimension name must be a non-empty string.")
        if not key.isprintable() or len(key) > MAX_DIMENSION_TEXT:
            raise ValueError(
                f"{what}: a dimension name is at most {MAX_DIMENSION_TEXT} printable "
                f"characters (no control characters), got {key[:40]!r}."
            )
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError(
                f"{what}: {key!r} must be a string or an integer, got {_json_type(item)}."
            )
        text = str(item) if isinstance(item, str) or abs(item) < MAX_DIMENSION_INTEGER else ""
        if not text.strip():
            raise ValueError(
                f"{what}: {key!r} must not be empty or blank."
                if isinstance(item, str)
                else f"{what}: {key!r} is too large a number; send it as a string."
            )
        # Printable: PostgreSQL refuses NUL in text, and a lone surrogate has no UTF-8 form.
        if not text.isprintable() or len(text) > MAX_DIMENSION_TEXT:
            raise ValueError(
                f"{what}: {key!r} is at most {MAX_DIMENSION_TEXT} printable characters "
                f"(no control characters), got {text[:40]!r}."
            )
        clean[key] = text
    return clean


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"a decimal number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class PriceQuerySet(models.QuerySet["Price"]):
    def effective(self, at: datetime) -> PriceQuerySet:
        """Prices in force at `at`: effective_from <= at < effective_to."""
        return self.filter(effective_from__lte=at).filter(
            Q(effective_to__isnull=True) | Q(effective_to__gt=at)
        )


class Price(models.Model):
    """The unit price of a product item in one currency over a period, optionally
    only for usage with certain dimension values (e.g. region=eu).

    Rating rule (`Price.best_for`): among the prices in force at the event's
    timestamp whose dimensions all match the event, the most specific (most
    dimensions) wins, then the one that took effect last."""

    product_item = models.ForeignKey(ProductItem, on_delete=models.PROTECT, related_name="prices")
    currency = models.CharField(max_length=3, choices=currency_choices)
    unit_price = models.DecimalField(
        max_digits=18,
        decimal_places=RATE_PLACES,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="Per unit of the product item, up to 6 decimal places (e.g. 0.0001).",
    )
    dimensions = models.JSONField(
        "dimension values",
        default=dict,
        blank=True,
        help_text='Only for usage with these values, e.g. {"region": "eu"}. Empty: any usage.',
    )
    effective_from = models.DateTimeField(default=timezone.now)
    effective_to = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The price no longer applies from this moment. Empty: open.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PriceQuerySet.as_manager()

    class Meta:
        ordering = ["product_item", "currency", "-effective_from"]
        constraints = [
            models.CheckConstraint(
                condition=Q(unit_price__gte=0), name="billing_price_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gt=F("effective_from")),
                name="billing_price_period_ends_after_start",
            ),
            models.UniqueConstraint(
                fields=["product_item", "currency", "dimensions", "effective_from"],
                name="billing_price_one_per_item_currency_dimensions_start",
                violation_error_message=(
                    "This product item already has a price in this currency for the same "
                    "dimension values starting at the same moment; change that one instead."
                ),
            ),
        ]
        indexes = [models.Index(fields=["product_item", "currency", "-effective_from"])]

    def __str__(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in sorted(self.dimensions.items()))
        return f"{self.product_item.code} {decimal_text(self.unit_price)} {self.currency}" + (
            f" [{dims}]" if dims else ""
        )

    def clean(self) -> None:
        try:
            self.dimensions = clean_dimensions(self.dimensions)
        except ValueError as exc:
            raise ValidationError({"dimensions": str(exc)}) from None
        if self.unit_price is not None and self.unit_price != self.unit_price.quantize(
            Decimal(1).scaleb(-RATE_PLACES)
        ):
            raise ValidationError({"unit_price": "Use at most 6 decimal places."})

    @property
    def specificity(self) -> int:
        return len(self.dimensions)

    def matches(self, dimensions: dict[str, str]) -> bool:
        return all(dimensions.get(k) == v for k, v in self.dimensions.items())

    def is_effective(self, at: datetime) -> bool:
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)

    @staticmethod
    def best_for(
        prices: Iterable[Price], *, dimensions: dict[str, str], at: datetime
    ) -> Price | None:
        """The price that rates usage with these dimensions at `at`: the most
        specific match, then the latest effective, then the newest row."""
        candidates = [p for p in prices if p.is_effective(at) and p.matches(dimensions)]
        if not candidates:
            return None
        return max(candidates, key=lambda p: (p.specificity, p.effective_from, p.pk or 0))


# --- API keys ------------------------------------------------------------------------

API_KEY_PREFIX = "ppk_"


def hash_api_secret(token: str) -> str:
    """SHA-256 of the whole token. The secret is 32 random bytes, so a fast hash is
    enough (no dictionary to guess from) and lets us look a key up by its hash."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A bearer token for the JSON API. Only the SHA-256 of the secret is stored;
    the secret itself is shown once, when the key is created. A key restricted to
    a partner sees and bills only that partner's customers."""

    # How stale last_used_at may get before a request writes it again: one UPDATE
    # per key per minute instead of one per request.
    LAST_USED_RESOLUTION = timedelta(minutes=1)
    # The columns authentication loads; the others load on access.
    AUTH_COLUMNS = [
        "id",
        "name",
        "prefix",
        "secret_hash",
        "partner_id",
        "last_used_at",
        "revoked_at",
    ]
    # False while the key comes from a per-process memory and its revocation has
    # not been checked against the database yet (billing.api.api_key_of).
    checked = True

    name = models.CharField(
        max_length=100, help_text="Who or what uses it, e.g. 'metering service'."
    )
    prefix = models.CharField(
        max_length=16,
        unique=True,
        editable=False,
        help_text="The start of the key, to recognise it.",
    )
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    partner = models.ForeignKey(
        Partner,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="Restrict the key to this partner's customers. Empty: all customers.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.CharField(max_length=200, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def assign_secret(self) -> str:
        """Give the key a new random secret and return the token (shown once); only
        its hash is kept."""
        token = API_KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix = token[: len(API_KEY_PREFIX) + 8]
        self.secret_hash = hash_api_secret(token)
        return token

    @classmethod
    def issue(
        cls, *, name: str, partner: Partner | None = None, created_by: str = ""
    ) -> tuple[ApiKey, str]:
        key = cls(name=name, partner=partner, created_by=created_by)
        token = key.assign_secret()
        key.save()
        return key, token

    @classmethod
    def for_token(cls, token: str) -> ApiKey | None:
        """The key this token belongs to, revoked or not (the caller decides)."""
        if not token.startswith(API_KEY_PREFIX):
            return None
        # A plain statement, no query compilation.
        names = cls.AUTH_COLUMNS
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(names)} FROM billing_apikey WHERE secret_hash = %s",  # noqa: S608
                [hash_api_secret(token)],
            )
            row = cursor.fetchone()
        return None if row is None else cls.from_db(connection.alias, names, list(row))

    def revoke(self, *, by: str = "") -> bool:
        """Revoke for good; True if this call revoked it. A conditional UPDATE, so
        two staff members revoking at once record one revocation."""
        now = timezone.now()
        done = ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
            revoked_at=now, revoked_by=by
        )
        if done:
            self.revoked_at, self.revoked_by = now, by
        return bool(done)

    def touch(self) -> None:
        """Record use, at most once per LAST_USED_RESOLUTION."""
        now = timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < self.LAST_USED_RESOLUTION:
            return
        ApiKey.objects.filter(pk=self.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - self.LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        self.last_used_at = now

    def may_see(self, customer: Customer) -> bool:
        return self.partner_id is None or customer.partner_id == self.partner_id


# --- Usage events --------------------------------------------------------------------


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


# --- Stripe -----------------------------------------------------------------------


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
        from billing.stripe_gateway import to_stripe_amount

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


from billing.subscriptions.models import *  # noqa: E402, F401, F403 (prepaid subscriptions: Django finds the models here)
