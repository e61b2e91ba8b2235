"""Refill cards for partner systems (/api/v1/refill-cards/..., mounted in config/api.py):
redeem a code for a customer (with an idempotency key), read a card's status by its
serial, list series. A key restricted to a partner sees only that partner's
customers, cards and series (anything else answers 404).

A code that cannot be redeemed (unknown, used, expired, disabled, another partner's,
mistyped) always gets the same 422, so the answers reveal nothing about codes; after
REFILL_CARD_CUSTOMER_FAILURES failures the customer is locked out (429 with
Retry-After), as in the portal."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
from datetime import datetime
from typing import Annotated, Any

import pydantic
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Path, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict, field_validator

from billing.api.auth import ApiKeyAuth, api_key_of
from billing.api.responses import json_response
from billing.api.schemas import (
    ACCOUNT_NUMBER,
    PAGE_SIZE_MAX,
    PRINTABLE,
    ErrorOut,
    IdCursorPagination,
    Money,
    ValidationErrorOut,
)
from billing.models import ApiKey, Customer
from config.logins.lockout import client_ip
from refillcards import codes
from refillcards.errors import (
    CardRefused,
    IdempotencyConflict,
    RedemptionLocked,
    RefillCardsDisabled,
)
from refillcards.models import CardSeries, RedemptionAttempt, RefillCard
from refillcards.services import redeem_card
from wallets.actors import Actor

router = Router(auth=ApiKeyAuth(), tags=["refill cards"])


class RedeemIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        min_length=1,
        max_length=codes.MAX_INPUT,
        pattern=PRINTABLE,
        description="The code as printed (case, spaces and dashes do not matter).",
        examples=["NW-7K3M-Q9XF-2HDP-WT4RZ"],
    )
    customer: str = Field(
        pattern=ACCOUNT_NUMBER,
        description="The account number of the customer whose balance the card tops up.",
        examples=["A0000001"],
    )
    idempotency_key: str = Field(
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Your id for this redemption: sending it again (same code, same customer) "
        "books nothing and returns the first answer; with another code it is a 409.",
        examples=["shop-order-1234"],
    )

    @field_validator("idempotency_key", "code")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank.")
        return value


class RedeemOut(Schema):
    serial: str
    customer: str
    amount: Money
    currency: str
    grant_id: int
    payment_id: int | None
    credit_balance: Money
    available_funds: Money
    replayed: bool


class CardOut(Schema):
    serial: str
    series: int
    status: str = Field(description="active, used, disabled or expired.")
    amount: Money
    currency: str
    valid_until: datetime
    used_at: datetime | None
    used_by: str | None = Field(description="The customer's account number, once used.")


class SeriesOut(Schema):
    id: int
    prefix: str
    quantity: int
    generated: int
    used: int
    amount: Money
    currency: str
    partner: str
    valid_until: datetime
    status: str
    created_at: datetime

    @staticmethod
    def resolve_partner(obj: CardSeries) -> str:
        return obj.partner.name


def _described(responses: dict[int, Any], extra: dict[int, str]) -> dict[str, Any]:
    text = {
        400: "The body is not valid JSON.",
        401: "No API key, or an unknown or revoked one.",
        403: "Refill cards are disabled.",
        404: "No such customer or card for this API key.",
        409: "The idempotency key was used to redeem another card.",
        413: "The body is over the size limit.",
        415: "The body was not sent as `application/json`.",
        422: "Bad input (one entry per field), or a code that cannot be redeemed (the same "
        "answer for every such code).",
        429: "Too many codes that could not be redeemed: this customer (or address) is locked "
        "out for a while (Retry-After).",
        500: "An error on our side (logged).",
        **extra,
    }
    return {"responses": {code: {"description": text[code]} for code in responses if code in text}}


REDEEM_RESPONSES = {200: RedeemOut, 400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut,
                    409: ErrorOut, 413: ErrorOut, 415: ErrorOut, 422: ValidationErrorOut,
                    429: ErrorOut, 500: ErrorOut}  # fmt: skip
CARD_RESPONSES = {
    200: CardOut,
    401: ErrorOut,
    404: ErrorOut,
    422: ValidationErrorOut,
    500: ErrorOut,
}
SERIES_RESPONSES = {200: list[SeriesOut], 401: ErrorOut, 422: ValidationErrorOut, 500: ErrorOut}


def _customer(key: ApiKey, account_number: str) -> Customer:
    customer = (
        Customer.objects.select_related("partner").filter(account_number=account_number).first()
    )
    if customer is None or not key.may_see(customer):
        raise HttpError(404, f"no customer with account number {account_number!r}.")
    return customer


def _refused(message: str) -> Status:
    return Status(
        422,
        {"detail": [{"loc": ["body", "redemption", "code"], "msg": message, "type": "refused"}]},
    )


@router.post(
    "/refill-cards/redeem",
    response=REDEEM_RESPONSES,
    openapi_extra=_described(REDEEM_RESPONSES, {}),
    summary="Redeem a refill card for a customer",
)
def post_redeem(request: HttpRequest, redemption: RedeemIn) -> Any:
    """Credit the customer's balance with the card's value (a refill-card grant and a
    payment, method refill card) and mark the card used, in one transaction.
    Exactly one of simultaneous redemptions of a card succeeds."""
    key = api_key_of(request)
    customer = _customer(key, redemption.customer)
    try:
        result = redeem_card(
            code=redemption.code, customer=customer, actor=Actor.api_key(key),
            channel=RedemptionAttempt.Channel.API, client_ip=client_ip(request),
            idempotency_key=f"api:{key.pk}:{redemption.idempotency_key}",
        )  # fmt: skip
    except CardRefused as exc:
        return _refused(str(exc))
    except RedemptionLocked as exc:
        seconds = max(1, int((exc.until - timezone.now()).total_seconds()))
        response = json_response(429, {"detail": str(exc)})
        response["Retry-After"] = str(seconds)
        return response
    except RefillCardsDisabled as exc:
        return Status(403, {"detail": str(exc)})
    except IdempotencyConflict as exc:
        return Status(409, {"detail": str(exc)})
    wallet = result.wallet
    return Status(
        200,
        {
            "serial": result.card.serial,
            "customer": customer.account_number,
            "amount": result.grant.amount,
            "currency": wallet.currency,
            "grant_id": result.grant.pk,
            "payment_id": result.card.payment_id,
            "credit_balance": wallet.credit_balance,
            "available_funds": wallet.available_funds(),
            "replayed": result.replayed,
        },
    )


SerialPath = Annotated[
    str, Path(pattern=r"^[0-9]{1,10}-[0-9]{1,10}$", description="e.g. 0012-000045")
]


@router.get(
    "/refill-cards/cards/{serial}",
    response=CARD_RESPONSES,
    openapi_extra=_described(CARD_RESPONSES, {}),
    summary="A card's status by its serial number",
)
def get_card(request: HttpRequest, serial: SerialPath) -> Any:
    """Status, value and validity of one card (never its code)."""
    key = api_key_of(request)
    card = RefillCard.objects.select_related("series", "used_by").filter(serial=serial).first()
    if card is None or (key.partner_id is not None and card.series.partner_id != key.partner_id):
        raise HttpError(404, f"no card with serial {serial!r}.")
    used_by = card.used_by
    return Status(
        200,
        {
            "serial": card.serial,
            "series": card.series_id,
            "status": card.status,
            "amount": card.series.amount,
            "currency": card.series.currency,
            "valid_until": card.valid_until,
            "used_at": card.used_at,
            "used_by": used_by.account_number if used_by and key.may_see(used_by) else None,
        },
    )


@router.get(
    "/refill-cards/series",
    response=SERIES_RESPONSES,
    openapi_extra=_described(SERIES_RESPONSES, {}),
    summary="Refill card series, newest first",
)
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def get_series(request: HttpRequest) -> QuerySet[CardSeries]:
    """Every series this key may see (a partner's key: that partner's), with how many
    cards were generated and used. Paginated: follow `next`."""
    key = api_key_of(request)
    found = CardSeries.objects.select_related("partner").annotate(
        used=Count("cards", filter=Q(cards__status=RefillCard.Status.USED))
    )
    if key.partner_id is not None:
        found = found.filter(partner_id=key.partner_id)
    return found
