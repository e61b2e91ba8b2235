"""What the API reads and answers: request and response schemas, path and query
parameters, and cursor pagination."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from django.conf import settings
from ninja import Field, Path, Schema
from ninja.errors import ValidationError
from ninja.pagination import CursorPagination
from pydantic import ConfigDict, PlainSerializer, WithJsonSchema, field_validator

from billing.models import (
    MAX_DIMENSION_INTEGER,
    MAX_DIMENSION_TEXT,
    MAX_DIMENSIONS,
)
from billing.money import decimal_text
from billing.usage.rating import MAX_EVENT_ID_LENGTH, MAX_QUANTITY, NUMBER_TEXT
from billing.usage.recording import (
    UsageInput,
)
from wallets.models import CreditGrant, LedgerTransaction

# Decimals go out as strings without trailing zeros ("0.75", "100"): exact, and the
# same text whether an answer is fresh or replayed from the stored snapshot.
Money = Annotated[
    Decimal,
    PlainSerializer(decimal_text, return_type=str),
    WithJsonSchema({"type": "string", "format": "decimal", "examples": ["0.75"]}),
]


# Text the API stores or looks up: printable characters only. PostgreSQL refuses NUL
# in text, a lone surrogate has no UTF-8 form (pydantic refuses it), and control
# characters in ids only cause grief. The pattern documents it; `isprintable()` in
# billing.usage.rating / billing.models holds the same line for every other caller.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
# What an account number and a product code may look like (the models' validators).
ACCOUNT_NUMBER = r"^[A-Za-z0-9_-]{1,32}$"
PRODUCT_CODE = r"^[A-Za-z0-9_-]{1,64}$"
CURRENCY = r"^[A-Z]{3}$"
MAX_ID = 2**63 - 1  # our ids are PostgreSQL bigints

DIMENSION_VALUE_SCHEMA = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_DIMENSION_TEXT, "pattern": PRINTABLE},
        {
            "type": "integer",
            "minimum": -MAX_DIMENSION_INTEGER + 1,
            "maximum": MAX_DIMENSION_INTEGER - 1,
        },
    ]
}


# Input models are plain pydantic models (not ninja's Schema, whose validator wraps
# every field access for Django objects: several times slower on a batch of 1,000).
class UsageEventIn(pydantic.BaseModel):
    # A field the API does not know is refused (422), never ignored: a `currency`
    # that was silently dropped charged the event in the customer's own currency.
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(
        max_length=MAX_EVENT_ID_LENGTH,
        pattern=PRINTABLE,
        json_schema_extra={"minLength": 1},
        description=f"Your id for this event, at most {MAX_EVENT_ID_LENGTH} printable "
        "characters. Unique per customer: sending it again books nothing and returns the "
        "first answer.",
        examples=["evt-2026-11-25-000123"],
    )
    customer: str = Field(
        pattern=ACCOUNT_NUMBER,
        description="The customer's account number. An unknown, inactive or (for a "
        "partner's key) foreign customer is a 422 on this field.",
        examples=["A0000001"],
    )
    product: str = Field(
        pattern=PRODUCT_CODE,
        description="The product item's code. An unknown or inactive product, or one "
        "without a price for this customer, is a 422 on this field.",
        examples=["api-calls"],
    )
    quantity: Annotated[
        Decimal,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": NUMBER_TEXT.pattern.join("^$")},
                    {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "exclusiveMaximum": int(MAX_QUANTITY),
                    },
                ],
                "description": "How many units: more than 0, less than "
                f"{MAX_QUANTITY:,.0f}, at most 6 decimal places. Send decimals as strings "
                '("2.5") to keep them exact. The event may also cost at most 10^15.',
                "examples": ["3"],
            }
        ),
    ] = Field()
    dimensions: Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": MAX_DIMENSIONS,
                "propertyNames": {
                    "minLength": 1,
                    "maxLength": MAX_DIMENSION_TEXT,
                    "pattern": PRINTABLE,
                },
                "additionalProperties": DIMENSION_VALUE_SCHEMA,
                "description": 'Dimension values (strings or integers), e.g. {"region": "eu"}; '
                "they pick the price and which conditional credits apply.",
            }
        ),
    ] = Field(default_factory=dict)
    timestamp: datetime | None = Field(
        default=None,
        description="When the usage happened (ISO 8601 with a time zone). Default: now. At "
        "most USAGE_FUTURE_TOLERANCE_SECONDS (default 300) in the future and "
        "USAGE_MAX_AGE_DAYS (default 90) in the past (else a 422).",
    )

    @field_validator("quantity", mode="before")
    @classmethod
    def plain_number(cls, value: Any) -> Any:
        """Text the JSON way only: pydantic would read "1_000" and " 1 " as numbers.
        (Range and decimal places are billing.usage.rating's, with its messages.)"""
        if isinstance(value, str) and ("_" in value or value.strip() != value):
            raise ValueError(f'must be a number such as "2.5" or "3", got {value[:40]!r}.')
        return value

    def to_input(self) -> UsageInput:
        return UsageInput(
            event_id=self.event_id,
            customer=self.customer,
            product=self.product,
            quantity=self.quantity,
            dimensions=self.dimensions,
            timestamp=self.timestamp,
        )


class GrantDraw(Schema):
    grant_id: int
    amount: Money


class UsageOut(Schema):
    id: int = Field(description="Our id of the usage event (for /usage/{id}/reverse).")
    event_id: str
    status: str = Field(description="booked, or reversed once reversed.")
    customer: str
    product: str
    quantity: Money
    dimensions: dict[str, str]
    timestamp: datetime
    unit_price: Money
    amount: Money = Field(description="quantity × unit price, rounded half up to 6 places.")
    currency: str
    from_credits: Money = Field(description="The part paid from credit grants.")
    to_debt: Money = Field(description="The part the grants could not cover (amount due).")
    grants: list[GrantDraw] = Field(description="The grants drawn from, in draw-down order.")
    transaction_id: int | None = Field(description="The ledger transaction (none if free).")
    credit_balance: Money
    debt: Money
    available_funds: Money = Field(description="Right after this event.")
    replayed: bool = Field(description="True when this event id was booked before: nothing new.")


class ErrorOut(Schema):
    detail: str


class FieldErrorOut(Schema):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(Schema):
    detail: list[FieldErrorOut]


class UsageBatchIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: Annotated[
        list[Any],
        WithJsonSchema(
            {
                "type": "array",
                # Each item is validated on its own, so one bad event does not sink
                # the batch: the batch accepts any item (an invalid one fails in its
                # result). The docs still show what an event looks like.
                "items": {
                    "anyOf": [
                        UsageEventIn.model_json_schema(),
                        {"description": "Anything else fails alone, with a 422 in its result."},
                    ]
                },
                "minItems": 1,
                "maxItems": settings.USAGE_BATCH_MAX_EVENTS,
                "description": f"1 to USAGE_BATCH_MAX_EVENTS (here "
                f"{settings.USAGE_BATCH_MAX_EVENTS}) events. An event that is not valid "
                "fails on its own (its result says why); the others are booked.",
            }
        ),
    ]


class BatchItemOut(Schema):
    index: int = Field(description="Position of the event in the batch.")
    event_id: str | None
    ok: bool
    status: int = Field(description="The HTTP status this event would have had on its own.")
    usage: UsageOut | None = None
    errors: list[FieldErrorOut] = Field(
        default_factory=list, description="What is wrong (loc is relative to the event)."
    )


class UsageBatchOut(Schema):
    booked: int = Field(description="Events booked by this request.")
    replayed: int = Field(description="Events already booked before (nothing new).")
    failed: int
    results: list[BatchItemOut]


class ReversalOut(Schema):
    id: int
    event_id: str
    status: str
    amount: Money = Field(description="The usage amount undone.")
    currency: str
    transaction_id: int | None = Field(description="The reversing ledger transaction.")
    reversed_transaction_id: int | None
    grants: list[GrantDraw] = Field(description="Credit returned to each grant.")
    reversed_at: datetime
    credit_balance: Money
    debt: Money
    available_funds: Money
    replayed: bool


class BalanceOut(Schema):
    customer: str
    currency: str
    credit_balance: Money = Field(description="All live credit, restricted included.")
    restricted_balance: Money = Field(
        description="Credit usable only for certain product items or dimensions."
    )
    unrestricted_balance: Money
    debt: Money
    credit_limit: Money = Field(description="Effective now (permanent + valid temporary).")
    permanent_credit_limit: Money
    temporary_credit_increase: Money
    temporary_increase_valid_until: datetime | None
    available_funds: Money = Field(
        description="unrestricted credit in force now (effective, not expired) + effective "
        "credit limit − debt; credit not yet effective or expired is in credit_balance only"
    )
    pending_grants: int = Field(description="Grants awaiting activation (Requires Action).")


class GrantOut(Schema):
    id: int
    name: str
    kind: str
    status: str
    amount: Money
    remaining: Money
    currency: str
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    condition_product: str | None
    condition_dimensions: dict[str, str]
    restricted: bool
    external_transaction_id: str

    @staticmethod
    def resolve_condition_product(grant: CreditGrant) -> str | None:
        return grant.condition_item.code if grant.condition_item else None


class TransactionOut(Schema):
    id: int
    kind: str
    effective_at: datetime
    created_at: datetime
    amount: Money
    currency: str
    memo: str
    reference: str
    balance_after: Money | None
    debt_after: Money | None
    reverses: int | None = Field(description="The transaction this one reverses.")
    grants: list[GrantDraw] = Field(description="Grants drawn (+) or returned (−).")

    @staticmethod
    def resolve_reverses(tx: LedgerTransaction) -> int | None:
        return tx.reverses_id

    @staticmethod
    def resolve_grants(tx: LedgerTransaction) -> list[dict[str, Any]]:
        return [{"grant_id": lot.grant_id, "amount": lot.amount} for lot in tx.lots.all()]


CurrencyParam = Annotated[
    str | None,
    Field(
        default=None,
        pattern=CURRENCY,
        description="ISO 4217 code, e.g. USD. Default: the customer's currency.",
    ),
]


class GrantFilter(Schema):
    status: CreditGrant.Status | None = None
    currency: CurrencyParam = None


class WalletFilter(Schema):
    currency: CurrencyParam = None


AccountNumberPath = Annotated[
    str,
    Path(
        pattern=ACCOUNT_NUMBER,
        description="The customer's account number, e.g. A0000001.",
        examples=["A0000001"],
    ),
]
EventPkPath = Annotated[
    int, Path(ge=1, le=MAX_ID, description="The usage event's `id` (from the usage answer).")
]


PAGE_SIZE_MAX = 200


class IdCursorPagination(CursorPagination):
    """ninja's cursor pagination (newest first, by id), refusing what it did not
    give out: a cursor is the opaque text of a `next`/`previous` link; a forged or
    damaged one is a 422 on `cursor` (ninja's own class let a bad position reach the
    database and answered 500)."""

    class Input(Schema):
        page_size: int | None = Field(
            default=None, ge=1, le=PAGE_SIZE_MAX, description="Default 50, at most 200."
        )
        cursor: str | None = Field(
            default=None,
            max_length=200,
            pattern=r"^[A-Za-z0-9+/]*={0,2}$",
            description="Where to continue: copy it from the `next` or `previous` link.",
        )

    class Cursor(CursorPagination.Cursor):
        @classmethod
        def from_encoded_param(
            cls, encoded_param: str | None, context: Any = None
        ) -> CursorPagination.Cursor:
            try:
                cursor = super().from_encoded_param(encoded_param, context)
            except (ValidationError, pydantic.ValidationError, ValueError):
                cursor = None
            if cursor is None or (
                cursor.p is not None
                and not (cursor.p.isascii() and cursor.p.isdigit() and 0 < int(cursor.p) <= MAX_ID)
            ):
                raise ValidationError(
                    [{"loc": ["query", "cursor"], "type": "value_error",
                      "msg": "not a cursor this API gave out: follow the `next` or `previous` "
                      "link as it is."}]
                )  # fmt: skip
            return cursor
