"""Read-only logs: every redemption attempt and every export."""

from __future__ import annotations

from django.contrib import admin

from billing.admin.kit import ReadOnlyAdmin
from refillcards.models import (
    CardExport,
    RedemptionAttempt,
)


@admin.register(RedemptionAttempt)
class RedemptionAttemptAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "channel", "outcome", "customer", "card", "client_ip", "actor"]
    list_filter = ["outcome", "channel", "created_at"]
    search_fields = ["customer__account_number", "customer__name", "client_ip", "card__serial"]
    list_select_related = ["customer", "card"]
    date_hierarchy = "created_at"


@admin.register(CardExport)
class CardExportAdmin(ReadOnlyAdmin):
    list_display = ["exported_at", "series_label", "format", "cards", "exported_by"]
    list_filter = ["format", "exported_at"]
    search_fields = ["series_label", "exported_by"]
