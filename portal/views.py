"""Customer-facing pages. Every query is scoped to ``request.customer``."""

from functools import wraps
from typing import cast

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from billing.models import PortalUser


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
    return render(request, "portal/dashboard.html", {"customer": request.customer})  # type: ignore[attr-defined]
