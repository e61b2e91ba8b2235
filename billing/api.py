"""The usage and balance API (/api/v1/, mounted in config/api.py).

Authentication: `Authorization: Bearer <API key>`; keys are created in the admin
(API keys) and stored hashed. A key restricted to a partner sees only that
partner's customers (others answer 404 / "no customer").

Errors (every answer is JSON; the statuses of each endpoint are listed in its
OpenAPI `responses`, which a schemathesis run in `make test` holds to the truth):
401 `{"detail": "..."}` for a missing, unknown or revoked key; 422
`{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` for bad input, one
entry per field: a wrong type, a number out of range or with more than 6 decimal
places, text with control characters (NUL included), an unknown field (refused,
never ignored), an unknown customer or product in a usage event, a forged
pagination cursor; 402 `{"detail": "insufficient funds: ..."}` when the wallet
cannot pay; 409 for an event id reused for another event; 404 for an unknown
customer (in the URL) or event. The body itself: 400 when it is not JSON, 413
when it is too large, 415 when it is not sent as `application/json`
(`config.api`). A batch answers 200 (when the batch itself is valid) with one
result per event, each with its own status: one bad event never stops the others.
An unexpected error is a JSON 500 without details (logged on our side).
"""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import Field, Path, Query, Router, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.pagination import CursorPagination, paginate
from ninja.security import HttpBearer
from pydantic import ConfigDict, PlainSerializer, WithJsonSchema, field_validator

from billing.errors import ApiKeyNotUsable, FieldProblem, UsageError, UsageRejected
from billing.models import (
    API_KEY_PREFIX,
    MAX_DIMENSION_INTEGER,
    MAX_DIMENSION_TEXT,
    MAX_DIMENSIONS,
    ApiKey,
    Customer,
    UsageEvent,
    decimal_text,
    hash_api_secret,
)
from billing.rating import MAX_EVENT_ID_LENGTH, MAX_QUANTITY, NUMBER_TEXT
from billing.usage import (
    UsageInput,
    UsageOutcome,
    record_usage,
    record_usage_batch,
    reverse_usage,
)
from wallets.actors import Actor
from wallets.models import CreditGrant, GrantConsumption, LedgerTransaction, Wallet

# --- authentication ------------------------------------------------------------------


class ApiKeyAuth(HttpBearer):
    """Bearer API keys. Every refusal says what is wrong with the key.

    Known keys are remembered per process (`KNOWN_KEYS`, by the hash of the
    secret), so a usage request does not spend a round trip on its key. A key
    from that memory is *not yet checked*: revocation must take effect at once,
    so `api_key_of()` checks it against the database before the request is
    served, except where the view's own statement checks it (the usage
    endpoints: `billing.rating.LOOKUP_SQL` reads the key's `revoked_at` in the
    same round trip as the customers and prices)."""

    def __call__(self, request: HttpRequest) -> ApiKey | None:
        header = request.headers.get(self.header, "")
        if not header:
            raise AuthenticationError(
                message="Missing API key: send the header 'Authorization: Bearer <your API key>'."
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                message="The Authorization header must read 'Bearer <your API key>'."
            )
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        secret_hash = hash_api_secret(token)
        known = KNOWN_KEYS.get(secret_hash)
        if known is not None:
            key = ApiKey.from_db(connection.alias, ApiKey.AUTH_COLUMNS, list(known))
            key.checked = False  # see api_key_of()
        else:
            key = checked_key(ApiKey.for_token(token))
        used = key.last_used_at
        key.touch()  # writes at most once a minute
        if known is None or key.last_used_at != used:
            remember(secret_hash, key)
        return key


# Hash of the secret → ApiKey.AUTH_COLUMNS of a key that was valid when loaded.
# Bounded; a dict's get/set are atomic, so gthread workers may share it.
KNOWN_KEYS: dict[str, tuple] = {}
KNOWN_KEYS_MAX = 1000


