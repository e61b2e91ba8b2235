"""Credit limits and transfers in the API (/api/v1/, mounted in config/api.py):
read and change the permanent limit, grant or end a temporary increase, the credit
limit history, and subscriber-to-subscriber transfers.

Every write carries an `idempotency_key` in its body: the same key again returns
the first answer and changes nothing; the same key with other values is a 409.
Errors have the shape of the rest of the API: a value the rules refuse (above the
maximum possible increase, a prepaid customer, a Valid Until in the past, a limit
below the debt...) is a 422 naming the field; 402 when the sender cannot pay a
transfer, 403 when transfers are not allowed, 404 an unknown customer."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import ConfigDict, model_validator

from billing.api.auth import ApiKeyAuth, api_key_of
from billing.api.customers import visible_customer
from billing.api.responses import BODY_ERRORS, COMMON_ERRORS, STATUS_TEXT, URL_TOO_LONG
from billing.api.schemas import (
    ACCOUNT_NUMBER,
    PAGE_SIZE_MAX,
    PRINTABLE,
    AccountNumberPath,
    ErrorOut,
    IdCursorPagination,
    Money,
    WalletFilter,
)
from billing.models import Customer
from wallets import errors, services
from wallets.actors import Actor
from wallets.models import CreditLimitChange, Wallet

router = Router(auth=ApiKeyAuth(), tags=["credit limits"])

AMOUNT_TEXT = r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,2})?$"
AmountText = Annotated[
    str,
    Field(
        pattern=AMOUNT_TEXT,
        description='An amount as text with at most 2 decimals, e.g. "250" or "99.50".',
        examples=["250"],
    ),
]
IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=PRINTABLE,
        description="Your key for this change: sending it again changes nothing and returns "
        "the first answer; the same key with other values is a 409.",
        examples=["limit-2026-12-02-001"],
    ),
]
Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*\S[^\x00-\x1f\x7f-\x9f]*$",
        description="Why: kept in the credit limit history.",
        examples=["Good payment record"],
    ),
]

STATUS = {**STATUS_TEXT}
STATUS[402] = "Insufficient funds: the sender's unrestricted credit cannot pay the transfer."
STATUS[403] = "Transfers are not allowed for the sender or the receiver."
STATUS[404] = "No such customer, or no wallet in that currency, for this API key."
STATUS[409] = "The idempotency key was used before for another request."
STATUS[422] = (
    "Bad input, one entry per field (`loc` names it): a wrong type or format, an unknown "
    "field; or a value the rules refuse: above the maximum possible increase, a "
    "percentage of a zero limit, a prepaid customer, Valid Until in the past, a limit "
    "below the debt."
)


def documented(responses: dict[int, Any]) -> dict[str, Any]:
    described = {code: {"description": STATUS[code]} for code in responses if code in STATUS}
    return {"responses": {**described, 414: URL_TOO_LONG}}


# --- schemas -------------------------------------------------------------------------


class MaximumIncreaseOut(Schema):
    amount: Money
    days: int
    source: str


class CreditLimitOut(Schema):
    customer: str
    currency: str
    balance_model: str
    permanent_credit_limit: Money
    temporary_credit_increase: Money = Field(description="In force now (0 once lapsed).")
    temporary_increase_valid_until: datetime | None
    effective_credit_limit: Money
    debt: Money
    over_limit: Money = Field(description="Debt above the effective limit (0 within it).")
    available_funds: Money
    maximum_increase: MaximumIncreaseOut | None = Field(
        description="The maximum possible temporary increase (postpaid customers only)."
    )


class LimitChangeOut(Schema):
    id: int
    kind: str
    changed_at: datetime
    actor: str
    currency: str
    old_limit: Money
    new_limit: Money
    old_temporary_increase: Money
    new_temporary_increase: Money
    valid_until: datetime | None
    reason: str

    @staticmethod
    def resolve_currency(change: CreditLimitChange) -> str:
        return change.wallet.currency


class ChangeOut(Schema):
    change: LimitChangeOut | None = Field(description="The history row; null: nothing changed.")
    credit_limit: CreditLimitOut


class PermanentLimitIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: AmountText
    reason: Reason
    idempotency_key: IdempotencyKey
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


class TemporaryIncreaseIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: AmountText | None = Field(default=None, description="Either this or `percent`.")
    percent: AmountText | None = Field(
        default=None, description='A percentage of a positive permanent limit, e.g. "25".'
    )
    valid_until: datetime = Field(
        description="When the increase reverts (ISO 8601 with a time zone); in the future, "
        "within the maximum possible increase's days."
    )
    reason: Reason
    idempotency_key: IdempotencyKey
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")

    @model_validator(mode="after")
    def one_size(self) -> "TemporaryIncreaseIn":
        if (self.amount is None) == (self.percent is None):
            raise ValueError("give either `amount` or `percent`, not both.")
        return self


class EndIncreaseIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason
    idempotency_key: IdempotencyKey
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


class TransferIn(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_customer: str = Field(pattern=ACCOUNT_NUMBER, examples=["A0000002"])
    amount: AmountText
    memo: str = Field(default="", max_length=200, pattern=PRINTABLE)
    idempotency_key: IdempotencyKey
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


class TransferOut(Schema):
    transaction_id: int
    from_customer: str
    to_customer: str
    amount: Money
    currency: str
    sender_available_funds: Money


READ = {200: CreditLimitOut, 404: ErrorOut, **COMMON_ERRORS}
WRITE = {200: ChangeOut, 404: ErrorOut, 409: ErrorOut, **COMMON_ERRORS, **BODY_ERRORS}
HISTORY = {200: list[LimitChangeOut], 404: ErrorOut, **COMMON_ERRORS}
TRANSFER = {
    200: TransferOut, 402: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut,
    **COMMON_ERRORS, **BODY_ERRORS,
}  # fmt: skip


# --- helpers -------------------------------------------------------------------------


def _wallet(customer: Customer, currency: str | None) -> Wallet:
    wallet = Wallet.objects.filter(
        customer=customer, currency=currency or customer.currency
    ).first()
    if wallet is None:
        from ninja.errors import HttpError

        raise HttpError(
            404, f"{customer.account_number} has no {currency or customer.currency} wallet."
        )
    return wallet


def limit_out(wallet: Wallet) -> dict[str, Any]:
    state = services.limit_state(wallet)
    customer = wallet.customer
    maximum = None if customer.is_prepaid else services.maximum_increase(customer)
    return {
        "customer": customer.account_number,
        "currency": wallet.currency,
        "balance_model": customer.balance_model,
        "permanent_credit_limit": state.permanent,
        "temporary_credit_increase": state.temporary,
        "temporary_increase_valid_until": state.valid_until,
        "effective_credit_limit": state.effective,
        "debt": state.debt,
        "over_limit": state.over_limit,
        "available_funds": wallet.available_funds(),
        "maximum_increase": maximum and {
            "amount": maximum.amount, "days": maximum.days, "source": maximum.source,
        },
    }  # fmt: skip


def refused(exc: errors.WalletError) -> Status:
    """A service's refusal in the API's error shape."""
    field = getattr(exc, "field", "")
    if isinstance(exc, errors.LimitRefused) or (exc.status_code == 400):
        loc = ["body", field] if field else ["body"]
        return Status(422, {"detail": [{"loc": loc, "msg": str(exc), "type": "value_error"}]})
    return Status(exc.status_code, {"detail": str(exc)})


def changed(change: CreditLimitChange | None, wallet: Wallet) -> Status:
    wallet.refresh_from_db()
    return Status(200, {"change": change, "credit_limit": limit_out(wallet)})


# --- endpoints -----------------------------------------------------------------------


@router.get(
    "/customers/{account_number}/credit-limit",
    response=READ,
    openapi_extra=documented(READ),
    summary="A customer's credit limit: permanent, temporary increase, in force now",
)
def get_credit_limit(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[WalletFilter]
) -> Any:
    """The permanent limit, the temporary increase in force and its Valid Until, the
    limit in force now, debt and how far over the limit it is, available funds, and
    the maximum possible increase (postpaid)."""
    customer = visible_customer(request, account_number)
    return Status(200, limit_out(_wallet(customer, filters.currency)))


@router.put(
    "/customers/{account_number}/credit-limit",
    response=WRITE,
    openapi_extra=documented(WRITE),
    summary="Change the permanent credit limit",
)
def put_credit_limit(
    request: HttpRequest, account_number: AccountNumberPath, body: PermanentLimitIn
) -> Any:
    """Set the permanent credit limit, with a reason (kept in the history). The
    same limit again changes nothing (`change` is null). A limit below the debt is
    a 422."""
    customer = visible_customer(request, account_number)
    wallet = _wallet(customer, body.currency)
    try:
        change = services.change_permanent_limit(
            wallet=wallet, limit=Decimal(body.limit), reason=body.reason,
            actor=Actor.api_key(api_key_of(request)),
            idempotency_key=f"api:{customer.pk}:{body.idempotency_key}",
        )  # fmt: skip
    except errors.WalletError as exc:
        return refused(exc)
    return changed(change, wallet)


@router.post(
    "/customers/{account_number}/credit-limit/temporary-increase",
    response=WRITE,
    openapi_extra=documented(WRITE),
    summary="Grant a temporary credit-limit increase (postpaid)",
)
def post_temporary_increase(
    request: HttpRequest, account_number: AccountNumberPath, body: TemporaryIncreaseIn
) -> Any:
    """Raise the limit until `valid_until`, by `amount` or by `percent` of a positive
    permanent limit, within the maximum possible increase (see GET credit-limit);
    it replaces an increase in force. It reverts exactly at `valid_until`."""
    customer = visible_customer(request, account_number)
    wallet = _wallet(customer, body.currency)
    try:
        change = services.grant_temporary_increase(
            wallet=wallet, valid_until=body.valid_until, reason=body.reason,
            amount=Decimal(body.amount) if body.amount is not None else None,
            percent=Decimal(body.percent) if body.percent is not None else None,
            actor=Actor.api_key(api_key_of(request)),
            idempotency_key=f"api:{customer.pk}:{body.idempotency_key}",
        )  # fmt: skip
    except errors.WalletError as exc:
        return refused(exc)
    return changed(change, wallet)


@router.post(
    "/customers/{account_number}/credit-limit/temporary-increase/end",
    response=WRITE,
    openapi_extra=documented(WRITE),
    summary="End the temporary increase in force now",
)
def post_end_increase(
    request: HttpRequest, account_number: AccountNumberPath, body: EndIncreaseIn
) -> Any:
    """End the temporary increase before its Valid Until (`change` is null when none
    is in force). Debt above the permanent limit stays and shows as `over_limit`."""
    customer = visible_customer(request, account_number)
    wallet = _wallet(customer, body.currency)
    try:
        change = services.end_temporary_increase(
            wallet=wallet, reason=body.reason, actor=Actor.api_key(api_key_of(request)),
            idempotency_key=f"api:{customer.pk}:{body.idempotency_key}",
        )  # fmt: skip
    except errors.WalletError as exc:
        return refused(exc)
    return changed(change, wallet)


@router.get(
    "/customers/{account_number}/credit-limit/history",
    response=HISTORY,
    openapi_extra=documented(HISTORY),
    summary="The credit limit history, newest first",
)
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def get_limit_history(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[WalletFilter]
) -> QuerySet[CreditLimitChange]:
    """Every change: permanent, temporary, ended early, reverted at Valid Until,
    maximum possible increase of the class; who, when, old and new, why."""
    customer = visible_customer(request, account_number)
    changes = CreditLimitChange.objects.filter(wallet__customer=customer).select_related("wallet")
    if filters.currency:
        changes = changes.filter(wallet__currency=filters.currency)
    return changes


@router.post(
    "/customers/{account_number}/transfers",
    response=TRANSFER,
    openapi_extra=documented(TRANSFER),
    summary="Transfer credit to another customer",
    tags=["transfers"],
)
def post_transfer(request: HttpRequest, account_number: AccountNumberPath, body: TransferIn) -> Any:
    """Move unrestricted credit in force from this customer to `to_customer`, in the
    same currency (PortaBilling's subscriber-to-subscriber transfer). Both must be
    allowed to transfer (their own policy, else their class's); the credit keeps its
    expiry and pays the receiver's debt first."""
    key = api_key_of(request)
    customer = visible_customer(request, account_number)
    receiver = Customer.objects.filter(account_number=body.to_customer).first()
    if receiver is None or not key.may_see(receiver) or receiver.pk == customer.pk:
        return Status(422, {"detail": [{
            "loc": ["body", "to_customer"], "type": "value_error",
            "msg": f"no other customer {body.to_customer!r} can receive this transfer.",
        }]})  # fmt: skip
    source = _wallet(customer, body.currency)
    target = Wallet.objects.filter(customer=receiver, currency=source.currency).first()
    if target is None:
        return Status(422, {"detail": [{
            "loc": ["body", "to_customer"], "type": "value_error",
            "msg": f"{receiver.account_number} has no {source.currency} wallet.",
        }]})  # fmt: skip
    try:
        tx = services.transfer(
            source=source, target=target, amount=Decimal(body.amount), memo=body.memo,
            actor=Actor.api_key(key), idempotency_key=f"api:{customer.pk}:{body.idempotency_key}",
        )  # fmt: skip
    except errors.WalletError as exc:
        return refused(exc)
    source.refresh_from_db()
    return Status(
        200,
        {
            "transaction_id": tx.pk,
            "from_customer": customer.account_number,
            "to_customer": receiver.account_number,
            "amount": tx.amount,
            "currency": source.currency,
            "sender_available_funds": source.available_funds(),
        },
    )
