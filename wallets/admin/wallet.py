"""Wallets in the admin: balances, grants and limit changes, the credit limit form."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from billing.admin.kit import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    amount_text,
)
from wallets.admin.grants import condition_text
from wallets.models import (
    CreditGrant,
    CreditLimitChange,
    Wallet,
)


class GrantInline(ReadOnlyInline):
    model = CreditGrant
    fk_name = "wallet"
    fields = (
        "name",
        "kind",
        "status",
        "amount",
        "remaining",
        "effective_at",
        "expires_at",
        "priority",
        "condition",
    )
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="condition")
    def condition(self, obj: CreditGrant) -> str:
        return condition_text(obj)


class LimitChangeInline(ReadOnlyInline):
    model = CreditLimitChange
    fields = (
        "changed_at",
        "actor",
        "old_limit",
        "new_limit",
        "reason",
    )
    readonly_fields = fields


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = [
        "customer",
        "currency",
        "credit_balance",
        "restricted_balance",
        "debt",
        "credit_limit",
        "available",
        "pending_grants",
    ]
    list_filter = ["currency", "customer__balance_model", "customer__partner"]
    search_fields = ["customer__name", "customer__account_number", "customer__email"]
    list_select_related = ["customer"]
    readonly_fields = (
        "customer",
        "currency",
        "credit_balance",
        "restricted_balance",
        "debt",
        "credit_limit",
        "temporary_credit_increase",
        "temporary_increase_valid_until",
        "available",
        "statement",
        "created_at",
        "updated_at",
    )
    fields = readonly_fields
    inlines = [GrantInline, LimitChangeInline]

    @admin.display(description="available funds")
    def available(self, obj: Wallet) -> str:
        return amount_text(obj.available_funds())

    @admin.display(description="requires action")
    def pending_grants(self, obj: Wallet) -> str:
        count = obj.grants.filter(status="pending").count()
        if not count:
            return "—"
        url = (
            reverse("admin:wallets_creditgrant_changelist")
            + f"?status__exact=pending&wallet__id__exact={obj.pk}"
        )
        return format_html(
            '<a href="{}" style="color:#b54708;font-weight:600">{} Requires Action</a>', url, count
        )

    @admin.display(description="transactions")
    def statement(self, obj: Wallet) -> str:
        url = reverse("admin:wallets_ledgertransaction_changelist") + f"?wallet__id__exact={obj.pk}"
        return format_html('<a href="{}">All transactions of this wallet</a>', url)
