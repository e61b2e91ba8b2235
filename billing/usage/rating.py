"""Checking and rating usage events: is each field valid, who is the customer,
what is the product, and what does the event cost.

Rating rule: the price in force at the event's timestamp, in the customer's
currency, whose dimension values all match the event; the most specific one wins,
then the latest effective (`Price.best_for`). amount = quantity × unit price,
rounded ROUND_HALF_UP to 6 decimal places (the ledger's precision), once per
event. Every problem is reported against its field, with what to fix.

`billing.usage.recording` books what this module rates.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import connection
from django.db.models import Model
from django.utils import timezone

from billing.errors import ApiKeyNotUsable, FieldProblem, UsageRejected
from billing.models import (
    RATE_PLACES,
    ApiKey,
    Customer,
    Price,
    ProductItem,
    UsageEvent,
    clean_dimensions,
)
from billing.money import decimal_text

QUANTUM = Decimal(1).scaleb(-RATE_PLACES)  # 0.000001, the ledger's precision
ROUNDING = ROUND_HALF_UP
MAX_QUANTITY = Decimal("1e12")
MAX_AMOUNT = Decimal("1e15")  # wallets.services refuses larger amounts
MAX_EVENT_ID_LENGTH = 200  # + "usage:<customer id>:" stays within the ledger's 255
# A quantity sent as text: a JSON number, as text ("2.5", "3", "1e3").
NUMBER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


@dataclass(frozen=True)
class UsageInput:
    """One usage event as sent. `customer` is an account number (or a Customer),
    `product` a product item code (or a ProductItem); `timestamp` None means now."""

    event_id: Any
    customer: Any
    product: Any
    quantity: Any
    dimensions: Any = None
    timestamp: Any = None


def rate(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """quantity × unit price, rounded half up to the ledger's 6 decimal places."""
    return (quantity * unit_price).quantize(QUANTUM, rounding=ROUNDING)


# --- looking up -----------------------------------------------------------------------


# Everything a batch needs to validate and rate its events, in one round trip:
# the customers (with the id of their wallet in their currency: a read of the
# wallets table, never a write), the product items, the prices that may apply
# to the batch's time span, and earlier events with the same ids; and whether the
# API key is still usable (revocation takes effect at once although the web
# process remembers keys: billing.api.auth.ApiKeyAuth).
LOOKUP_SQL = """
SELECT
  (SELECT json_build_object('revoked_at', k.revoked_at)
   FROM billing_apikey k WHERE k.id = %(api_key_id)s),
  (SELECT coalesce(json_agg(json_build_object(
            'id', c.id, 'account_number', c.account_number, 'name', c.name,
            'currency', c.currency, 'status', c.status, 'partner_id', c.partner_id,
            'wallet_id', (SELECT w.id FROM wallets_wallet w
                          WHERE w.customer_id = c.id AND w.currency = c.currency))), '[]')
   FROM billing_customer c WHERE c.account_number = ANY(%(accounts)s)),
  (SELECT coalesce(json_agg(json_build_object(
            'id', p.id, 'code', p.code, 'name', p.name, 'unit', p.unit, 'active', p.active)), '[]')
   FROM billing_productitem p WHERE p.code = ANY(%(codes)s)),
  (SELECT coalesce(json_agg(json_build_object(
            'id', pr.id, 'product_item_id', pr.product_item_id, 'currency', pr.currency,
            'unit_price', pr.unit_price::text, 'dimensions', pr.dimensions,
            'effective_from', pr.effective_from, 'effective_to', pr.effective_to)), '[]')
   FROM billing_price pr JOIN billing_productitem p ON p.id = pr.product_item_id
   WHERE p.code = ANY(%(codes)s)
     AND pr.currency IN (SELECT c.currency FROM billing_customer c
                         WHERE c.account_number = ANY(%(accounts)s))
     AND pr.effective_from <= %(latest)s
     AND (pr.effective_to IS NULL OR pr.effective_to > %(earliest)s)),
  (SELECT coalesce(json_agg(json_build_object(
            'id', e.id, 'customer_id', e.customer_id, 'event_id', e.event_id,
            'status', e.status, 'fingerprint', e.fingerprint, 'response', e.response)), '[]')
   FROM billing_usageevent e JOIN billing_customer c ON c.id = e.customer_id
   WHERE c.account_number = ANY(%(accounts)s) AND e.event_id = ANY(%(event_ids)s))
"""


