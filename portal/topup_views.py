"""Portal Documents: the customer's top-up invoices and payments (issue 16). Every
query is scoped to the signed-in customer; anyone else's document is a 404."""

from __future__ import annotations

from decimal import Decimal

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

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
    context = {"customer": customer, "page": page, "to_pay": sorted(to_pay.items())}
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
