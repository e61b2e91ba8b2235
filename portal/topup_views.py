"""Portal Documents: the customer's top-up invoices and payments (issue 16). Every
query is scoped to the signed-in customer; anyone else's document is a 404."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from billing.errors import BillingError
from billing.models import StripeCharge
from billing.stripe.gateway import stripe_enabled
from billing.stripe.invoices import OPEN_STATUSES, charge_in_flight, pay_invoice_by_card
from invoices.models import Invoice, Payment
from invoices.pdf import render_receipt_pdf
from portal.views import customer_required


@customer_required
def top_up_invoices(request: HttpRequest) -> HttpResponse:
    """Sent, paid and void top-up invoices (drafts are staff-only), newest first."""
    customer = request.customer  # type: ignore[attr-defined]
    rows = (
        Invoice.objects.filter(customer=customer, kind=Invoice.Kind.TOP_UP)
        .exclude(status=Invoice.Status.DRAFT)
        .select_related("series")
        .order_by("-issued_at", "-id")
    )
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    open_invoices = rows.filter(status__in=[Invoice.Status.SENT, Invoice.Status.PARTIALLY_PAID])
    to_pay: dict[str, Decimal] = {}
    for invoice in open_invoices:
        to_pay[invoice.currency] = to_pay.get(invoice.currency, Decimal(0)) + invoice.open_amount
    context = {
        "customer": customer,
        "page": page,
        "to_pay": sorted(to_pay.items()),
        "card_payments": stripe_enabled(),
    }
    return render(request, "portal/top_up_invoices.html", context)


@customer_required
def payments(request: HttpRequest) -> HttpResponse:
    """Payments received, with what each paid and what is still unallocated."""
    customer = request.customer  # type: ignore[attr-defined]
    rows = (
        Payment.objects.filter(customer=customer)
        .prefetch_related("allocations__invoice__series")
        .order_by("-received_on", "-id")
    )
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    unallocated: dict[str, Decimal] = {}
    for payment in Payment.objects.unallocated().filter(customer=customer):
        unallocated[payment.currency] = (
            unallocated.get(payment.currency, Decimal(0)) + payment.unallocated
        )
    context = {"customer": customer, "page": page, "unallocated": sorted(unallocated.items())}
    return render(request, "portal/payments.html", context)


@customer_required
def payment_receipt(request: HttpRequest, pk: int) -> HttpResponse:
    customer = request.customer  # type: ignore[attr-defined]
    payment = get_object_or_404(
        Payment.objects.select_related("customer__partner"), pk=pk, customer=customer
    )
    response = HttpResponse(render_receipt_pdf(payment), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="payment-{payment.pk}.pdf"'
    return response


# --- paying a top-up invoice by card (Stripe) ----------------------------------------


def _payable_invoice(customer: Any, pk: int) -> Invoice:
    """The signed-in customer's own sent top-up invoice, else 404 (drafts included)."""
    return get_object_or_404(
        Invoice.objects.select_related("series").exclude(status=Invoice.Status.DRAFT),
        pk=pk,
        customer=customer,
        kind=Invoice.Kind.TOP_UP,
    )


@require_http_methods(["GET", "POST"])
@customer_required
def pay_top_up_invoice(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: what will be charged to which saved card; POST: charge it. The money is
    booked when Stripe confirms (here at once, or by the webhook later)."""
    customer = request.customer  # type: ignore[attr-defined]
    invoice = _payable_invoice(customer, pk)
    back = redirect("portal:top_up_invoices")
    if not stripe_enabled():
        messages.error(request, "Card payments are not available; pay by bank transfer.")
        return back
    if request.method == "POST":
        try:
            charge = pay_invoice_by_card(
                customer=customer, invoice_id=invoice.pk, initiated_by=f"portal:{request.user}"
            )
        except Invoice.DoesNotExist:
            raise Http404("No such invoice.") from None
        except BillingError as exc:
            messages.error(request, str(exc))
            return back
        label = invoice.display_number
        if charge.status == StripeCharge.Status.SUCCEEDED:
            messages.success(
                request,
                f"Paid {charge.amount:.2f} {charge.currency} for invoice {label} by card. "
                "Your balance has gone up.",
            )
        elif charge.status == StripeCharge.Status.PENDING:
            messages.warning(
                request,
                f"Your card payment for invoice {label} is being processed; "
                "reload this page in a minute to see its result.",
            )
        else:
            reason = charge.failure_reason or "Stripe did not take the payment."
            messages.error(
                request,
                f"The card payment for invoice {label} did not go through: {reason} "
                "Nothing was charged; the invoice is still open.",
            )
        return back
    if invoice.status not in OPEN_STATUSES:
        messages.error(
            request,
            f"Invoice {invoice.display_number} is {invoice.get_status_display().lower()}: "
            "there is nothing to pay.",
        )
        return back
    card = customer.stripe_payment_methods.filter(is_default=True).first()
    context = {
        "customer": customer,
        "invoice": invoice,
        "card": card,
        "in_flight": charge_in_flight(invoice),
    }
    return render(request, "portal/pay_top_up_invoice.html", context)
