"""Prepaid credit settings and recurring grant rules."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from billing.admin.kit import (
    ReadableDecimals,
)
from billing.models import Customer
from wallets import recurring
from wallets.models import (
    PrepaidCreditSettings,
    RecurringGrantRule,
)


@admin.register(PrepaidCreditSettings)
class PrepaidCreditSettingsAdmin(admin.ModelAdmin):
    """One row: the list page opens it directly."""

    fields = ("default_expiry_count", "default_expiry_unit", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        current = PrepaidCreditSettings.load()
        return HttpResponseRedirect(
            reverse("admin:wallets_prepaidcreditsettings_change", args=[current.pk])
        )


@admin.register(RecurringGrantRule)
class RecurringGrantRuleAdmin(ReadableDecimals, admin.ModelAdmin):
    list_display = [
        "name",
        "customer",
        "amount",
        "currency",
        "kind",
        "active",
        "starts_on",
        "ends_on",
        "next_period_start",
        "grants",
    ]
    list_filter = ["active", "kind", "wallet__currency"]
    search_fields = ["name", "wallet__customer__name", "wallet__customer__account_number"]
    list_select_related = ["wallet__customer"]
    autocomplete_fields = ["wallet"]
    fields = (
        "wallet",
        "name",
        "amount",
        "kind",
        "pending",
        "condition_item",
        "condition_dimensions",
        "priority",
        "expiry_count",
        "expiry_unit",
        "active",
        "starts_on",
        "ends_on",
        "next_period_start",
        "grants",
    )
    readonly_fields = ("next_period_start", "grants")
    actions = ["pause_rules", "resume_rules"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # An existing rule is paused and resumed with the actions (resuming does not
        # catch up the paused periods); its wallet never changes.
        if obj is not None:
            return (*self.readonly_fields, "wallet", "active")
        return tuple(self.readonly_fields)

    @admin.display(description="customer", ordering="wallet__customer__name")
    def customer(self, obj: RecurringGrantRule) -> Customer:
        return obj.wallet.customer

    @admin.display(description="currency")
    def currency(self, obj: RecurringGrantRule) -> str:
        return obj.wallet.currency

    @admin.display(description="grants issued")
    def grants(self, obj: RecurringGrantRule) -> str:
        if obj.pk is None:
            return "—"
        url = (
            reverse("admin:wallets_creditgrant_changelist")
            + f"?source_type=recurring_rule&source_id={obj.pk}"
        )
        return format_html('<a href="{}">Grants of this rule</a>', url)

    @admin.action(description="Pause selected rules", permissions=["change"])
    def pause_rules(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = recurring.pause_rules(rule_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Paused {done} rule(s).", messages.SUCCESS)

    @admin.action(
        description="Resume selected rules from the current period", permissions=["change"]
    )
    def resume_rules(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = recurring.resume_rules(rule_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Resumed {done} rule(s).", messages.SUCCESS)
