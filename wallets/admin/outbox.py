"""The notifications outbox."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.admin.kit import (
    ReadOnlyAdmin,
)
from wallets import notifications as notification_service
from wallets.models import (
    Notification,
)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "customer",
        "kind",
        "subject",
        "status",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "last_error",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["subject", "dedupe_key", "recipient", "customer__name", "customer__email"]
    list_select_related = ["customer"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "customer",
        "kind",
        "recipient",
        "subject",
        "body",
        "dedupe_key",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "created_at",
        "sent_at",
    )
    fields = readonly_fields
    actions = ["retry"]

    @admin.action(description="Retry selected failed notifications", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = notification_service.retry_notifications(
            notification_ids=list(queryset.values_list("pk", flat=True))
        )
        self.message_user(request, f"Queued {done} notification(s) again.", messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("wallets.change_notification")
