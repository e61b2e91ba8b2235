"""The forms, inlines and lookups the invoice and payment admins share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin.kit import ReadableDecimals
from billing.models import Customer
from invoices.errors import InvoiceError
from invoices.models import Invoice, InvoiceLine, Payment, PaymentAllocation
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
