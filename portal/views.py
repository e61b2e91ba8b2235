"""Customer-facing pages. Every query is scoped to ``request.customer``."""

from functools import wraps
from typing import cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from billing.models import Customer, PortalUser
from invoices.models import Invoice
from invoices.pdf import render_invoice_pdf
from wallets import services
from wallets.models import LedgerTransaction, Notification


def customer_required(view):
    """Log in, then bind ``request.customer`` to the customer this login acts for."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = cast(User, request.user)  # login_required ran first
        access = PortalUser.objects.select_related("customer__partner").filter(user=user).first()
        if access is None:
            return render(request, "portal/no_access.html", status=403)
        request.customer = access.customer  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapper


@customer_required
def dashboard(request: HttpRequest) -> HttpResponse:
    customer = request.customer  # type: ignore[attr-defined]
    wallets = list(customer.wallets.order_by("currency"))
    for wallet in wallets:
        wallet.live_grants = wallet.grants.filter(status__in=["active", "pending"]).select_related(
            "condition_item"
        )
        wallet.recent = wallet.transactions.order_by("-id")[:10]
    # `now`: a credit not yet effective (or expired, not yet swept) is shown as such;
    # available funds leave it out (Wallet.available_funds).
    context = {"customer": customer, "wallets": wallets, "now": timezone.now()}
    return render(request, "portal/dashboard.html", context)


@customer_required
def transactions(request: HttpRequest) -> HttpResponse:
    customer = request.customer  # type: ignore[attr-defined]
    rows = LedgerTransaction.objects.filter(wallet__customer=customer).order_by("-id")
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(request, "portal/transactions.html", {"customer": customer, "page": page})


class AlertsForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = ["low_funds_thresholds", "credit_limit_warnings"]
        labels = {
            "low_funds_thresholds": "Warn me when my available funds fall below",
            "credit_limit_warnings": "Warn me when this share of my credit limit is in use",
        }
        help_texts = {
            "low_funds_thresholds": "Amounts separated by commas, e.g. 50, 20, 5. "
            "Leave empty for no warnings.",
            "credit_limit_warnings": "Percentages separated by commas, e.g. 80%, 90%, 100%.",
        }


@customer_required
def alerts(request: HttpRequest) -> HttpResponse:
    """The customer's own balance warnings: edit the thresholds, see what was sent."""
    customer = request.customer  # type: ignore[attr-defined]
    form = AlertsForm(request.POST or None, instance=customer)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            services.copy_warning_thresholds(customer)
        messages.success(request, "Your balance warnings are saved.")
        return redirect("portal:alerts")
    sent = Notification.objects.filter(
        customer=customer, kind__in=["low_funds", "credit_limit"]
    ).order_by("-created_at", "-id")[:20]
    has_limit = any(w.effective_credit_limit() > 0 for w in customer.wallets.all())
    return render(
        request,
        "portal/alerts.html",
        {"customer": customer, "form": form, "sent": sent, "has_limit": has_limit},
        status=400 if form.errors else 200,
    )


@customer_required
def documents(request: HttpRequest) -> HttpResponse:
    """The customer's usage invoices (issued and void; drafts are staff-only), newest first."""
    customer = request.customer  # type: ignore[attr-defined]
    rows = (
        Invoice.objects.filter(customer=customer, kind=Invoice.Kind.USAGE)
        .exclude(status=Invoice.Status.DRAFT)
        .select_related("series")
        .order_by("-issued_at", "-id")
    )  # top-up invoices and payments: portal.topup_views
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    return render(request, "portal/documents.html", {"customer": customer, "page": page})


@customer_required
def document_pdf(request: HttpRequest, pk: int) -> HttpResponse:
    """One of the customer's own invoices as PDF; anyone else's is a 404."""
    customer = request.customer  # type: ignore[attr-defined]
    invoice = get_object_or_404(
        Invoice.objects.select_related("customer__partner", "series").exclude(
            status=Invoice.Status.DRAFT
        ),
        pk=pk,
        customer=customer,
    )
    response = HttpResponse(render_invoice_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{invoice.display_number}.pdf"'
    return response
