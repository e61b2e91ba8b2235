"""Subscriptions and automatic top-up in the API (/api/v1/, mounted in config/api.py).

Same rules as the rest of the API (billing.api): bearer keys, a partner's key sees
only its customers (others are 404), unknown fields are refused (422), errors are
JSON `{"detail": ...}`. Status changes are visible here to other systems: each
subscription carries its status, the hold, the reason and its status history.
"""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from django.http import HttpRequest
from ninja import Field, Path, Router, Schema, Status
from pydantic import ConfigDict

from billing.api.auth import ApiKeyAuth, api_key_of
from billing.api.customers import visible_customer
from billing.api.responses import BODY_ERRORS, COMMON_ERRORS, documented
from billing.api.schemas import MAX_ID, PRINTABLE, AccountNumberPath, ErrorOut, Money
from billing.models.subscriptions import AutoTopUp, PrepaidSubscription
from billing.subscriptions import services, topup
from billing.subscriptions.errors import SubscriptionError
from wallets import services as wallet_services
from wallets.actors import Actor

router = Router(auth=ApiKeyAuth(), tags=["subscriptions"])

SubscriptionPk = Annotated[
    int, Path(ge=1, le=MAX_ID, description="The subscription's `id` (from the list).")
]


class StatusChangeOut(Schema):
    old_status: str
    new_status: str
    reason: str
    actor: str
    changed_at: datetime


class SubscriptionOut(Schema):
    id: int
    customer: str
    name: str
    services: list[str]
    status: str = Field(description="active, deactivated or cancelled.")
    hold: str = Field(
        description="Why a deactivated subscription is on hold: `funds` (the wallet could "
        "not pay the upcoming period; reactivated as soon as it can) or `staff`; empty otherwise."
    )
    status_reason: str
    status_changed_at: datetime | None
    anchor_day: int
    currency: str
    next_billing_date: date | None = Field(description="None while not active.")
    next_period_fee: Money
    history: list[StatusChangeOut] = Field(description="The last 20 status changes, newest first.")


class ReasonIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(
        min_length=1, max_length=500, pattern=PRINTABLE,
        description="Why: kept in the status history.", examples=["Customer asked to pause"],
    )  # fmt: skip


# Amounts as text, exact: up to 9 digits and 2 decimals ("20", "20.50").
AMOUNT_TEXT = r"^[0-9]{1,9}(\.[0-9]{1,2})?$"
AmountIn = Annotated[
    str,
    pydantic.Field(
        pattern=AMOUNT_TEXT, description='An amount as text, e.g. "20.00" (at most 2 decimals).'
    ),
]


class AutoTopUpIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    threshold: AmountIn = Field(description="Charge when available funds fall below this.")
    amount: AmountIn = Field(description="What to charge (at least 0.50).")
    target: AmountIn | None = Field(
        default=None, description="Optional: charge the shortfall up to this when larger."
    )
    daily_max_count: int = Field(default=3, ge=1, le=50)
    daily_max_amount: AmountIn
    max_declines: int = Field(default=3, ge=1, le=10)


class AttemptOut(Schema):
    created_at: datetime
    crossing: int
    try_number: int
    amount: Money
    outcome: str
    reason: str


class AutoTopUpOut(Schema):
    customer: str
    currency: str
    enabled: bool
    state: str = Field(description="on, off or paused (after declines, until the card is updated).")
    paused_reason: str
    threshold: Money
    amount: Money
    target: Money | None
    daily_max_count: int
    daily_max_amount: Money
    max_declines: int
    declines: int
    next_attempt_at: datetime | None
    attempts: list[AttemptOut] = Field(description="The last 20 attempts, newest first.")


LIST_RESPONSES = {200: list[SubscriptionOut], 404: ErrorOut, **COMMON_ERRORS}
ONE_RESPONSES = {200: SubscriptionOut, 404: ErrorOut, **COMMON_ERRORS}
CHANGE_RESPONSES = {200: SubscriptionOut, 404: ErrorOut, 409: ErrorOut, **COMMON_ERRORS,
                    **BODY_ERRORS}  # fmt: skip
TOPUP_RESPONSES = {200: AutoTopUpOut, 404: ErrorOut, **COMMON_ERRORS}
TOPUP_PUT_RESPONSES = {200: AutoTopUpOut, 404: ErrorOut, **COMMON_ERRORS, **BODY_ERRORS}


def subscription_out(sub: PrepaidSubscription) -> dict[str, Any]:
    return {
        "id": sub.pk, "customer": sub.customer.account_number, "name": sub.name,
        "services": [s.name for s in sub.services.all()], "status": sub.status,
        "hold": sub.hold, "status_reason": sub.status_reason,
        "status_changed_at": sub.status_changed_at, "anchor_day": sub.anchor_day,
        "currency": sub.wallet.currency, "next_billing_date": sub.next_billing_date,
        "next_period_fee": services.fee_for(sub, sub.period_from(sub.next_period_start)),
        "history": list(sub.status_changes.order_by("-changed_at", "-id")[:20].values(
            "old_status", "new_status", "reason", "actor", "changed_at")),
    }  # fmt: skip


def visible_subscription(request: HttpRequest, pk: int) -> PrepaidSubscription | None:
    key = api_key_of(request)
    sub = PrepaidSubscription.objects.select_related("customer", "wallet").filter(pk=pk).first()
    if sub is None or not key.may_see(sub.customer):
        return None
    return sub


