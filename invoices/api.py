"""Top-up invoices and payments in the API (/api/v1/, mounted in config/api.py).

Create, send, read (with the PDF) and void top-up invoices; record payments and
allocate them; list a customer's payments (`?unallocated=true`: what is still
unallocated). Every call that moves money takes an `idempotency_key` (scoped to the
API key): sending it again returns the first answer and books nothing new.

Errors: 404 an unknown invoice, payment or customer (or one this API key may not
see); 409 an invoice or payment not in a state for the action (a draft, a void
invoice, credit already spent: the message says which); 422 bad input, one entry
per field (`detail[].loc` names it)."""

# No `from __future__ import annotations`: django-ninja reads these annotations at runtime.
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

import pydantic
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import Field, Path, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ConfigDict

from billing.api.auth import ApiKeyAuth, api_key_of
from billing.api.customers import visible_customer
from billing.api.responses import COMMON_ERRORS, documented
from billing.api.schemas import (
    PAGE_SIZE_MAX,
    PRINTABLE,
    AccountNumberPath,
    ErrorOut,
    IdCursorPagination,
    Money,
)
from invoices.errors import InvoiceError, InvoiceNotFound, InvoiceStateError
from invoices.models import Invoice, Payment, PaymentAllocation
from invoices.payments import allocate_payment, record_payment
from invoices.pdf import render_invoice_pdf
from invoices.topups import create_top_up_invoice, send_top_up_invoice, void_top_up_invoice
from wallets.actors import Actor
from wallets.errors import WalletError

router = Router(auth=ApiKeyAuth(), tags=["top-up invoices and payments"])

MAX_ID = 2**63 - 1
AMOUNT = r"^[0-9]{1,13}(\.[0-9]{1,2})?$"
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The id, as in `id` of an answer.")]
Amount = Annotated[
    str,
    Field(
        pattern=AMOUNT,
        description="A positive amount with at most 2 decimals, as text: '100.00'.",
        examples=["100.00"],
    ),
]
Key = Annotated[
    str,
    Field(
        min_length=1, max_length=100, pattern=PRINTABLE,
        description="Your key for this call: sending it again books nothing new and returns "
        "the same result. Use a new key for a new payment or allocation.",
    ),
]  # fmt: skip
Text = Annotated[str, Field(max_length=200, pattern=PRINTABLE)]

MONEY_ERRORS = {404: ErrorOut, 409: ErrorOut, 400: ErrorOut, 413: ErrorOut, 415: ErrorOut}


class Strict(pydantic.BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopUpIn(Strict):
    name: Text = Field(min_length=1, description="e.g. 'December top-up'")
    amount: Amount
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        default=None, description="Default: the customer's currency."
    )


class SendIn(Strict):
    email: bool = Field(default=True, description="False: mark as sent, no email.")


class VoidIn(Strict):
    reason: Text = Field(min_length=1)


class PaymentIn(Strict):
    amount: Amount
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    method: Literal["cash", "bank_transfer", "card", "direct_debit", "other"]
    received_on: date | None = Field(default=None, description="Default: today.")
    reference: Text = ""
    comment: Annotated[str, Field(max_length=1000, pattern=PRINTABLE)] = ""
    idempotency_key: Key

    @pydantic.field_validator("received_on", mode="before")
    @classmethod
    def iso_date_only(cls, value: Any) -> Any:
        if value is not None and not (
            isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value)
        ):
            raise ValueError("received_on must be a date as text, YYYY-MM-DD")
        return value


class AllocationIn(Strict):
    invoice_id: int = Field(ge=1, le=MAX_ID)
    amount: Amount | None = Field(
        default=None, description="Default: as much as the payment and the invoice allow."
    )
    idempotency_key: Key


class AllocationOut(Schema):
    id: int
    payment_id: int
    invoice_id: int
    invoice_number: str
    amount: Money
    top_up_grant_id: int | None
    created_at: datetime
    removed_at: datetime | None

    @staticmethod
    def resolve_invoice_number(obj: PaymentAllocation) -> str:
        return obj.invoice.display_number

    @staticmethod
    def resolve_top_up_grant_id(obj: PaymentAllocation) -> int | None:
        return obj.grant_id


class InvoiceOut(Schema):
    id: int
    number: str | None
    customer: str
    name: str
    status: str
    currency: str
    amount_due: Money
    amount_paid: Money
    open_amount: Money
    issued_at: datetime | None
    voided_at: datetime | None
    pdf_url: str
    allocations: list[AllocationOut]

    @staticmethod
    def resolve_number(obj: Invoice) -> str | None:
        return obj.display_number if obj.number is not None else None

    @staticmethod
    def resolve_customer(obj: Invoice) -> str:
        return obj.customer.account_number

    @staticmethod
    def resolve_pdf_url(obj: Invoice) -> str:
        return f"/api/v1/top-up-invoices/{obj.pk}/pdf"

    @staticmethod
    def resolve_allocations(obj: Invoice) -> list[PaymentAllocation]:
        return list(obj.allocations.select_related("invoice__series"))