@dataclass
class UsageLookups:
    """Everything a batch needs from the database, read once (`LOOKUP_SQL`)."""

    api_key: ApiKey | None
    customers: dict[str, Customer] = field(default_factory=dict)
    products: dict[str, ProductItem] = field(default_factory=dict)
    prices: dict[tuple[int, str], list[Price]] = field(default_factory=dict)
    earlier: dict[tuple[int, str], UsageEvent] = field(default_factory=dict)
    wallets: dict[int, int] = field(default_factory=dict)  # customer id → wallet id
    now: datetime = field(default_factory=timezone.now)

    @classmethod
    def for_events(cls, events: Sequence[UsageInput], *, api_key: ApiKey | None) -> UsageLookups:
        found = cls(api_key=api_key)
        accounts = {a for e in events if (a := _account_number(e.customer))}
        codes = {c for e in events if (c := _product_code(e.product))}
        times = [found.now] + [
            e.timestamp
            for e in events
            if isinstance(e.timestamp, datetime) and timezone.is_aware(e.timestamp)
        ]
        params = {
            "accounts": sorted(accounts),
            "codes": sorted(codes),
            "event_ids": sorted({e.event_id for e in events if _storable(e.event_id)}),
            "earliest": min(times),
            "latest": max(times),
            "api_key_id": api_key.pk if api_key is not None else None,
        }
        with prepared_cursor() as cursor:
            cursor.execute(LOOKUP_SQL, params, prepare=True)
            row = cursor.fetchone()
        assert row is not None
        key_state, customers, products, prices, earlier = row
        if api_key is not None and (key_state is None or key_state["revoked_at"] is not None):
            raise ApiKeyNotUsable(
                f"This API key ({api_key.prefix}…) was revoked; ask staff for a new one."
                if key_state
                else "Invalid API key: no such key."
            )
        for c in customers:
            wallet_id = c.pop("wallet_id")
            customer = _loaded(Customer, c)
            found.customers[customer.account_number] = customer
            if wallet_id is not None:
                found.wallets[customer.pk] = wallet_id
        for p in products:
            found.products[p["code"]] = _loaded(ProductItem, p)
        for pr in prices:
            pr["unit_price"] = Decimal(pr["unit_price"])
            for name in ("effective_from", "effective_to"):
                pr[name] = datetime.fromisoformat(pr[name]) if pr[name] else None
            price = _loaded(Price, pr)
            found.prices.setdefault((price.product_item_id, price.currency), []).append(price)
        for e in earlier:
            event = _loaded(UsageEvent, e)
            found.earlier[(event.customer_id, event.event_id)] = event
        return found


M = TypeVar("M", bound=Model)


def _loaded(model: type[M], values: dict[str, Any]) -> M:
    """A model instance from some of its columns, as the ORM makes one: the other
    fields are deferred (loaded on access), so it is safe to pass around."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


def _storable(value: Any) -> bool:
    """Whether a text value may be sent to PostgreSQL as a lookup key: a string that
    is printable (no NUL, which PostgreSQL refuses in text, no lone surrogate, which
    has no UTF-8 form) and not longer than any key we store. Anything else cannot
    match a row, so it is left out of the lookup and refused by the checks below."""
    return isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable()


def _account_number(value: Any) -> str | None:
    if isinstance(value, Customer):
        return value.account_number
    return value if _storable(value) else None


def _product_code(value: Any) -> str | None:
    if isinstance(value, ProductItem):
        return value.code
    return value if _storable(value) else None


@contextmanager
def prepared_cursor() -> Iterator[psycopg.Cursor]:
    """A cursor on Django's own connection whose statements PostgreSQL plans once
    per connection (`prepare=True`), as wallets.services does for the draw-down."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


# --- checking and pricing -------------------------------------------------------------


@dataclass(frozen=True)
class CheckedEvent:
    """A valid event: its customer and product found, its fields clean."""

    event_id: str
    customer: Customer
    product: ProductItem
    quantity: Decimal
    dimensions: dict[str, str]
    timestamp: datetime
    fingerprint: str
    wallet_id: int | None
    earlier: UsageEvent | None  # this event id booked (or refused) before


@dataclass(frozen=True)
class RatedEvent(CheckedEvent):
    """A valid event with its price and amount, not booked yet."""

    price: Price
    amount: Decimal

    @property
    def ledger_key(self) -> str:
        return f"usage:{self.customer.pk}:{self.event_id}"

    def row(self, *, api_key: ApiKey | None = None, **fields: Any) -> UsageEvent:
        # Foreign keys by id: setting related objects costs a descriptor call each,
        # a third of the Python time of a batch of 1,000. The related objects are
        # put in the instance's cache, so reading them costs no query.
        event = UsageEvent(
            customer_id=self.customer.pk,
            product_item_id=self.product.pk,
            event_id=self.event_id,
            quantity=self.quantity,
            dimensions=self.dimensions,
            timestamp=self.timestamp,
            price_id=self.price.pk,
            unit_price=self.price.unit_price,
            amount=self.amount,
            currency=self.customer.currency,
            fingerprint=self.fingerprint,
            api_key_id=api_key.pk if api_key is not None else None,
            **fields,
        )
        cache = event._state.fields_cache
        cache["customer"], cache["product_item"], cache["price"] = (
            self.customer, self.product, self.price
        )  # fmt: skip
        if api_key is not None:
            cache["api_key"] = api_key
        return event