@router.get(
    "/customers/{account_number}/subscriptions", response=LIST_RESPONSES,
    openapi_extra=documented(LIST_RESPONSES), summary="A customer's prepaid subscriptions",
)  # fmt: skip
def list_subscriptions(request: HttpRequest, account_number: AccountNumberPath) -> Any:
    """Every prepaid subscription of the customer, newest first, with its status, why
    it is on hold, its next billing date and fee, and its recent status history."""
    customer = visible_customer(request, account_number)
    subs = (
        PrepaidSubscription.objects.filter(customer=customer)
        .select_related("customer", "wallet")
        .order_by("-id")[:200]
    )
    return Status(200, [subscription_out(s) for s in subs])


@router.get(
    "/subscriptions/{pk}", response=ONE_RESPONSES, openapi_extra=documented(ONE_RESPONSES),
    summary="One prepaid subscription",
)  # fmt: skip
def get_subscription(request: HttpRequest, pk: SubscriptionPk) -> Any:
    sub = visible_subscription(request, pk)
    if sub is None:
        return Status(404, {"detail": f"no subscription with id {pk}."})
    return Status(200, subscription_out(sub))


def _change(request: HttpRequest, pk: int, body: ReasonIn, service: Any) -> Any:
    sub = visible_subscription(request, pk)
    if sub is None:
        return Status(404, {"detail": f"no subscription with id {pk}."})
    try:
        changed = service(
            subscription=sub, reason=body.reason, actor=Actor.api_key(api_key_of(request))
        )
    except SubscriptionError as exc:
        return Status(409, {"detail": str(exc)})
    changed.refresh_from_db()
    return Status(200, subscription_out(changed))


@router.post(
    "/subscriptions/{pk}/deactivate", response=CHANGE_RESPONSES,
    openapi_extra=documented(CHANGE_RESPONSES), summary="Deactivate (put on hold by staff)",
)  # fmt: skip
def deactivate(request: HttpRequest, pk: SubscriptionPk, body: ReasonIn) -> Any:
    """An active subscription goes on hold (`hold: staff`): not billed, and not
    reactivated by money; 409 when it is not active."""
    return _change(request, pk, body, services.deactivate_subscription)


@router.post(
    "/subscriptions/{pk}/reactivate", response=CHANGE_RESPONSES,
    openapi_extra=documented(CHANGE_RESPONSES), summary="Reactivate and bill the current period",
)  # fmt: skip
def reactivate(request: HttpRequest, pk: SubscriptionPk, body: ReasonIn) -> Any:
    """A deactivated subscription is reactivated and its current period billed; 409
    (nothing changes) when it is not deactivated or the wallet cannot pay."""
    return _change(request, pk, body, services.reactivate_subscription)


def topup_out(settings: AutoTopUp) -> dict[str, Any]:
    return {
        "customer": settings.customer.account_number, "currency": settings.wallet.currency,
        "enabled": settings.enabled, "state": settings.state,
        "paused_reason": settings.paused_reason, "threshold": settings.threshold,
        "amount": settings.amount, "target": settings.target,
        "daily_max_count": settings.daily_max_count,
        "daily_max_amount": settings.daily_max_amount, "max_declines": settings.max_declines,
        "declines": settings.declines, "next_attempt_at": settings.next_attempt_at,
        "attempts": list(settings.attempts.order_by("-created_at", "-id")[:20].values(
            "created_at", "crossing", "try_number", "amount", "outcome", "reason")),
    }  # fmt: skip


@router.get(
    "/customers/{account_number}/auto-top-up", response=TOPUP_RESPONSES,
    openapi_extra=documented(TOPUP_RESPONSES), summary="Automatic top-up settings and attempts",
)  # fmt: skip
def get_auto_top_up(request: HttpRequest, account_number: AccountNumberPath) -> Any:
    """The automatic top-up of the customer's wallet in its own currency (404 when
    none is set), with its recent attempts and their outcomes."""
    customer = visible_customer(request, account_number)
    found = (
        AutoTopUp.objects.select_related("customer", "wallet")
        .filter(wallet__customer=customer, wallet__currency=customer.currency)
        .first()
    )
    if found is None:
        return Status(404, {"detail": f"no automatic top-up is set for {account_number}."})
    return Status(200, topup_out(found))


@router.put(
    "/customers/{account_number}/auto-top-up", response=TOPUP_PUT_RESPONSES,
    openapi_extra=documented(TOPUP_PUT_RESPONSES), summary="Set automatic top-up",
)  # fmt: skip
def put_auto_top_up(
    request: HttpRequest, account_number: AccountNumberPath, body: AutoTopUpIn
) -> Any:
    """Create or replace the settings; saving them also lifts a pause after declines.
    A rule broken between fields (target not above threshold, daily amount below one
    charge) is a 422 naming the field."""
    customer = visible_customer(request, account_number)
    wallet = wallet_services.open_wallet(customer=customer)
    try:
        fields = body.model_dump()
        for name in ("threshold", "amount", "target", "daily_max_amount"):
            if fields[name] is not None:
                fields[name] = Decimal(fields[name])  # the pattern made it a plain number
        saved = topup.configure_auto_top_up(
            wallet=wallet, actor=Actor.api_key(api_key_of(request)), **fields
        )
    except SubscriptionError as exc:
        field, _, message = str(exc).partition(": ")
        return Status(422, {"detail": [{"loc": ["body", "body", field], "msg": message or str(exc),
                                        "type": "value_error"}]})  # fmt: skip
    saved = AutoTopUp.objects.select_related("customer", "wallet").get(pk=saved.pk)
    return Status(200, topup_out(saved))
