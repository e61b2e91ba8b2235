"""The portal's "Refill card" page (Splynx: Finance → Refill card): the customer
types a card's code and its value is added to their balance. Shown only when
refill cards are enabled and enabled for the customer's partner ("Per partner
settings"); otherwise the page does not exist (404)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from billing.models import Customer, PortalUser
from config.logins.lockout import client_ip
from portal.views import customer_required
from refillcards import codes
from refillcards.errors import CardError, CardRefused, RedemptionLocked
from refillcards.models import RedemptionAttempt, RefillCard, RefillCardSettings
from refillcards.services import redeem_card
from wallets.actors import Actor


def refill_cards_offered(customer: Customer) -> bool:
    return customer.partner.refill_cards_in_portal and RefillCardSettings.is_enabled()


def portal_menu(request: HttpRequest) -> dict:
    """Context processor: whether the portal menu shows "Refill card" (evaluated only
    by templates that ask, i.e. the portal's)."""

    def offered() -> bool:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return False
        access = PortalUser.objects.select_related("customer__partner").filter(user=user).first()
        return access is not None and refill_cards_offered(access.customer)

    return {"refill_card_in_menu": offered}


class CodeForm(forms.Form):
    code = forms.CharField(
        max_length=codes.MAX_INPUT,
        help_text="The full code printed on the card, e.g. NW-7K3M-Q9XF-2HDP-WT4RZ. Case, "
        "spaces and dashes do not matter.",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}
        ),  # fmt: skip
    )


@customer_required
def refill_card(request: HttpRequest) -> HttpResponse:
    customer = request.customer  # type: ignore[attr-defined]
    if not refill_cards_offered(customer):
        raise Http404("Refill cards are not available for this account.")
    form = CodeForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                result = redeem_card(
                    code=form.cleaned_data["code"], customer=customer,
                    actor=Actor.user(request.user), channel=RedemptionAttempt.Channel.PORTAL,
                    client_ip=client_ip(request),
                )  # fmt: skip
            except RedemptionLocked as exc:
                form.add_error("code", str(exc))
                status = 429
            except CardRefused as exc:
                form.add_error("code", str(exc))
            except CardError as exc:
                form.add_error("code", str(exc))
            else:
                wallet = result.wallet
                messages.success(
                    request,
                    f"Card {result.card.serial} redeemed: {result.amount:.2f} {wallet.currency} "
                    f"added. Your available funds are now {wallet.available_funds():.2f} "
                    f"{wallet.currency}.",
                )
                return redirect("portal:refill_card")
    redeemed = (
        RefillCard.objects.filter(used_by=customer)
        .select_related("series", "payment")
        .order_by("-used_at")[:20]
    )
    return render(
        request,
        "portal/refill_card.html",
        {"customer": customer, "form": form, "redeemed": redeemed},
        status=status,
    )
