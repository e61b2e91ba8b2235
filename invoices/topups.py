"""Top-up invoices (B3Networks): draft → sent (awaiting payment) → partially paid →
paid and provisioned, or void. Sending takes the gapless number under the series
lock, renders the PDF and emails it; payments are allocated in `invoices.payments`."""

from __future__ import annotations

import logging
from decimal import Decimal

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone

from billing.models import Customer
from invoices.errors import InvoiceError, InvoiceNotFound, InvoiceStateError
from invoices.models import Invoice, InvoiceLine, PaymentAllocation
from invoices.payments import (
    OPEN_TOP_UP,
    _allocate,
    _unallocated_payments,
    customer_wallet,
    document_amount,
    document_text,
)
from invoices.services import mark_void, series_for, take_number
from wallets.actors import Actor

log = logging.getLogger(__name__)


def create_top_up_invoice(
    *,
    customer: Customer,
    name: str,
    amount: Decimal | str,
    currency: str | None = None,
    actor: Actor,
) -> Invoice:
    """B3: "Create Invoice → Topup": name, billing to, top-up amount. A draft, with
    one line; no number until it is sent."""
    name = document_text(name, what="name", max_length=200, required=True)
    amount = document_amount(amount, what="amount")
    wallet = customer_wallet(customer, currency or customer.currency)
    with transaction.atomic(durable=True):
        invoice = Invoice.objects.create(
            kind=Invoice.Kind.TOP_UP, name=name, customer=customer, currency=wallet.currency,
            series=series_for(Invoice.Kind.TOP_UP), subtotal=amount, amount_due=amount,
            created_by=actor.label,
        )  # fmt: skip
        InvoiceLine.objects.create(
            invoice=invoice, description=f"Top-up of prepaid balance: {name}"[:300],
            quantity=Decimal(1), unit_price=amount, amount=amount,
        )  # fmt: skip
        return invoice


def _lock(invoice: Invoice | int) -> Invoice:
    pk = invoice.pk if isinstance(invoice, Invoice) else invoice
    found = (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("series", "customer")
        .filter(pk=pk)
    )
    locked = found.first()
    if locked is None:
        raise InvoiceNotFound(f"invoice {pk} does not exist.")
    if locked.kind != Invoice.Kind.TOP_UP:
        raise InvoiceError(f"invoice {locked.display_number} is a usage invoice, not a top-up.")
    return locked


def send_top_up_invoice(
    *, invoice: Invoice | int, actor: Actor, email: bool = True, apply_unallocated: bool = True
) -> Invoice:
    """Send (or, with `email=False`, mark as sent) a draft: it takes the next number
    of the top-up series under the series lock (two sends at once never share or
    skip one), and once committed its PDF is emailed to the customer. The
    customer's unallocated payments then pay it, oldest first (PortaBilling). A
    retry of a sent invoice changes nothing and sends no second email."""
    pk = invoice.pk if isinstance(invoice, Invoice) else invoice
    with transaction.atomic(durable=True):
        # payments before the invoice, the order every allocation locks them in
        seen = Invoice.objects.filter(pk=pk).values("customer_id", "currency").first()
        if seen is not None and apply_unallocated:
            list(
                _unallocated_payments(seen["customer_id"], seen["currency"])
                .select_for_update()
                .values_list("pk", flat=True)
            )
        locked = _lock(pk)
        if locked.status == Invoice.Status.VOID:
            raise InvoiceStateError(f"invoice {locked.display_number} is void; it cannot be sent.")
        if locked.status != Invoice.Status.DRAFT:
            return locked
        locked.number = take_number(locked)
        locked.status = Invoice.Status.SENT
        locked.issued_at = timezone.now()
        locked.save(update_fields=["number", "status", "issued_at"])
        if apply_unallocated:
            for payment in _unallocated_payments(locked.customer, locked.currency):
                if locked.open_amount <= 0:
                    break
                _allocate(
                    payment=payment, invoice=locked, amount=None, actor=actor,
                    key=f"send:{locked.pk}:payment:{payment.pk}",
                )  # fmt: skip
                locked.refresh_from_db()
        if email:
            pk = locked.pk
            transaction.on_commit(lambda: email_invoice(invoice_id=pk))
        return locked


def email_invoice(*, invoice_id: int) -> bool:
    """Email the invoice's PDF to the customer (after the send committed). Returns
    False when the customer has no email address or the mail could not be sent;
    the invoice stays sent either way, and staff can resend from the admin."""
    from invoices.pdf import render_invoice_pdf

    invoice = Invoice.objects.select_related("customer__partner", "series").get(pk=invoice_id)
    if not invoice.customer.email:
        log.warning("invoice %s not emailed: customer has no email", invoice.display_number)
        return False
    message = EmailMessage(
        subject=f"Invoice {invoice.display_number}: top-up of {invoice.amount_due} {invoice.currency}",
        body=(
            f"Dear {invoice.customer.name},\n\nPlease find attached invoice "
            f"{invoice.display_number} ({invoice.name}) for a top-up of your prepaid balance "
            f"of {invoice.amount_due} {invoice.currency}. Your balance is topped up as soon as "
            f"your payment is received.\n\nYou can also see it at {settings.SITE_URL}/portal/documents/\n"
        ),
        to=[invoice.customer.email],
    )
    message.attach(f"{invoice.display_number}.pdf", render_invoice_pdf(invoice), "application/pdf")
    try:
        message.send()
    except Exception:  # the mail server is not ours to crash on
        log.exception("invoice %s: email failed", invoice.display_number)
        return False
    Invoice.objects.filter(pk=invoice_id).update(emailed_at=timezone.now())
    return True


def void_top_up_invoice(*, invoice: Invoice | int, reason: str, actor: Actor) -> Invoice:
    """B3: a top-up invoice can be voided as long as it is a draft or awaiting
    payment with nothing allocated; no credit note. Otherwise refused with why."""
    reason = document_text(reason, what="reason", max_length=500, required=True)
    with transaction.atomic(durable=True):
        locked = _lock(invoice)
        label = locked.display_number
        if locked.status == Invoice.Status.VOID:
            raise InvoiceStateError(f"invoice {label} is already void.")
        live = PaymentAllocation.objects.filter(invoice=locked, removed_at__isnull=True)
        if locked.status not in (Invoice.Status.DRAFT, *OPEN_TOP_UP) or live.exists():
            raise InvoiceStateError(
                f"invoice {label} has {locked.amount_paid} {locked.currency} of payments allocated "
                f"({locked.get_status_display().lower()}); remove those payments first, while "
                "their credit is unspent. A provisioned top-up is not voided."
            )
        return mark_void(invoice=locked, reason=reason, actor=actor)