class PaymentOut(Schema):
    id: int
    customer: str
    method: str
    amount: Money
    currency: str
    received_on: date
    reference: str
    comment: str
    allocated: Money
    unallocated: Money
    status: str
    allocations: list[AllocationOut]

    @staticmethod
    def resolve_customer(obj: Payment) -> str:
        return obj.customer.account_number

    @staticmethod
    def resolve_allocations(obj: Payment) -> list[PaymentAllocation]:
        return list(obj.allocations.select_related("invoice__series"))


class PaymentFilter(Schema):
    unallocated: bool = Field(default=False, description="Only payments with something left.")


INVOICE_RESPONSES = {200: InvoiceOut, **MONEY_ERRORS, **COMMON_ERRORS}
CREATED_INVOICE = {201: InvoiceOut, **MONEY_ERRORS, **COMMON_ERRORS}
PAYMENT_RESPONSES = {201: PaymentOut, **MONEY_ERRORS, **COMMON_ERRORS}
ALLOCATION_RESPONSES = {201: AllocationOut, **MONEY_ERRORS, **COMMON_ERRORS}
LIST_INVOICES = {200: list[InvoiceOut], 404: ErrorOut, **COMMON_ERRORS}
LIST_PAYMENTS = {200: list[PaymentOut], 404: ErrorOut, **COMMON_ERRORS}
PDF_RESPONSES = {200: None, 404: ErrorOut, **COMMON_ERRORS}


def refused(exc: Exception, *, field: str = "body") -> Status:
    """An InvoiceError (or a WalletError from below) as its answer: 404, 409, or 422
    naming the field."""
    if isinstance(exc, InvoiceNotFound):
        return Status(404, {"detail": str(exc)})
    if isinstance(exc, InvoiceStateError) or getattr(exc, "status_code", 400) == 409:
        return Status(409, {"detail": str(exc)})
    named = str(exc).split(" ", 1)[0]
    loc = ["body", named] if named.isidentifier() and named.islower() else ["body", field]
    return Status(422, {"detail": [{"loc": loc, "msg": str(exc), "type": "value_error"}]})


def actor_of(request: HttpRequest) -> tuple[Actor, str]:
    key = api_key_of(request)
    return Actor.api_key(key), f"api:{key.pk}:"


def visible_invoice(request: HttpRequest, pk: int) -> Invoice:
    invoice = (
        Invoice.objects.filter(pk=pk, kind=Invoice.Kind.TOP_UP)
        .select_related("customer__partner", "series")
        .first()
    )
    if invoice is None or not api_key_of(request).may_see(invoice.customer):
        raise HttpError(404, f"no top-up invoice {pk}.")
    return invoice


def visible_payment(request: HttpRequest, pk: int) -> Payment:
    payment = Payment.objects.filter(pk=pk).select_related("customer").first()
    if payment is None or not api_key_of(request).may_see(payment.customer):
        raise HttpError(404, f"no payment {pk}.")
    return payment


# --- invoices ----------------------------------------------------------------------


@router.post(
    "/customers/{account_number}/top-up-invoices", response=CREATED_INVOICE,
    openapi_extra=documented(CREATED_INVOICE), summary="Create a draft top-up invoice",
)  # fmt: skip
def create_invoice(request: HttpRequest, account_number: AccountNumberPath, body: TopUpIn) -> Any:
    """A draft: no number yet. Send it to number it and email its PDF."""
    customer = visible_customer(request, account_number)
    actor, _ = actor_of(request)
    try:
        invoice = create_top_up_invoice(
            customer=customer, name=body.name, amount=body.amount, currency=body.currency,
            actor=actor,
        )  # fmt: skip
    except InvoiceError as exc:
        return refused(exc)
    return Status(201, invoice)


@router.get(
    "/customers/{account_number}/top-up-invoices", response=LIST_INVOICES,
    openapi_extra=documented(LIST_INVOICES), summary="A customer's top-up invoices, newest first",
)  # fmt: skip
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def list_invoices(request: HttpRequest, account_number: AccountNumberPath) -> QuerySet[Invoice]:
    customer = visible_customer(request, account_number)
    return Invoice.objects.filter(customer=customer, kind=Invoice.Kind.TOP_UP).select_related(
        "customer", "series"
    )


@router.get(
    "/top-up-invoices/{invoice_id}", response=INVOICE_RESPONSES,
    openapi_extra=documented(INVOICE_RESPONSES), summary="One top-up invoice",
)  # fmt: skip
def get_invoice(request: HttpRequest, invoice_id: IdPath) -> Any:
    return Status(200, visible_invoice(request, invoice_id))


