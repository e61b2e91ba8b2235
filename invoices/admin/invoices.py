"""Invoices (usage and top-up): create a top-up invoice, send, mark sent, email
again, record a payment, allocate, remove payments, void, PDF; invoice series."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from billing.admin.kit import ReadableDecimals, amount_text, confirm_action
from invoices.admin.forms import (
    EXPECTED,
    AllocateToInvoiceForm,
    AllocationInline,
    InvoicePaymentForm,
    LineInline,
    RemovePaymentForm,
    TopUpForm,
    VoidForm,
    form_key,
    service_form,
)
from invoices.errors import InvoiceError
from invoices.models import Invoice, InvoiceSeries, Payment
from invoices.payments import (
    allocate_payment,
    record_payment,
    remove_allocation,
    remove_payment,
)
from invoices.pdf import render_invoice_pdf
from invoices.topups import (
    create_top_up_invoice,
    email_invoice,
    send_top_up_invoice,
    void_top_up_invoice,
)
from wallets.actors import Actor


@admin.register(Invoice)
class InvoiceAdmin(ReadableDecimals, admin.ModelAdmin):
    list_display = (
        "display_number", "customer", "kind", "name", "issued_at", "amount_due", "amount_paid",
        "open_amount", "currency", "status", "pdf_link",
    )  # fmt: skip
    list_filter = ("status", "kind", "currency")
    search_fields = ("customer__name", "customer__account_number", "number", "name")
    list_select_related = ("customer", "series")
    date_hierarchy = "issued_at"
    readonly_fields = (
        "display_number", "kind", "name", "customer", "currency", "period_start", "period_end",
        "subtotal", "credits_applied", "amount_due", "amount_paid", "open_amount", "status",
        "issued_at", "emailed_at", "voided_at", "void_reason", "created_by", "pdf_link",
    )  # fmt: skip
    fields = readonly_fields
    inlines = (LineInline, AllocationInline)
    actions = (
        "send_invoices", "mark_sent", "resend_email", "record_payments", "allocate_payment",
        "remove_payments", "void_invoices",
    )  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("invoices.add_invoice")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is not None and obj.kind == Invoice.Kind.TOP_UP:
            usage_only = {"period_start", "period_end", "credits_applied"}
            return [f for f in fields if f not in usage_only]
        return [f for f in fields if f not in {"name", "amount_paid", "open_amount", "emailed_at"}]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="open", ordering="amount_due")
    def open_amount(self, obj: Invoice) -> str:
        return amount_text(obj.open_amount)

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

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """Create a top-up invoice (usage invoices come from closing billing periods)."""
        if not self.has_add_permission(request):
            return HttpResponse("You may not create invoices.", status=403)
        initial = {"customer": request.GET.get("customer")} if request.GET.get("customer") else {}
        form = TopUpForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                invoice = create_top_up_invoice(
                    customer=data["customer"], name=data["name"], amount=data["amount"],
                    currency=data["currency"] or None, actor=Actor.user(request.user),
                )  # fmt: skip
            except InvoiceError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, invoice, f"Top-up invoice for {invoice.amount_due}")
                self.message_user(
                    request, f"Created draft top-up invoice {invoice.display_number}; send it "
                    "(action 'Send') before allocating a payment.", messages.SUCCESS,
                )  # fmt: skip
                return HttpResponseRedirect(
                    reverse("admin:invoices_invoice_change", args=[invoice.pk])
                )
        return service_form(
            self, request, form, title="Create top-up invoice", submit="Create invoice",
            intro="A draft top-up invoice: send it to give it a number and email the PDF.",
        )  # fmt: skip

    def _top_ups(self, queryset: QuerySet, statuses: tuple[str, ...]) -> tuple[list, str]:
        chosen = list(queryset.select_related("customer", "series"))
        fit = [i for i in chosen if i.kind == Invoice.Kind.TOP_UP and i.status in statuses]
        left = len(chosen) - len(fit)
        wanted = ", ".join(Invoice.Status(s).label.lower() for s in statuses)
        return (
            fit,
            f"{left} selected invoice(s) skipped: only {wanted} top-up invoices." if left else "",
        )

    @admin.action(
        description="Send selected top-up invoices (number, PDF by email)", permissions=["change"]
    )
    def send_invoices(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._send(request, queryset, email=True)

    @admin.action(
        description="Mark selected top-up invoices as sent (no email)", permissions=["change"]
    )
    def mark_sent(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._send(request, queryset, email=False)

    def _send(
        self, request: HttpRequest, queryset: QuerySet, *, email: bool
    ) -> HttpResponse | None:
        actor = Actor.user(request.user)
        items, skipped = self._top_ups(queryset, (Invoice.Status.DRAFT,))

        def perform(invoice: Invoice, data: dict[str, Any]) -> str:
            sent = send_top_up_invoice(invoice=invoice, actor=actor, email=email)
            return f"sent as {sent.display_number}" if email else "marked sent"

        return confirm_action(
            self, request, action_name="send_invoices" if email else "mark_sent",
            title="Send invoices" if email else "Mark invoices sent",
            question="Send these drafts? Each takes the next number of the top-up series"
            + (" and its PDF is emailed to the customer." if email else "; no email is sent.")
            + " The customer's unallocated payments are applied to it, oldest first.",
            items=[(i, f"{i.customer} · {i.amount_due} {i.currency}") for i in items],
            skipped=skipped, run=perform, expected=EXPECTED,
        )  # fmt: skip

    @admin.action(description="Email the PDF again to the customer", permissions=["change"])
    def resend_email(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        items, skipped = self._top_ups(
            queryset, (Invoice.Status.SENT, Invoice.Status.PARTIALLY_PAID, Invoice.Status.PAID)
        )

        def perform(invoice: Invoice, data: dict[str, Any]) -> str:
            if not email_invoice(invoice_id=invoice.pk):
                raise InvoiceError(
                    f"not emailed: {invoice.customer} has no email address, or the mail "
                    "server refused it (see the log)."
                )
            return "emailed"

        return confirm_action(
            self, request, action_name="resend_email", title="Email invoices",
            question="Email each invoice's PDF to its customer again?",
            items=[(i, i.customer.email or "no email address") for i in items],
            skipped=skipped, run=perform, expected=EXPECTED, confirm_label="Yes, email",
        )  # fmt: skip

    @admin.action(description="Record a payment for selected invoices", permissions=["change"])
    def record_payments(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)
        items, skipped = self._top_ups(
            queryset, (Invoice.Status.SENT, Invoice.Status.PARTIALLY_PAID)
        )
        drafts = queryset.filter(status=Invoice.Status.DRAFT).count()
        if drafts:
            skipped += f" {drafts} draft(s): send or mark them sent before recording a payment."

        def perform(invoice: Invoice, data: dict[str, Any]) -> str:
            amount = data["amount"] or invoice.open_amount
            payment = record_payment(
                customer=invoice.customer, amount=amount, currency=invoice.currency,
                method=data["method"], received_on=data["received_on"],
                reference=data["reference"], comment=data["comment"], actor=actor,
                idempotency_key=f"{form_key(request)}:invoice:{invoice.pk}",
            )  # fmt: skip
            allocation = allocate_payment(
                payment=payment, invoice=invoice, actor=actor,
                amount=min(payment.unallocated, invoice.open_amount),
                idempotency_key=f"{form_key(request)}:payment:{payment.pk}:invoice:{invoice.pk}",
            )  # fmt: skip
            return f"paid {allocation.amount} by payment #{payment.pk}"

        return confirm_action(
            self, request, action_name="record_payments", title="Record payment",
            question="Record a payment received for each of these invoices and allocate it: "
            "the customer's balance goes up by the amount (top-up credit).",
            items=[(i, f"{i.customer} · open {i.open_amount} {i.currency}") for i in items],
            skipped=skipped.strip(), run=perform, form_class=InvoicePaymentForm,
            expected=EXPECTED, confirm_label="Record and allocate",
        )  # fmt: skip

    @admin.action(description="Allocate an unallocated payment (Payment)", permissions=["change"])
    def allocate_payment(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)
        items, skipped = self._top_ups(
            queryset, (Invoice.Status.SENT, Invoice.Status.PARTIALLY_PAID)
        )
        drafts = queryset.filter(status=Invoice.Status.DRAFT).count()
        if drafts:
            skipped += f" {drafts} draft(s): a draft cannot take a payment; send it first."
        customers = {i.customer_id for i in items}
        waiting = Payment.objects.unallocated().filter(customer_id__in=customers)

        def note(invoice: Invoice) -> str:
            mine = [p for p in waiting if p.customer_id == invoice.customer_id]
            listed = "; ".join(
                f"#{p.pk}: {p.unallocated} {p.currency} unallocated ({p.get_method_display()}, "
                f"{p.received_on})" for p in mine
            )  # fmt: skip
            return f"open {invoice.open_amount} {invoice.currency} · payments: {listed or 'none unallocated'}"

        def perform(invoice: Invoice, data: dict[str, Any]) -> str:
            payment = Payment.objects.filter(
                pk=data["payment"], customer_id=invoice.customer_id
            ).first()
            if payment is None:
                raise InvoiceError(
                    f"payment #{data['payment']} is not one of {invoice.customer}'s payments."
                )
            allocation = allocate_payment(
                payment=payment, invoice=invoice, amount=data["amount"], actor=actor,
                idempotency_key=f"{form_key(request)}:payment:{payment.pk}:invoice:{invoice.pk}",
            )  # fmt: skip
            return f"allocated {allocation.amount} of payment #{payment.pk}"

        return confirm_action(
            self, request, action_name="allocate_payment", title="Allocate payment",
            question="Allocate one of the customer's unallocated payments to these invoices. "
            "Each allocation becomes top-up credit on the customer's balance; an invoice paid in "
            "full is marked paid and provisioned.",
            items=[(i, note(i)) for i in items], skipped=skipped.strip(), run=perform,
            form_class=AllocateToInvoiceForm, expected=EXPECTED, confirm_label="Allocate",
        )  # fmt: skip

    @admin.action(description="Remove payments from selected invoices", permissions=["change"])
    def remove_payments(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)
        items, skipped = self._top_ups(
            queryset, (Invoice.Status.PARTIALLY_PAID, Invoice.Status.PAID)
        )

        def perform(invoice: Invoice, data: dict[str, Any]) -> str:
            live = list(
                invoice.allocations.filter(removed_at__isnull=True).select_related("payment")
            )
            for allocation in live:
                if data["delete_payment"]:
                    remove_payment(payment=allocation.payment_id, actor=actor)
                else:
                    remove_allocation(allocation=allocation, actor=actor)
            return "payments deleted" if data["delete_payment"] else "payments back to unallocated"

        return confirm_action(
            self, request, action_name="remove_payments", title="Remove payments", destructive=True,
            question="Remove the payments allocated to these invoices? Allowed only while the "
            "top-up credit they provisioned is unspent: the credit is taken back, the invoice "
            "returns to awaiting payment.",
            items=[(i, f"{i.customer} · paid {i.amount_paid} {i.currency}") for i in items],
            skipped=skipped, run=perform, form_class=RemovePaymentForm, expected=EXPECTED,
        )  # fmt: skip

    @admin.action(description="Void selected invoices", permissions=["change"])
    def void_invoices(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        from billing.errors import UsageError
        from billing.usage.invoicing import void_usage_invoice  # the flow sits above this app

        actor = Actor.user(request.user)

        def perform(invoice: Invoice, data: dict[str, Any]) -> str:
            if invoice.kind == Invoice.Kind.TOP_UP:
                void_top_up_invoice(invoice=invoice, reason=data["reason"], actor=actor)
            else:
                void_usage_invoice(invoice=invoice, reason=data["reason"], actor=actor)
            return "voided"

        open_ones = list(queryset.exclude(status="void").select_related("customer", "series"))
        left = queryset.count() - len(open_ones)
        return confirm_action(
            self, request, action_name="void_invoices", title="Void invoices", destructive=True,
            question="Void these invoices? A usage invoice's events are reversed: credits go "
            "back to the grants they came from, debt is cancelled. A top-up invoice can be "
            "voided only while nothing is allocated to it (no credit note). The invoice keeps "
            "its number, marked void.",
            items=[(i, f"{i.customer} · {i.get_kind_display()} · {i.get_status_display()}") for i in open_ones],
            skipped=f"{left} selected invoice(s) are already void." if left else "",
            run=perform, form_class=VoidForm, expected=(*EXPECTED, UsageError),
        )  # fmt: skip


# --- payments ----------------------------------------------------------------------


@admin.register(InvoiceSeries)
class InvoiceSeriesAdmin(admin.ModelAdmin):
    list_display = ("code", "prefix", "next_number")
    readonly_fields = ("next_number",)
