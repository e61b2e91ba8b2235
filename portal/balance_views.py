"""The customer's Balance & Credits pages: the credit limit with its history, and
subscriber-to-subscriber transfers. Every query is scoped to ``request.customer``."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from billing.models import Customer
from billing.money import amount_text
from portal.views import customer_required
from wallets import errors, services
from wallets.actors import Actor
from wallets.models import CreditLimitChange, Wallet


@customer_required
def credit_limit(request: HttpRequest) -> HttpResponse:
    """The credit limit of each wallet now (permanent, temporary increase and its
    Valid Until, in force, over limit) and the credit limit history."""
    customer = request.customer  # type: ignore[attr-defined]
    now = timezone.now()
    wallets = []
    for wallet in customer.wallets.order_by("currency"):
        wallets.append(
            {
                "wallet": wallet,
                "state": services.limit_state(wallet, now),
                "available": wallet.available_funds(now),
            }
        )
    history = (
        CreditLimitChange.objects.filter(wallet__customer=customer)
        .exclude(kind=CreditLimitChange.Kind.CLASS_MAXIMUM)
        .select_related("wallet")
        .order_by("-changed_at", "-id")[:100]
    )
    return render(
        request,
        "portal/credit_limit.html",
        {"customer": customer, "wallets": wallets, "history": history},
    )


class TransferForm(forms.Form):
    token = forms.UUIDField(widget=forms.HiddenInput)
    receiver = forms.CharField(label="To account number", max_length=32)
    amount = forms.DecimalField(
        label="Amount", min_value=Decimal("0.01"), max_digits=17, decimal_places=2
    )
    memo = forms.CharField(label="Note (optional)", max_length=200, required=False)


def transfers_open(customer: Customer) -> str:
    """Why transfers are not offered to this customer ("" when they are)."""
    if not customer.partner.transfers_in_portal:
        return "Transfers are not available in this portal."
    if not customer.transfers_allowed():
        return "Transfers are not allowed for your account. Please contact support."
    return ""


@customer_required
def transfer(request: HttpRequest) -> HttpResponse:
    """Send unrestricted credit to another account (PortaBilling's subscriber-to-
    subscriber transfer): a form, a confirmation, one booking per form token."""
    customer = request.customer  # type: ignore[attr-defined]
    closed = transfers_open(customer)
    wallets = {w.currency: w for w in customer.wallets.all()}
    wallet = wallets.get(customer.currency) or next(iter(wallets.values()), None)
    if closed or wallet is None:
        return render(
            request,
            "portal/transfer.html",
            {"customer": customer, "closed": closed or "You have no wallet yet."},
            status=403,
        )
    if request.method == "POST":
        form = TransferForm(request.POST)
    else:
        form = TransferForm(initial={"token": uuid.uuid4()})
    confirming = False
    status = 200
    if request.method == "POST":
        if not form.is_valid():
            status = 400
        else:
            data = form.cleaned_data
            target = _receiver_wallet(customer, data["receiver"], wallet.currency)
            if target is None:
                form.add_error(
                    "receiver",
                    f"No account {data['receiver']!r} can receive {wallet.currency} transfers. "
                    "Check the account number.",
                )
                status = 400
            elif request.POST.get("confirmed") != "yes":
                confirming = True
            else:
                try:
                    tx = services.transfer(
                        source=wallet, target=target, amount=data["amount"],
                        actor=Actor.user(request.user),
                        idempotency_key=f"portal:transfer:{customer.pk}:{data['token']}",
                        memo=data["memo"] or f"Transfer to {target.customer.account_number}",
                    )  # fmt: skip
                except errors.TransferNotAllowed:
                    form.add_error(
                        "receiver", f"Account {data['receiver']} cannot receive transfers."
                    )
                    status = 400
                except errors.WalletError as exc:
                    form.add_error("amount", str(exc))
                    status = 400
                else:
                    messages.success(
                        request,
                        f"Transferred {amount_text(tx.amount)} {wallet.currency} to "
                        f"{target.customer.account_number}.",
                    )
                    return redirect("portal:transactions")
    context = {
        "customer": customer,
        "wallet": wallet,
        "form": form,
        "confirming": confirming,
        "transferable": wallet.spendable_credit(),
    }
    return render(request, "portal/transfer.html", context, status=status)


def _receiver_wallet(sender: Customer, number: str, currency: str) -> Wallet | None:
    number = number.strip()
    if not number or number == sender.account_number:
        return None
    return (
        Wallet.objects.select_related("customer")
        .filter(customer__account_number=number, currency=currency)
        .first()
    )