@router.get(
    "/top-up-invoices/{invoice_id}/pdf", response=PDF_RESPONSES,
    openapi_extra={
        **documented(PDF_RESPONSES),
        "responses": {
            **documented(PDF_RESPONSES)["responses"],
            200: {"description": "The PDF", "content": {"application/pdf": {}}},
        },
    },
    summary="A top-up invoice's PDF",
)  # fmt: skip
def get_invoice_pdf(request: HttpRequest, invoice_id: IdPath) -> HttpResponse:
    invoice = visible_invoice(request, invoice_id)
    response = HttpResponse(render_invoice_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{invoice.display_number}.pdf"'
    return response


@router.post(
    "/top-up-invoices/{invoice_id}/send", response=INVOICE_RESPONSES,
    openapi_extra=documented(INVOICE_RESPONSES), summary="Send (or mark sent) a draft",
)  # fmt: skip
def send_invoice(request: HttpRequest, invoice_id: IdPath, body: SendIn) -> Any:
    """Numbers the invoice (gapless) and emails its PDF (unless `email` is false);
    the customer's unallocated payments then pay it, oldest first. Sending a sent
    invoice again changes nothing."""
    invoice = visible_invoice(request, invoice_id)
    actor, _ = actor_of(request)
    try:
        invoice = send_top_up_invoice(invoice=invoice, actor=actor, email=body.email)
    except InvoiceError as exc:
        return refused(exc)
    return Status(200, visible_invoice(request, invoice.pk))


@router.post(
    "/top-up-invoices/{invoice_id}/void", response=INVOICE_RESPONSES,
    openapi_extra=documented(INVOICE_RESPONSES), summary="Void a top-up invoice",
)  # fmt: skip
def void_invoice(request: HttpRequest, invoice_id: IdPath, body: VoidIn) -> Any:
    """Only a draft, or a sent invoice with nothing allocated (no credit note)."""
    invoice = visible_invoice(request, invoice_id)
    actor, _ = actor_of(request)
    try:
        void_top_up_invoice(invoice=invoice, reason=body.reason, actor=actor)
    except InvoiceError as exc:
        return refused(exc, field="reason")
    return Status(200, visible_invoice(request, invoice.pk))


# --- payments ----------------------------------------------------------------------


@router.post(
    "/customers/{account_number}/payments", response=PAYMENT_RESPONSES,
    openapi_extra=documented(PAYMENT_RESPONSES), summary="Record a payment received",
)  # fmt: skip
def create_payment(request: HttpRequest, account_number: AccountNumberPath, body: PaymentIn) -> Any:
    """On the customer's balance at once (it settles debt first), unallocated until
    allocated to a sent top-up invoice."""
    customer = visible_customer(request, account_number)
    actor, scope = actor_of(request)
    try:
        payment = record_payment(
            customer=customer, amount=body.amount, currency=body.currency or customer.currency,
            method=body.method, received_on=body.received_on, reference=body.reference,
            comment=body.comment, actor=actor, idempotency_key=scope + body.idempotency_key,
        )  # fmt: skip
    except (InvoiceError, WalletError) as exc:
        return refused(exc)
    return Status(201, Payment.objects.select_related("customer").get(pk=payment.pk))


@router.get(
    "/customers/{account_number}/payments", response=LIST_PAYMENTS,
    openapi_extra=documented(LIST_PAYMENTS), summary="A customer's payments, newest first",
)  # fmt: skip
@paginate(IdCursorPagination, ordering=("-id",), page_size=50, max_page_size=PAGE_SIZE_MAX)
def list_payments(
    request: HttpRequest, account_number: AccountNumberPath, filters: Query[PaymentFilter]
) -> QuerySet[Payment]:
    """`unallocated=true`: only the payments with something left to allocate
    (PortaBilling's unallocated payments; their money is on the balance already)."""
    customer = visible_customer(request, account_number)
    payments = Payment.objects.filter(customer=customer).select_related("customer")
    return payments.unallocated() if filters.unallocated else payments


@router.post(
    "/payments/{payment_id}/allocations", response=ALLOCATION_RESPONSES,
    openapi_extra=documented(ALLOCATION_RESPONSES), summary="Allocate a payment to an invoice",
)  # fmt: skip
def create_allocation(request: HttpRequest, payment_id: IdPath, body: AllocationIn) -> Any:
    """Never more than the payment's unallocated amount nor the invoice's open
    amount; a draft is refused (409). The allocated part becomes the invoice's
    top-up credit; fully allocated → paid and provisioned."""
    payment = visible_payment(request, payment_id)
    invoice = visible_invoice(request, body.invoice_id)
    actor, scope = actor_of(request)
    try:
        allocation = allocate_payment(
            payment=payment, invoice=invoice, amount=body.amount, actor=actor,
            idempotency_key=scope + body.idempotency_key,
        )  # fmt: skip
    except (InvoiceError, WalletError) as exc:
        return refused(exc)
    return Status(
        201, PaymentAllocation.objects.select_related("invoice__series").get(pk=allocation.pk)
    )
