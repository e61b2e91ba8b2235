"""Invoice and payment-receipt PDFs, rendered by WeasyPrint from one template family
in templates/invoices/ (document_base.html: seller, customer, number, dates)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.template.loader import render_to_string

from invoices.models import Invoice, Payment


def _seller() -> dict[str, str]:
    return {
        "name": settings.INVOICE_SELLER_NAME,
        "address": settings.INVOICE_SELLER_ADDRESS,
        "email": settings.DEFAULT_FROM_EMAIL,
    }


def _render(template: str, context: dict[str, Any]) -> bytes:
    from weasyprint import HTML  # heavy import, only when a PDF is asked for

    html = render_to_string(
        template, {**context, "seller": _seller(), "site_url": settings.SITE_URL}
    )
    return HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()


def render_invoice_pdf(invoice: Invoice) -> bytes:
    return _render(
        "invoices/invoice.html",
        {
            "invoice": invoice,
            "customer": invoice.customer,
            "lines": invoice.lines.select_related("product_item"),
            "payments": invoice.allocations.filter(removed_at__isnull=True).select_related(
                "payment"
            ),
        },
    )


def render_receipt_pdf(payment: Payment) -> bytes:
    return _render(
        "invoices/receipt.html",
        {
            "payment": payment,
            "customer": payment.customer,
            "allocations": payment.allocations.filter(removed_at__isnull=True).select_related(
                "invoice__series"
            ),
        },
    )
