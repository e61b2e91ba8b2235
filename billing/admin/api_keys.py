"""Admin of API keys: issue (the secret is shown once) and revoke."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from billing.admin.kit import confirm_action
from billing.errors import BillingError
from billing.models import (
    ApiKey,
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Create shows the secret once; only its hash is kept. Revoke is for good."""

    list_display = ["name", "prefix", "partner", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "partner"]
    search_fields = ["name", "prefix"]
    readonly_fields = [
        "prefix",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    ]
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "partner")
        return ("name", "partner", *self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # usage events point at their key: revoke instead

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        token = None
        if not change:
            obj.created_by = str(request.user)
            token = obj.assign_secret()
        super().save_model(request, obj, form, change)
        if token:
            self.message_user(
                request,
                f"API key {obj.name!r} created. Copy it now, it is shown only once: {token}",
                messages.WARNING,
            )

    @admin.action(description="Revoke the selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> TemplateResponse | None:
        live = list(queryset.filter(revoked_at__isnull=True))
        left = queryset.count() - len(live)
        return confirm_action(
            self,
            request,
            action_name="revoke",
            title="Revoke API keys",
            destructive=True,
            question=(
                "Revoke these API keys? Requests with them are refused at once (401), "
                "and a revoked key cannot be brought back: issue a new one instead."
            ),
            confirm_label="Yes, revoke",
            items=[(key, f"last used {key.last_used_at or 'never'}") for key in live],
            skipped=f"{left} selected key(s) were already revoked." if left else "",
            run=lambda key, _: "revoked" if key.revoke(by=str(request.user)) else "already revoked",
            expected=(BillingError,),
        )
