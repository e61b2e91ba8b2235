"""The catalogue: product items and their prices (with dimension conditions)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from billing.models.customers import currency_choices
from billing.money import decimal_text


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
