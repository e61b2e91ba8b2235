"""Admin of usage events (read-only; reverse an event)."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from billing.admin.kit import ReadOnlyAdmin, amount_text, confirm_action
from billing.errors import BillingError
from billing.models import (
    UsageEvent,
)
from billing.usage.recording import reverse_usage
from wallets.actors import Actor
from wallets.errors import WalletError


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "customer",
        "product_item",
        "quantity",
        "unit_price",
        "amount",
        "currency",
        "status",
        "timestamp",
    ]
    list_filter = ["status", "product_item", "currency", "timestamp"]
    search_fields = ["event_id", "customer__account_number", "customer__name"]
    list_select_related = ["customer", "product_item"]
    date_hierarchy = "timestamp"
    actions = ["reverse"]
    readonly_fields = [f.name for f in UsageEvent._meta.fields]

    @admin.action(description="Reverse the selected usage events", permissions=["act"])
    def reverse(
        self, request: HttpRequest, queryset: QuerySet[UsageEvent]
    ) -> TemplateResponse | None:
        booked = list(queryset.filter(status=UsageEvent.Status.BOOKED))
        left = queryset.count() - len(booked)
        actor = Actor.user(request.user)
        return confirm_action(
            self,
            request,
            action_name="reverse",
            title="Reverse usage",
            destructive=True,
            question=(
                "Reverse these usage events? Their credit goes back to the grants it was "
                "drawn from (with their original expiry), debt they created is cancelled, "
                "and the ledger shows a reversal; nothing is edited in place."
            ),
            confirm_label="Yes, reverse",
            items=[(e, f"{amount_text(e.amount)} {e.currency}") for e in booked],
            skipped=f"{left} selected event(s) refused or already reversed are left alone."
            if left
            else "",
            run=lambda e, _: reverse_usage(event=e, actor=actor).event.status,
            expected=(BillingError, WalletError),
        )