def check_event(raw: UsageInput, found: UsageLookups) -> CheckedEvent:
    """Validate one event against what the batch looked up. Raises UsageRejected
    with every problem found (one per field)."""
    problems: list[FieldProblem] = []
    event_id = _event_id(raw.event_id, problems)
    customer = _customer(raw.customer, found, problems)
    product = _product(raw.product, found, problems)
    quantity = _quantity(raw.quantity, problems)
    try:
        dimensions = clean_dimensions(raw.dimensions)
    except ValueError as exc:
        problems.append(FieldProblem("dimensions", str(exc)))
        dimensions = {}
    timestamp = _timestamp(raw.timestamp, found.now, problems)
    if problems:
        raise UsageRejected(problems)
    assert event_id and customer and product and quantity is not None and timestamp
    return CheckedEvent(
        event_id=event_id,
        customer=customer,
        product=product,
        quantity=quantity,
        dimensions=dimensions,
        timestamp=timestamp,
        fingerprint=_fingerprint(product, quantity, dimensions, raw.timestamp),
        wallet_id=found.wallets.get(customer.pk),
        earlier=found.earlier.get((customer.pk, event_id)),
    )


def price_event(event: CheckedEvent, found: UsageLookups) -> RatedEvent:
    """Rate a valid event: the price in force at its timestamp that matches it best
    (`Price.best_for`) times its quantity. Raises UsageRejected without a price."""
    customer, product, dimensions = event.customer, event.product, event.dimensions
    price = Price.best_for(
        found.prices.get((product.pk, customer.currency), []),
        dimensions=dimensions,
        at=event.timestamp,
    )
    if price is None:
        raise UsageRejected(
            [
                FieldProblem(
                    "product",
                    f"product item {product.code!r} has no price in {customer.currency} for "
                    f"{_describe(dimensions)} at {event.timestamp.isoformat()}; staff add one "
                    "in the admin (Product items → prices).",
                )
            ]
        )
    amount = rate(event.quantity, price.unit_price)
    if amount >= MAX_AMOUNT:
        raise UsageRejected(
            [FieldProblem("quantity", f"this event would cost {amount}, more than one event may.")]
        )
    checked = {f.name: getattr(event, f.name) for f in fields(CheckedEvent)}
    return RatedEvent(**checked, price=price, amount=amount)


def _event_id(value: Any, problems: list[FieldProblem]) -> str | None:
    if not isinstance(value, str) or not value.strip():
        problems.append(
            FieldProblem("event_id", "send a non-empty string that identifies this event.")
        )
        return None
    if len(value) > MAX_EVENT_ID_LENGTH:
        problems.append(
            FieldProblem(
                "event_id", f"use at most {MAX_EVENT_ID_LENGTH} characters (got {len(value)})."
            )
        )
        return None
    if not value.isprintable():
        problems.append(FieldProblem("event_id", "must not contain control characters."))
        return None
    return value


def _customer(value: Any, found: UsageLookups, problems: list[FieldProblem]) -> Customer | None:
    if isinstance(value, str) and value and not _storable(value):
        problems.append(
            FieldProblem("customer", "an account number has only letters, digits, '-' or '_'.")
        )
        return None
    if isinstance(value, Customer | str) and value:
        customer = found.customers.get(_account_number(value) or "")
    else:
        problems.append(FieldProblem("customer", "send the customer's account number."))
        return None
    if customer is None or (found.api_key is not None and not found.api_key.may_see(customer)):
        number = _account_number(value)
        problems.append(FieldProblem("customer", f"no customer with account number {number!r}."))
        return None
    if customer.status != Customer.Status.ACTIVE:
        problems.append(
            FieldProblem(
                "customer",
                f"customer {customer.account_number} is {customer.get_status_display().lower()}; "
                "usage is accepted only for active customers.",
            )
        )
        return None
    return customer


