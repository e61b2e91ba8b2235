"""Invoice PDFs, rendered by WeasyPrint from templates/invoices/."""

from __future__ import annotations

from django.conf import settings
from django.template.loader import render_to_string

from invoices.models import Invoice


def render_invoice_pdf(invoice: Invoice) -> bytes:
    from weasyprint import HTML  # heavy import, only when a PDF is asked for

    html = render_to_string(
        "invoices/invoice.html",
        {
            "invoice": invoice,
            "lines": invoice.lines.select_related("product_item"),
            "site_url": settings.SITE_URL,
        },
    )
    return HTML(string=html, base_url=str(settings.BASE_DIR)).write_pdf()
