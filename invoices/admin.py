from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing.admin.kit import ReadableDecimals, amount_text, confirm_action
from billing.models import Customer
from invoices.errors import InvoiceError
from invoices.models import Invoice, InvoiceLine, InvoiceSeries, Payment, PaymentAllocation
from invoices.payments import (
    allocate_payment,
    apply_unallocated,
    record_payment,
    remove_allocation,
    remove_payment,
)
from invoices.pdf import render_invoice_pdf, render_receipt_pdf
from invoices.topups import (
    create_top_up_invoice,
    email_invoice,
    send_top_up_invoice,
    void_top_up_invoice,
)
from wallets.actors import Actor
from wallets.errors import WalletError

EXPECTED = (InvoiceError, WalletError)


def money_field(**kwargs: Any) -> forms.DecimalField:
    return forms.DecimalField(max_digits=15, decimal_places=2, min_value=Decimal("0.01"), **kwargs)


class LineInline(ReadableDecimals, admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = ("description", "quantity", "unit_price", "amount")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AllocationInline(admin.TabularInline):
    model = PaymentAllocation
    fk_name = "invoice"
    extra = 0
    can_delete = False
    verbose_name_plural = "payments allocated"
    fields = ("payment_link", "amount", "grant_link", "created_at", "created_by", "removed_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="payment")
    def payment_link(self, obj: PaymentAllocation) -> str:
        url = reverse("admin:invoices_payment_change", args=[obj.payment_id])
        return format_html('<a href="{}">{}</a>', url, obj.payment)

    @admin.display(description="top-up grant")
    def grant_link(self, obj: PaymentAllocation) -> str:
        if obj.grant_id is None:
            return "—"
        url = reverse("admin:wallets_creditgrant_change", args=[obj.grant_id])
        return format_html('<a href="{}">grant #{}</a>', url, obj.grant_id)


class PaymentAllocationInline(AllocationInline):
    fk_name = "payment"
    verbose_name_plural = "allocations"
    fields = ("invoice_link", "amount", "grant_link", "created_at", "created_by", "removed_at")
    readonly_fields = fields

    @admin.display(description="invoice")
    def invoice_link(self, obj: PaymentAllocation) -> str:
        url = reverse("admin:invoices_invoice_change", args=[obj.invoice_id])
        return format_html('<a href="{}">{}</a>', url, obj.invoice.display_number)


# --- forms -------------------------------------------------------------------------


class VoidForm(forms.Form):
    reason = forms.CharField(
        max_length=500, help_text="Shown on the invoice; e.g. 'rated with the wrong price'."
    )


class TopUpForm(forms.Form):
    """B3: Create Invoice → Topup: name, billing to, top-up amount."""

    name = forms.CharField(max_length=200, initial="Prepaid balance top-up")
    customer = forms.ModelChoiceField(queryset=Customer.objects.all(), label="Billing to")
    amount = money_field(label="Top-up amount")
    currency = forms.ChoiceField(
        choices=lambda: [("", "The customer's currency")] + [(c, c) for c in settings.CURRENCIES],
        required=False,
    )


class PaymentDetailsForm(forms.Form):
    method = forms.ChoiceField(choices=Payment.Method.choices, initial=Payment.Method.BANK_TRANSFER)
    received_on = forms.DateField(
        initial=timezone.localdate, help_text="YYYY-MM-DD, the day the money arrived."
    )
    reference = forms.CharField(max_length=200, required=False)
    comment = forms.CharField(max_length=1000, required=False, widget=forms.Textarea({"rows": 2}))


class RecordPaymentForm(PaymentDetailsForm):
    """Finance app: add a payment to the customer's account."""

    customer = forms.ModelChoiceField(queryset=Customer.objects.all())
    amount = money_field()
    currency = forms.ChoiceField(
        choices=lambda: [("", "The customer's currency")] + [(c, c) for c in settings.CURRENCIES],
        required=False,
    )
    field_order = ["customer", "amount", "currency", "method", "received_on", "reference"]


class InvoicePaymentForm(PaymentDetailsForm):
    """Record a payment for each selected invoice and allocate it at once."""

    amount = money_field(required=False, help_text="Empty: each invoice's open amount.")
    field_order = ["amount", "method", "received_on", "reference", "comment"]


class AllocateToInvoiceForm(forms.Form):
    payment = forms.IntegerField(
        min_value=1, max_value=2**62, label="Payment #",
        help_text="The number of one of the customer's unallocated payments (listed above).",
    )  # fmt: skip
    amount = money_field(
        required=False, help_text="Empty: as much as the payment and the invoice allow."
    )


class AllocateFromPaymentForm(forms.Form):
    invoice = forms.CharField(
        max_length=30, help_text="The invoice number, e.g. TOP-000012 (sent, not yet paid)."
    )
    amount = money_field(
        required=False, help_text="Empty: as much as the payment and the invoice allow."
    )


class RemovePaymentForm(forms.Form):
    delete_payment = forms.BooleanField(
        required=False,
        help_text="Also remove the payment itself (its unallocated credit leaves the balance). "
        "Unticked: the payment goes back to unallocated, still on the balance.",
    )


def form_key(request: HttpRequest) -> str:
    """One key per rendered confirmation form: submitting the same page twice (a
    double click, a retry) replays; a new page is a new payment or allocation."""
    import hashlib

    token = request.POST.get("csrfmiddlewaretoken", "")
    return f"admin:{request.user.pk}:{hashlib.sha256(token.encode()).hexdigest()[:24]}"


def invoice_by_number(text: str, customer_id: int) -> Invoice:
    text = text.strip().upper()
    prefix = text.rstrip("0123456789")
    digits = text[len(prefix) :]
    found = None
    if digits and len(digits) <= 9:
        found = Invoice.objects.filter(
            customer_id=customer_id, series__prefix=prefix, number=int(digits)
        ).first()
    if found is None:
        raise InvoiceError(f"no invoice {text!r} for this payment's customer.")
    return found


def service_form(
    admin_obj: admin.ModelAdmin, request: HttpRequest, form: forms.Form, *, title: str,
    submit: str, intro: str = "",
) -> TemplateResponse:  # fmt: skip
    context = {
        **admin_obj.admin_site.each_context(request), "title": title, "form": form,
        "opts": admin_obj.model._meta, "submit_label": submit, "intro": intro,
    }  # fmt: skip
    return TemplateResponse(request, "admin/invoices/service_form.html", context)


# --- invoices ----------------------------------------------------------------------


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


@admin.register(InvoiceSeries)
class InvoiceSeriesAdmin(admin.ModelAdmin):
    list_display = ("code", "prefix", "next_number")
    readonly_fields = ("next_number",)


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
