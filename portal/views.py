"""Customer-facing pages. Every query is scoped to ``request.customer``."""

from functools import wraps
from typing import cast

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.models import PortalUser
from wallets.models import LedgerTransaction


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
    return render(request, "portal/dashboard.html", {"customer": customer, "wallets": wallets})


@customer_required
def transactions(request: HttpRequest) -> HttpResponse:
    customer = request.customer  # type: ignore[attr-defined]
    rows = LedgerTransaction.objects.filter(wallet__customer=customer).order_by("-id")
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(request, "portal/transactions.html", {"customer": customer, "page": page})
