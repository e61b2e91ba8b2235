from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from billing.admin.kit import ReadableDecimals, confirm_action
from invoices.models import Invoice, InvoiceLine, InvoiceSeries
from invoices.pdf import render_invoice_pdf
from wallets.actors import Actor


class LineInline(ReadableDecimals, admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = ("description", "quantity", "unit_price", "amount")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VoidForm(forms.Form):
    reason = forms.CharField(
        max_length=500, help_text="Shown on the invoice; e.g. 'rated with the wrong price'."
    )


@admin.register(Invoice)
class InvoiceAdmin(ReadableDecimals, admin.ModelAdmin):
    list_display = (
        "display_number", "customer", "kind", "period_start", "period_end", "subtotal",
        "credits_applied", "amount_due", "currency", "status", "pdf_link",
    )  # fmt: skip
    list_filter = ("status", "kind", "currency")
    search_fields = ("customer__name", "customer__account_number", "number")
    list_select_related = ("customer", "series")
    date_hierarchy = "issued_at"
    readonly_fields = (
        "display_number", "kind", "customer", "currency", "period_start", "period_end", "subtotal",
        "credits_applied", "amount_due", "status", "issued_at", "voided_at", "void_reason", "created_by", "pdf_link",
    )  # fmt: skip
    fields = readonly_fields
    inlines = (LineInline,)
    actions = ("void_invoices",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="PDF")
    def pdf_link(self, obj: Invoice) -> str:
        return format_html(
            '<a href="{}">PDF</a>', reverse("admin:invoices_invoice_pdf", args=[obj.pk])
        )

    def get_urls(self) -> list:
        return [
            path(
                "<int:pk>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name="invoices_invoice_pdf",
            ),
            *super().get_urls(),
        ]

    def pdf_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        invoice = get_object_or_404(
            Invoice.objects.select_related("customer__partner", "series"), pk=pk
        )
        response = HttpResponse(render_invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{invoice.display_number}.pdf"'
        return response

    @admin.action(
        description="Void selected usage invoices (returns their credits)", permissions=["change"]
    )
    def void_invoices(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        from billing.errors import UsageError
        from billing.usage.invoicing import void_usage_invoice  # the flow sits above this app
        from invoices.services import InvoiceError
        from wallets.errors import WalletError

        actor = Actor.user(request.user)

        def perform(invoice: Invoice, data: dict[str, Any]) -> str:
            void_usage_invoice(invoice=invoice, reason=data["reason"], actor=actor)
            return "voided"

        open_ones = list(queryset.exclude(status="void").select_related("customer"))
        left = queryset.count() - len(open_ones)
        return confirm_action(
            self, request, action_name="void_invoices", title="Void invoices", destructive=True,
            question="Void these usage invoices? Every usage event on them is reversed: "
            "credits go back to the grants they came from, debt is cancelled. The invoice "
            "keeps its number, marked void.",
            items=[(i, str(i.customer)) for i in open_ones],
            skipped=f"{left} selected invoice(s) are already void." if left else "",
            run=perform, form_class=VoidForm, expected=(InvoiceError, WalletError, UsageError),
        )  # fmt: skip


@admin.register(InvoiceSeries)
class InvoiceSeriesAdmin(admin.ModelAdmin):
    list_display = ("code", "prefix", "next_number")
    readonly_fields = ("next_number",)
