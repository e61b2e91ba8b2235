"""Payments: record, allocate to invoices, apply oldest first, remove, receipt PDF;
the unallocated panel on the customer page."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from billing.admin.kit import amount_text, confirm_action
from billing.models import Customer
from invoices.admin.forms import (
    EXPECTED,
    AllocateFromPaymentForm,
    PaymentAllocationInline,
    RecordPaymentForm,
    form_key,
    invoice_by_number,
    service_form,
)
from invoices.errors import InvoiceError
from invoices.models import Payment
from invoices.payments import (
    allocate_payment,
    apply_unallocated,
    record_payment,
    remove_payment,
)
from invoices.pdf import render_receipt_pdf
from wallets.actors import Actor


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = (
        "__str__", "customer", "received_on", "method", "amount", "allocated", "unallocated_amount",
        "currency", "reference", "status", "receipt_link",
    )  # fmt: skip
    list_filter = ("status", "method", "currency", "received_on")
    search_fields = ("customer__name", "customer__account_number", "reference", "comment")
    list_select_related = ("customer",)
    date_hierarchy = "received_on"
    readonly_fields = (
        "customer", "method", "amount", "currency", "received_on", "reference", "comment",
        "allocated", "unallocated_amount", "status", "credit_grant_link", "created_at",
        "created_by", "removed_at", "removed_by", "receipt_link",
    )  # fmt: skip
    fields = readonly_fields
    inlines = (PaymentAllocationInline,)
    actions = ("allocate_to_invoice", "apply_to_open_invoices", "remove_payments")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("invoices.add_payment")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="unallocated")
    def unallocated_amount(self, obj: Payment) -> str:
        return amount_text(obj.unallocated)

    @admin.display(description="credit on account")
    def credit_grant_link(self, obj: Payment) -> str:
        if obj.credit_grant_id is None:
            return "—"
        url = reverse("admin:wallets_creditgrant_change", args=[obj.credit_grant_id])
        return format_html('<a href="{}">grant #{}</a>', url, obj.credit_grant_id)

    @admin.display(description="receipt")
    def receipt_link(self, obj: Payment) -> str:
        return format_html(
            '<a href="{}">PDF</a>', reverse("admin:invoices_payment_receipt", args=[obj.pk])
        )

    def get_urls(self) -> list:
        return [
            path(
                "<int:pk>/receipt/",
                self.admin_site.admin_view(self.receipt_view),
                name="invoices_payment_receipt",
            ),
            *super().get_urls(),
        ]

    def receipt_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        payment = get_object_or_404(Payment.objects.select_related("customer__partner"), pk=pk)
        response = HttpResponse(render_receipt_pdf(payment), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="payment-{payment.pk}.pdf"'
        return response

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """Finance app: add a payment to the customer's account (on the balance at once,
        unallocated until allocated to an invoice)."""
        if not self.has_add_permission(request):
            return HttpResponse("You may not record payments.", status=403)
        initial = {"customer": request.GET.get("customer")} if request.GET.get("customer") else {}
        form = RecordPaymentForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            customer = data["customer"]
            try:
                payment = record_payment(
                    customer=customer, amount=data["amount"],
                    currency=data["currency"] or customer.currency, method=data["method"],
                    received_on=data["received_on"], reference=data["reference"],
                    comment=data["comment"], actor=Actor.user(request.user),
                    idempotency_key=f"{form_key(request)}:customer:{customer.pk}",
                )  # fmt: skip
            except InvoiceError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, payment, f"Recorded {payment.amount} {payment.currency}")
                self.message_user(
                    request, f"Recorded {payment}: on {customer}'s balance, unallocated. "
                    "Allocate it to a sent top-up invoice with the action 'Allocate'.",
                    messages.SUCCESS,
                )  # fmt: skip
                return HttpResponseRedirect(
                    reverse("admin:invoices_payment_change", args=[payment.pk])
                )
        return service_form(
            self, request, form, title="Record payment", submit="Record payment",
            intro="Money received from a customer. It is on the customer's balance at once "
            "(settling any debt first); allocate it to top-up invoices afterwards.",
        )  # fmt: skip

    @admin.action(description="Allocate selected payments to an invoice", permissions=["change"])
    def allocate_to_invoice(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)
        chosen = list(queryset.select_related("customer"))
        items = [p for p in chosen if p.unallocated > 0]
        left = len(chosen) - len(items)

        def perform(payment: Payment, data: dict[str, Any]) -> str:
            invoice = invoice_by_number(data["invoice"], payment.customer_id)
            allocation = allocate_payment(
                payment=payment, invoice=invoice, amount=data["amount"], actor=actor,
                idempotency_key=f"{form_key(request)}:payment:{payment.pk}:invoice:{invoice.pk}",
            )  # fmt: skip
            return f"allocated {allocation.amount} to {invoice.display_number}"

        return confirm_action(
            self, request, action_name="allocate_to_invoice", title="Allocate payments",
            question="Allocate these payments to a sent top-up invoice of their customer: the "
            "allocated part becomes the invoice's top-up credit.",
            items=[(p, f"{p.customer} · {p.unallocated} {p.currency} unallocated") for p in items],
            skipped=f"{left} selected payment(s) have nothing unallocated." if left else "",
            run=perform, form_class=AllocateFromPaymentForm, expected=EXPECTED, confirm_label="Allocate",
        )  # fmt: skip

    @admin.action(
        description="Apply to the customer's open invoices, oldest first", permissions=["change"]
    )
    def apply_to_open_invoices(
        self, request: HttpRequest, queryset: QuerySet
    ) -> HttpResponse | None:
        actor = Actor.user(request.user)
        chosen = list(queryset.select_related("customer"))
        items = [p for p in chosen if p.unallocated > 0]

        def perform(payment: Payment, data: dict[str, Any]) -> str:
            made = apply_unallocated(
                customer=payment.customer, currency=payment.currency, actor=actor
            )
            return f"{len(made)} allocation(s)"

        return confirm_action(
            self, request, action_name="apply_to_open_invoices", title="Apply payments",
            question="Apply the customers' unallocated payments to their open top-up invoices, "
            "oldest payment to oldest invoice first.",
            items=[(p, f"{p.customer} · {p.unallocated} {p.currency} unallocated") for p in items],
            skipped="Nothing unallocated among the selected payments." if not items else "",
            run=perform, expected=EXPECTED, confirm_label="Apply",
        )  # fmt: skip

    @admin.action(description="Remove selected payments", permissions=["change"])
    def remove_payments(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)
        chosen = list(queryset.select_related("customer"))
        items = [p for p in chosen if p.status == Payment.Status.RECORDED]
        left = len(chosen) - len(items)

        def perform(payment: Payment, data: dict[str, Any]) -> str:
            remove_payment(payment=payment, actor=actor)
            return "removed"

        return confirm_action(
            self, request, action_name="remove_payments", title="Remove payments", destructive=True,
            question="Remove these payments? Their allocations are removed (invoices return to "
            "awaiting payment) and their credit leaves the balance. Refused for a payment any "
            "of whose credit was spent.",
            items=[(p, f"{p.customer} · {p.amount} {p.currency}, {p.allocated} allocated") for p in items],
            skipped=f"{left} selected payment(s) were already removed." if left else "",
            run=perform, expected=EXPECTED,
        )  # fmt: skip


def unallocated_panel(customer: Customer) -> str:
    """The customer's unallocated payments (PortaBilling's Balance & Credits panel)."""
    rows = format_html_join(
        "",
        '<tr><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td><td>{} {}</td></tr>',
        (
            (
                reverse("admin:invoices_payment_change", args=[p.pk]),
                p.pk,
                p.received_on,
                p.get_method_display(),
                amount_text(p.unallocated),
                p.currency,
            )  # fmt: skip
            for p in Payment.objects.unallocated().filter(customer=customer).order_by("received_on")
        ),
    )
    totals: dict[str, Decimal] = {}
    for p in Payment.objects.unallocated().filter(customer=customer):
        totals[p.currency] = totals.get(p.currency, Decimal(0)) + p.unallocated
    total = ", ".join(f"{amount_text(v)} {c}" for c, v in sorted(totals.items())) or "none"
    add = reverse("admin:invoices_payment_add") + f"?customer={customer.pk}"
    topup = reverse("admin:invoices_invoice_add") + f"?customer={customer.pk}"
    return format_html(
        "<p>Unallocated payments: <strong>{}</strong> (on the balance already)</p>"
        "<table>{}</table>"
        '<p><a class="button" href="{}">Record payment</a> <a class="button" href="{}">Create top-up invoice</a></p>',
        total, rows, add, topup,
    )  # fmt: skip