def remember(secret_hash: str, key: ApiKey) -> None:
    if len(KNOWN_KEYS) >= KNOWN_KEYS_MAX:
        KNOWN_KEYS.clear()
    KNOWN_KEYS[secret_hash] = tuple(getattr(key, name) for name in ApiKey.AUTH_COLUMNS)


def forget(key: ApiKey) -> None:
    KNOWN_KEYS.pop(key.secret_hash, None)


def checked_key(key: ApiKey | None) -> ApiKey:
    """The key as just read from the database, or the 401 that says why not."""
    if key is None:
        raise AuthenticationError(
            message=f"Invalid API key: no such key. Copy the whole key (it starts with "
            f"'{API_KEY_PREFIX}'); staff create keys in the admin under API keys."
        )
    if key.revoked_at is not None:
        forget(key)
        raise AuthenticationError(
            message=f"This API key ({key.prefix}…) was revoked on "
            f"{key.revoked_at:%Y-%m-%d %H:%M} UTC; ask staff for a new one."
        )
    key.checked = True
    return key


router = Router(auth=ApiKeyAuth())


def api_key_of(request: HttpRequest, *, checked_by_view: bool = False) -> ApiKey:
    """The request's API key, checked against the database now (one indexed read)
    if it came from the per-process memory, unless the view's own statement
    checks it (`checked_by_view`: the usage lookup does)."""
    key = request.auth  # type: ignore[attr-defined]
    assert isinstance(key, ApiKey)
    if not key.checked and not checked_by_view:
        fresh = checked_key(ApiKey.objects.filter(pk=key.pk).only(*ApiKey.AUTH_COLUMNS).first())
        request.auth = key = fresh  # type: ignore[attr-defined]
    return key


