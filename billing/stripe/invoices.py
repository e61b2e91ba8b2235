"""Paying a top-up invoice by card (issue 16): the customer, in the portal, pays an
open top-up invoice with a card saved at Stripe.

The shape is the "charge now" flow's: a ``StripeCharge`` row (purpose
``top_up_invoice``, ``invoice_id``) is committed before Stripe is called, then
``billing.stripe.services.attempt_charge`` asks for the money with the charge's
idempotency key. What a succeeded charge means for the money is in
``billing.stripe.effects.on_charge_succeeded``: a card ``Payment`` recorded and
allocated to the invoice through ``invoices.services``, with keys derived from the
PaymentIntent, so the synchronous answer, the webhook and the sweep provision it
once between them.

There is no card-entry form here: the portal offers the customer's saved cards
(staff save one from the admin's Stripe actions).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from billing.errors import BillingError, NoPaymentMethod
from billing.models import Customer, StripeCharge
from billing.money import to_stripe_amount
from billing.stripe.services import attempt_charge, require_stripe
from invoices.models import Invoice

OPEN_STATUSES = (Invoice.Status.SENT, Invoice.Status.PARTIALLY_PAID)


class InvoiceNotPayable(BillingError):
    """The invoice cannot be paid by card now; the message says why."""


def charge_in_flight(invoice: Invoice) -> StripeCharge | None:
    """A card payment of this invoice that Stripe has not finished, or whose
    payment is not recorded on the invoice yet."""
    return (
        StripeCharge.objects.filter(invoice_id=invoice.pk)
        .filter(status=StripeCharge.Status.PENDING)
        .first()
        or StripeCharge.objects.filter(
            invoice_id=invoice.pk,
            status=StripeCharge.Status.SUCCEEDED,
            effects_applied_at__isnull=True,
        ).first()
    )


def pay_invoice_by_card(*, customer: Customer, invoice_id: int, initiated_by: str) -> StripeCharge:
    """Charge the customer's default saved card for what is open on their top-up
    invoice. Only the customer's own sent or partially paid invoice; one card
    payment of an invoice at a time (the invoice row is locked while the charge
    row is written, and a partial unique index backs it). Returns the charge in its
    new state (succeeded, failed with Stripe's reason, or pending)."""
    require_stripe()
    if not customer.stripe_customer_id:
        raise NoPaymentMethod(
            "No card is saved for your account yet. Ask us to add one (we will send you a "
            "secure Stripe link), or pay by bank transfer with the invoice number as reference."
        )
    method = customer.stripe_payment_methods.filter(is_default=True).first()
    if method is None:
        raise NoPaymentMethod(
            "No default card is saved for your account. Ask us to add one, or pay by bank "
            "transfer with the invoice number as reference."
        )
    try:
        with transaction.atomic(durable=True):
            invoice = (
                Invoice.objects.select_for_update()
                .filter(pk=invoice_id, customer=customer, kind=Invoice.Kind.TOP_UP)
                .exclude(status=Invoice.Status.DRAFT)
                .first()
            )
            if invoice is None:
                raise Invoice.DoesNotExist(f"top-up invoice {invoice_id} is not yours")
            label = invoice.display_number
            if invoice.status not in OPEN_STATUSES or invoice.open_amount <= 0:
                raise InvoiceNotPayable(
                    f"Invoice {label} is {invoice.get_status_display().lower()}: "
                    "there is nothing to pay."
                )
            if charge_in_flight(invoice) is not None:
                raise InvoiceNotPayable(
                    f"A card payment of invoice {label} is already in progress; "
                    "reload this page in a minute to see its result."
                )
            amount = invoice.open_amount
            to_stripe_amount(amount, invoice.currency)
            charge = StripeCharge.objects.create(
                customer=customer,
                amount=amount,
                currency=invoice.currency,
                purpose=StripeCharge.Purpose.TOP_UP_INVOICE,
                invoice_id=invoice.pk,
                description=f"Top-up invoice {label}"[:255],
                stripe_customer_id=customer.stripe_customer_id,
                payment_method_id=method.stripe_payment_method_id,
                initiated_by=initiated_by,
            )
    except IntegrityError:  # the partial unique index: a twin request won
        raise InvoiceNotPayable(
            "A card payment of this invoice is already in progress; reload this page in a "
            "minute to see its result."
        ) from None
    return attempt_charge(charge_id=charge.pk)
