"""The customer's prepaid subscriptions and automatic top-up. Every query is scoped
to ``request.customer``; writes are service calls."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from billing.models import StripePaymentMethod
from billing.models.subscriptions import MAX_MONEY, AutoTopUp, SubscriptionCharge
from billing.subscriptions import services, topup
from billing.subscriptions.errors import SubscriptionError
from portal.views import customer_required
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.models import Wallet


def _money_field(label: str, *, required: bool = True, help_text: str = "") -> forms.DecimalField:
    return forms.DecimalField(
        label=label, required=required, help_text=help_text, max_digits=12, decimal_places=2,
        min_value=Decimal("0"), max_value=MAX_MONEY - Decimal("0.01"),
    )  # fmt: skip


class AutoTopUpForm(forms.Form):
    enabled = forms.BooleanField(label="Top up automatically", required=False, initial=True)
    threshold = _money_field("When my available funds fall below")
    amount = _money_field("charge my card", help_text="At least 0.50.")
    target = _money_field(
        "or top up to (optional)", required=False,
        help_text="When a large charge takes you far below, charge what brings you back to this.",
    )  # fmt: skip
    daily_max_count = forms.IntegerField(label="At most this many charges a day", min_value=1,
                                         max_value=50, initial=3)  # fmt: skip
    daily_max_amount = _money_field("and at most this much a day")
    max_declines = forms.IntegerField(label="Pause after this many declines in a row",
                                      min_value=1, max_value=10, initial=3)  # fmt: skip


@customer_required
def subscriptions(request: HttpRequest) -> HttpResponse:
    customer = request.customer  # type: ignore[attr-defined]
    subs = list(
        customer.subscriptions.select_related("wallet").prefetch_related("services").order_by("-id")
    )
    for sub in subs:
        sub.fee = services.fee_for(sub, sub.period_from(sub.next_period_start))
    history = SubscriptionCharge.objects.filter(subscription__customer=customer).select_related(
        "subscription"
    )[:24]
    wallet = Wallet.objects.filter(customer=customer, currency=customer.currency).first()
    settings = AutoTopUp.objects.filter(wallet=wallet).first() if wallet else None
    initial = (
        {f: getattr(settings, f) for f in AutoTopUpForm.base_fields} if settings else
        {"enabled": True, "daily_max_count": 3, "max_declines": 3}
    )  # fmt: skip
    form = AutoTopUpForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            topup.configure_auto_top_up(
                wallet=wallet or wallet_services.open_wallet(customer=customer), actor=Actor(label=f"portal:{request.user.get_username()}",
                                           user_id=request.user.pk),
                **form.cleaned_data,
            )  # fmt: skip
        except SubscriptionError as exc:
            field, _, message = str(exc).partition(": ")
            form.add_error(field if field in form.fields else None, message or str(exc))
        else:
            messages.success(request, "Your automatic top-up settings are saved.")
            return redirect("portal:subscriptions")
    card = StripePaymentMethod.objects.filter(customer=customer, is_default=True).first()
    attempts = settings.attempts.order_by("-created_at", "-id")[:20] if settings else []
    context = {
        "customer": customer, "subscriptions": subs, "history": history, "wallet": wallet,
        "settings": settings, "form": form, "card": card, "attempts": attempts,
    }  # fmt: skip
    return render(request, "portal/subscriptions.html", context, status=400 if form.errors else 200)