# --- schemas -------------------------------------------------------------------------

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
# billing.rating / billing.models holds the same line for every other caller.
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
        (Range and decimal places are billing.rating's, with its messages.)"""
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


# --- errors --------------------------------------------------------------------------


def field_errors(problems: list[FieldProblem], *, prefix: tuple[str | int, ...] = ()) -> list:
    return [{"loc": [*prefix, p.field], "msg": p.message, "type": "value_error"} for p in problems]


def pydantic_errors(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def error_response(exc: UsageError, *, prefix: tuple[str | int, ...]) -> Status:
    if isinstance(exc, UsageRejected):
        return Status(exc.status_code, {"detail": field_errors(exc.problems, prefix=prefix)})
    return Status(exc.status_code, {"detail": str(exc)})


def failed(index: int, event_id: str | None, status: int, errors: list) -> dict[str, Any]:
    """A batch result for an event that was not booked."""
    return {"index": index, "event_id": event_id, "ok": False, "status": status, "usage": None,
            "errors": errors}  # fmt: skip


def usage_out(outcome: UsageOutcome) -> dict[str, Any]:
    """The answer for a usage event as `UsageOut` renders it (its stored answer is
    JSON-ready already; only the timestamp is written as ninja writes datetimes)."""
    answer = {**outcome.response, "replayed": outcome.replayed}
    answer["timestamp"] = JSON.default(datetime.fromisoformat(answer["timestamp"]))
    return answer


# Usage answers are built JSON-ready (decimals as text, from the stored answer), so
# the usage views return them as they are: ninja re-validating the answer against
# its schema (kept for the docs; a test checks that the answers are what it would
# render) took about as long as booking a batch.
JSON = DjangoJSONEncoder()


def json_response(status: int, body: Any) -> HttpResponse:
    return HttpResponse(json.dumps(body), status=status, content_type="application/json")


def revoked(request: HttpRequest) -> HttpResponse:
    """The usage lookup found this process's remembered key revoked: answer as
    authentication does (401 with the reason, and the key forgotten)."""
    key = api_key_of(request, checked_by_view=True)
    key.checked = False
    try:
        api_key_of(request)
    except AuthenticationError as exc:
        response = json_response(exc.status_code, {"detail": exc.message})
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    raise AssertionError("the key is usable after all")  # pragma: no cover


# --- what each endpoint may answer --------------------------------------------------

# Every endpoint behind an API key; with a body; the usage answers. Descriptions go
# into the OpenAPI document (ninja writes only the status's name).
COMMON_ERRORS: dict[int, Any] = {401: ErrorOut, 422: ValidationErrorOut, 500: ErrorOut}
BODY_ERRORS: dict[int, Any] = {400: ErrorOut, 413: ErrorOut, 415: ErrorOut}
STATUS_TEXT = {
    400: "The body is not valid JSON (NaN and Infinity are not JSON).",
    401: "No API key, or an unknown or revoked one.",
    402: "Insufficient funds: the wallet cannot pay for the event; nothing was booked.",
    404: "No such customer or event for this API key.",
    409: "The event id was used before for another event of this customer, or the event "
    "cannot be reversed.",
    413: "The body is over the size limit (2.5 MB by default).",
    415: "The body was not sent as `application/json`.",
    422: "Bad input, one entry per field (`loc` names it): a wrong type or format, a value "
    "out of range, an unknown field, a forged cursor; in usage events also an unknown, "
    "inactive or foreign customer or product, a product without a price, or a timestamp "
    "out of the accepted window.",
    500: "An error on our side (logged; no details are sent). Retrying is safe.",
}


# Answered by gunicorn (`make run`, production) before the request reaches Django.
URL_TOO_LONG = {"description": "The URL is too long (gunicorn's limit: 4094 bytes)."}


def documented(responses: dict[int, Any]) -> dict[str, Any]:
    """`openapi_extra` giving each error status of `responses` its description, and
    the web server's own 414."""
    described = {code: {"description": STATUS_TEXT[code]} for code in responses
                 if code in STATUS_TEXT}  # fmt: skip
    return {"responses": {**described, 414: URL_TOO_LONG}}


USAGE_RESPONSES = {200: UsageOut, 402: ErrorOut, 409: ErrorOut, **COMMON_ERRORS, **BODY_ERRORS}
BATCH_RESPONSES = {200: UsageBatchOut, **COMMON_ERRORS, **BODY_ERRORS}
REVERSE_RESPONSES = {200: ReversalOut, 404: ErrorOut, 409: ErrorOut, 413: ErrorOut, **COMMON_ERRORS}
BALANCE_RESPONSES = {200: BalanceOut, 404: ErrorOut, **COMMON_ERRORS}
GRANTS_RESPONSES = {200: list[GrantOut], 404: ErrorOut, **COMMON_ERRORS}
TRANSACTIONS_RESPONSES = {200: list[TransactionOut], 404: ErrorOut, **COMMON_ERRORS}


# --- usage ---------------------------------------------------------------------------


@router.post(
    "/usage",
    response=USAGE_RESPONSES,
    openapi_extra=documented(USAGE_RESPONSES),
    tags=["usage"],
    summary="Send one usage event",
)
def post_usage(request: HttpRequest, event: UsageEventIn) -> Any:
    """Rate the event and draw it down from the customer's wallet now. The answer
    says what it cost, which grants paid, and the available funds after it.
    Sending the same `event_id` for the same customer again books nothing and
    returns the first answer (`replayed: true`)."""
    key = api_key_of(request, checked_by_view=True)  # LOOKUP_SQL checks it
    try:
        outcome = record_usage(event=event.to_input(), actor=Actor.api_key(key), api_key=key)
    except ApiKeyNotUsable:
        return revoked(request)
    except UsageError as exc:
        return error_response(exc, prefix=("body", "event"))
    return json_response(200, usage_out(outcome))


@router.post(
    "/usage/batch",
    response=BATCH_RESPONSES,
    openapi_extra=documented(BATCH_RESPONSES),
    tags=["usage"],
    summary="Send up to 1,000 usage events",
)
def post_usage_batch(request: HttpRequest, batch: UsageBatchIn) -> Any:
    """Each event is validated, rated and drawn down on its own: valid events are
    booked, invalid or refused ones are reported in their own result (with the
    status they would have had alone: 402, 409, 422). The response is 200 with
    one result per event, in order; only a batch that is itself invalid (empty,
    too big) answers 422 and books nothing."""
    limit = settings.USAGE_BATCH_MAX_EVENTS
    if not batch.events or len(batch.events) > limit:
        api_key_of(request)
        message = (
            "send at least one event."
            if not batch.events
            else f"a batch holds at most {limit} events, got {len(batch.events)}; "
            "split it into smaller batches."
        )
        return Status(422, {"detail": field_errors([FieldProblem("events", message)],
                                                    prefix=("body", "batch"))})  # fmt: skip
    results: list[dict[str, Any] | None] = [None] * len(batch.events)
    inputs: list[tuple[int, UsageInput]] = []
    for index, raw in enumerate(batch.events):
        if not isinstance(raw, dict):
            results[index] = failed(
                index, None, 422, [{"loc": [], "type": "object_type",
                                    "msg": "each event must be a JSON object (see UsageEventIn)."}]
            )  # fmt: skip
            continue
        try:
            parsed = UsageEventIn.model_validate(raw)
        except pydantic.ValidationError as exc:
            event_id = raw.get("event_id")
            results[index] = failed(
                index, event_id if isinstance(event_id, str) else None, 422, pydantic_errors(exc)
            )
            continue
        inputs.append((index, parsed.to_input()))
    # With events to book, the lookup statement checks the key; without, check it here.
    key = api_key_of(request, checked_by_view=bool(inputs))
    try:
        outcomes = (
            record_usage_batch(
                events=[event for _, event in inputs], actor=Actor.api_key(key), api_key=key
            )
            if inputs
            else []
        )
    except ApiKeyNotUsable:
        return revoked(request)
    for (index, event), outcome in zip(inputs, outcomes, strict=True):
        if isinstance(outcome, UsageOutcome):
            results[index] = {
                "index": index,
                "event_id": event.event_id,
                "ok": True,
                "status": 200,
                "usage": usage_out(outcome),
                "errors": [],
            }
        else:
            errors = (
                field_errors(outcome.problems)
                if isinstance(outcome, UsageRejected)
                else [{"loc": [], "msg": str(outcome), "type": type(outcome).__name__}]
            )
            results[index] = failed(index, event.event_id, outcome.status_code, errors)
    done = [r for r in results if r is not None]
    replayed = sum(1 for r in done if r["ok"] and r["usage"]["replayed"])
    booked = sum(1 for r in done if r["ok"]) - replayed
    return json_response(
        200,
        {
            "booked": booked,
            "replayed": replayed,
            "failed": sum(1 for r in done if not r["ok"]),
            "results": done,
        },
    )


@router.post(
    "/usage/{event_pk}/reverse",
    response=REVERSE_RESPONSES,
    openapi_extra=documented(REVERSE_RESPONSES),
    tags=["usage"],
    summary="Reverse a booked usage event",
)
def post_usage_reverse(request: HttpRequest, event_pk: EventPkPath) -> Any:
    """Undo the event's draw-down: its credit goes back to the grants it came from
    (with their original expiry) and any debt it created is cancelled. `event_pk`
    is the `id` from the usage answer. Reversing twice returns the first answer.
    The whole event is reversed: the request takes no body, and one is refused
    (422) rather than ignored (a `quantity` sent for a partial reversal would
    otherwise reverse everything)."""
    key = api_key_of(request)
    if sends_fields(request):
        return Status(422, {"detail": [{"loc": ["body"], "type": "extra_forbidden",
                                        "msg": "send no body: the whole event is reversed."}]})  # fmt: skip
    event = UsageEvent.objects.select_related("customer").filter(pk=event_pk).first()
    if event is None or not key.may_see(event.customer):
        return Status(404, {"detail": f"no usage event with id {event_pk}."})
    try:
        outcome = reverse_usage(event=event, actor=Actor.api_key(key))
    except UsageError as exc:
        return Status(exc.status_code, {"detail": str(exc)})
    return Status(200, {**outcome.response, "replayed": outcome.replayed})


def sends_fields(request: HttpRequest) -> bool:
    """Whether the request carries any input in its body: an empty body, an empty
    JSON object and an empty form carry none."""
    body = request.body.strip()
    if not body:
        return False
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return bool(request.POST or request.FILES)
    try:
        return json.loads(body) != {}
    except (ValueError, RecursionError):
        return True


# --- balances, grants, transactions --------------------------------------------------


def visible_customer(request: HttpRequest, account_number: str) -> Customer:
    """The customer, if it exists and this API key may see it; else 404."""
    key = api_key_of(request)
    customer = Customer.objects.filter(account_number=account_number).first()
    if customer is None or not key.may_see(customer):
        raise HttpError(404, f"no customer with account number {account_number!r}.")
    return customer


@router.get(
    "/customers/{account_number}/balance",
    response=BALANCE_RESPONSES,
    openapi_extra=documented(BALANCE_RESPONSES),
    tags=["balances"],
    summary="A customer's balance and available funds",
)
def get_balance(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[WalletFilter]
) -> Any:
    """Credit (restricted and not), debt, credit limit and available funds of the
    customer's wallet in `currency` (default: the customer's currency). A customer
    without a wallet yet has zero everywhere."""
    customer = visible_customer(request, account_number)
    currency = filters.currency or customer.currency
    wallet = Wallet.objects.filter(customer=customer, currency=currency).first()
    if wallet is None:
        wallet = Wallet(customer=customer, currency=currency)
        pending = 0
    else:
        pending = wallet.grants.filter(status=CreditGrant.Status.PENDING).count()
    return Status(
        200,
        {
            "customer": customer.account_number,
            "currency": currency,
            "credit_balance": wallet.credit_balance,
            "restricted_balance": wallet.restricted_balance,
            "unrestricted_balance": wallet.unrestricted_balance,
            "debt": wallet.debt,
            "credit_limit": wallet.effective_credit_limit(),
            "permanent_credit_limit": wallet.credit_limit,
            "temporary_credit_increase": wallet.temporary_credit_increase,
            "temporary_increase_valid_until": wallet.temporary_increase_valid_until,
            "available_funds": wallet.available_funds(),
            "pending_grants": pending,
        },
    )


@router.get(
    "/customers/{account_number}/grants",
    response=GRANTS_RESPONSES,
    openapi_extra=documented(GRANTS_RESPONSES),
    tags=["balances"],
    summary="A customer's credit grants, newest first",
)
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def get_grants(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[GrantFilter]
) -> QuerySet[CreditGrant]:
    """Every grant ("prepaid card") of the customer, newest first, with what is
    left, its expiry and its condition. Filter by `status` (pending = Requires
    Action) and `currency`. Paginated: follow `next` (`page_size` up to 200)."""
    customer = visible_customer(request, account_number)
    grants = CreditGrant.objects.filter(wallet__customer=customer).select_related("condition_item")
    if filters.status:
        grants = grants.filter(status=filters.status)
    if filters.currency:
        grants = grants.filter(currency=filters.currency)
    return grants


@router.get(
    "/customers/{account_number}/transactions",
    response=TRANSACTIONS_RESPONSES,
    openapi_extra=documented(TRANSACTIONS_RESPONSES),
    tags=["balances"],
    summary="A customer's ledger transactions, newest first",
)
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def get_transactions(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[WalletFilter]
) -> QuerySet[LedgerTransaction]:
    """The customer's wallet statement, newest first: usage, grants, activations,
    expiries, reversals, with the balance and debt right after each and the
    grants each drew from (+) or returned to (−). Paginated: follow `next`."""
    customer = visible_customer(request, account_number)
    transactions = LedgerTransaction.objects.filter(wallet__customer=customer).prefetch_related(
        Prefetch("lots", queryset=GrantConsumption.objects.order_by("id"))
    )
    if filters.currency:
        transactions = transactions.filter(currency=filters.currency)
    return transactions