def _product(value: Any, found: UsageLookups, problems: list[FieldProblem]) -> ProductItem | None:
    if isinstance(value, str) and value and not _storable(value):
        problems.append(
            FieldProblem("product", "a product code has only letters, digits, '-' or '_'.")
        )
        return None
    if isinstance(value, ProductItem | str) and value:
        product = found.products.get(_product_code(value) or "")
    else:
        problems.append(FieldProblem("product", "send the product item's code, e.g. 'api-calls'."))
        return None
    if product is None:
        problems.append(
            FieldProblem("product", f"no product item with code {_product_code(value)!r}.")
        )
        return None
    if not product.active:
        problems.append(
            FieldProblem(
                "product", f"product item {product.code!r} is inactive; it cannot be billed."
            )
        )
        return None
    return product


def _quantity(value: Any, problems: list[FieldProblem]) -> Decimal | None:
    if isinstance(value, bool | float) or value is None:
        problems.append(
            FieldProblem("quantity", 'send a number as a string or an integer, e.g. "2.5" or 3.')
        )
        return None
    if isinstance(value, str) and not NUMBER_TEXT.fullmatch(value):
        # Decimal() also reads "1_000", " 1 ", "NaN" and "Infinity"; JSON numbers are plainer.
        problems.append(FieldProblem("quantity", f"must be a number, got {value[:40]!r}."))
        return None
    try:
        quantity = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        problems.append(FieldProblem("quantity", f"must be a number, got {str(value)[:40]!r}."))
        return None
    # Magnitude and places are read off the number, never by quantize(): quantizing
    # 1e22 to 6 places needs more digits than the decimal context has (InvalidOperation).
    if not quantity.is_finite():
        problems.append(FieldProblem("quantity", "must be a finite number."))
    elif quantity >= MAX_QUANTITY:
        problems.append(FieldProblem("quantity", f"must be less than {MAX_QUANTITY:,.0f}."))
    elif quantity <= 0:
        problems.append(
            FieldProblem(
                "quantity",
                f"must be greater than zero, got "
                f"{decimal_text(quantity) if quantity > -MAX_QUANTITY else 'a negative number'}; "
                "to correct usage, "
                "reverse the event instead.",
            )
        )
    elif quantity.normalize().as_tuple().exponent < -RATE_PLACES:  # type: ignore[operator]
        problems.append(
            FieldProblem(
                "quantity",
                f"use at most {RATE_PLACES} decimal places (got {quantity}); round it first.",
            )
        )
    else:
        return quantity
    return None


def _timestamp(value: Any, now: datetime, problems: list[FieldProblem]) -> datetime | None:
    if value is None:
        return now
    if not isinstance(value, datetime):
        problems.append(
            FieldProblem("timestamp", "send an ISO 8601 time, e.g. 2026-11-25T10:00:00Z.")
        )
        return None
    if timezone.is_naive(value):
        problems.append(
            FieldProblem(
                "timestamp",
                "add a time zone, e.g. 2026-11-25T10:00:00Z or 2026-11-25T11:00:00+01:00.",
            )
        )
        return None
    tolerance = timedelta(seconds=settings.USAGE_FUTURE_TOLERANCE_SECONDS)
    if value > now + tolerance:
        problems.append(
            FieldProblem(
                "timestamp",
                f"{value.isoformat()} is {_ahead(value - now)} in the future; at most "
                f"{_ahead(tolerance)} ahead is accepted. Send the time the usage happened "
                "(and check the sender's clock).",
            )
        )
        return None
    max_age = timedelta(days=settings.USAGE_MAX_AGE_DAYS)
    if value < now - max_age:
        problems.append(
            FieldProblem(
                "timestamp",
                f"{value.isoformat()} is {_ahead(now - value)} old; usage older than "
                f"{settings.USAGE_MAX_AGE_DAYS} days is not accepted (its billing periods are "
                "long closed). Check the sender's clock, or ask staff to book it as a "
                "correction.",
            )
        )
        return None
    return value


def _ahead(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 3600 * 48:
        return f"{seconds // 86400} days"
    if seconds >= 120:
        return f"{seconds // 60} minutes"
    return f"{seconds} seconds"


def _describe(dimensions: dict[str, str]) -> str:
    if not dimensions:
        return "usage without dimensions"
    return "usage with " + ", ".join(f"{k}={v}" for k, v in sorted(dimensions.items()))


def _fingerprint(
    product: ProductItem, quantity: Decimal, dimensions: dict[str, str], timestamp: Any
) -> str:
    """What identifies the event's content. A timestamp left out (= now) does not
    count, so a retry without one still matches."""
    payload = json.dumps(
        [
            product.code,
            decimal_text(quantity),
            sorted(dimensions.items()),
            timestamp.isoformat() if isinstance(timestamp, datetime) else None,
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()
