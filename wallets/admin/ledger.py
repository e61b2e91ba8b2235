"""The ledger in the admin, read-only: transactions with their entries and lots,
accounts, credit-limit changes. A correction is a reversal (a service call)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from billing.admin.kit import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    amount_text,
    confirm_action,
)
from wallets import errors, services
from wallets.actors import Actor
from wallets.models import (
    Account,
    CreditLimitChange,
    Entry,
    GrantConsumption,
    LedgerTransaction,
)


class EntryInline(ReadOnlyInline):
    model = Entry
    fields = (
        "debit_account",
        "credit_account",
        "amount",
        "currency",
    )
    readonly_fields = fields


class LotInline(ReadOnlyInline):
    model = GrantConsumption
    fields = (
        "grant",
        "amount",
    )
    readonly_fields = fields
    verbose_name = "credit drawn from a grant"
    verbose_name_plural = "credit drawn from grants (lots)"


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "effective_at",
        "kind",
        "wallet",
        "amount",
        "currency",
        "balance_after",
        "debt_after",
        "actor",
        "reference",
    ]
    list_filter = ["kind", "currency"]
    search_fields = [
        "idempotency_key",
        "reference",
        "memo",
        "wallet__customer__name",
        "wallet__customer__account_number",
    ]
    list_select_related = ["wallet__customer"]
    date_hierarchy = "effective_at"
    readonly_fields = (
        "kind",
        "wallet",
        "amount",
        "currency",
        "effective_at",
        "created_at",
        "actor",
        "memo",
        "reference",
        "idempotency_key",
        "balance_after",
        "restricted_after",
        "debt_after",
        "reverses",
        "metadata",
    )
    fields = readonly_fields
    inlines = [EntryInline, LotInline]
    actions = ["reverse_transactions"]

    @admin.action(description="Reverse selected transactions", permissions=["reverse"])
    def reverse_transactions(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)

        def perform(tx: LedgerTransaction, data: dict[str, Any]) -> str:
            reversal = services.reverse(
                transaction_id=tx.pk, actor=actor, idempotency_key=f"admin-reverse:{tx.pk}"
            )
            return f"reversed (by transaction {reversal.pk})" if len(chosen) == 1 else "reversed"

        chosen = list(queryset)
        return confirm_action(
            self, request, action_name="reverse_transactions", title="Reverse transactions", destructive=True,
            question="Reverse these transactions? Each gets a reversing transaction that puts "
            "the money back where it came from (credit to its original grants); nothing is "
            "edited in place.",
            items=[(tx, f"{tx.get_kind_display()} {amount_text(tx.amount)} {tx.currency}")
                   for tx in chosen],
            run=perform, expected=(errors.WalletError,),
        )  # fmt: skip

    def has_reverse_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("wallets.add_ledgertransaction")


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "code", "currency", "wallet"]
    list_filter = ["kind", "code", "currency"]
    search_fields = ["wallet__customer__name"]


@admin.register(CreditLimitChange)
class CreditLimitChangeAdmin(ReadOnlyAdmin):
    list_display = ["changed_at", "wallet", "old_limit", "new_limit", "actor", "reason"]
    list_filter = ["wallet__currency"]
    search_fields = ["wallet__customer__name", "reason"]
