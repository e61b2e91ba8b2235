"""Admin of Stripe records: webhook events (retry) and charges (refund, retry)."""

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html

from billing.admin.kit import ReadOnlyAdmin, amount_text, confirm_action
from billing.errors import BillingError
from billing.models import (
    StripeCharge,
    StripeChargeQuerySet,
    StripeEvent,
)
from billing.stripe import services as stripe_services
from billing.stripe import webhooks as stripe_webhooks
from wallets.errors import WalletError


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "type",
        "status",
        "received_at",
        "attempts",
        "error",
    ]
    list_filter = ["status", "type", "livemode", "received_at"]
    search_fields = ["event_id", "object_id", "type"]
    date_hierarchy = "received_at"
    actions = ["retry_processing"]
    fields = readonly_fields = (
        "event_id",
        "type",
        "object_id",
        "livemode",
        "status",
        "error",
        "attempts",
        "stripe_created_at",
        "received_at",
        "processed_at",
        "payload_json",
    )

    @admin.display(description="payload")
    def payload_json(self, obj: StripeEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    @admin.action(description="Retry processing of the selected events", permissions=["act"])
    def retry_processing(
        self, request: HttpRequest, queryset: QuerySet[StripeEvent]
    ) -> TemplateResponse | None:
        retryable = queryset.filter(
            status__in=[StripeEvent.Status.FAILED, StripeEvent.Status.RECEIVED]
        )
        left = queryset.count() - retryable.count()
        return confirm_action(
            self,
            request,
            action_name="retry_processing",
            title="Retry processing",
            question="Process these Stripe events again? Each has its effect at most once.",
            confirm_label="Yes, retry",
            items=[(event, event.error) for event in retryable],
            skipped=f"{left} selected event(s) already processed or ignored are left alone."
            if left
            else "",
            run=lambda event, _: stripe_webhooks.retry_stripe_event(event=event).status,
            expected=(BillingError,),
        )


class EffectsFilter(admin.SimpleListFilter):
    title = "money effect"
    parameter_name = "effects"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin
    ) -> Iterable[tuple[str, str]]:
        return [("done", "Done"), ("due", "Due"), ("error", "Failed (see error)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "done":
            return queryset.filter(effects_applied_at__isnull=False)
        charges = cast(StripeChargeQuerySet, queryset)
        if self.value() == "due":
            return charges.effects_due()
        if self.value() == "error":
            return charges.effects_due().exclude(effects_error="")
        return queryset


class RefundForm(forms.Form):
    amount = forms.DecimalField(
        required=False,
        min_value=Decimal("0.01"),
        decimal_places=2,
        help_text="Leave empty to refund everything not yet refunded (of each selected charge).",
    )
    turn_used_credit_into_debt = forms.BooleanField(
        required=False,
        label="Turn used credit into debt",
        help_text="Needed when the refund is more than the grant's unused credit: the customer "
        "gets that money back and then owes the used part (booked as debt on their account).",
    )


def refund_note(charge: StripeCharge) -> str:
    """What a full refund of the charge would book: unused vs used, and the debt."""
    left = f"{amount_text(charge.refundable_amount)} {charge.currency} left to refund"
    try:
        preview = stripe_services.refund_preview(charge=charge)
    except WalletError as exc:
        return f"{left}; {exc}"
    if preview is None:
        return f"{left}; pays for no credit grant (nothing to book in the ledger)"
    unused, used = amount_text(preview.without_debt), amount_text(preview.used)
    outcome = (
        f"a full refund makes {amount_text(preview.debt)} {charge.currency} of debt"
        if preview.debt
        else "a full refund makes no debt"
    )
    return (
        f"{left}; grant #{charge.grant_id}: {unused} {charge.currency} unused, "
        f"{used} {charge.currency} used — {outcome}"
    )


@admin.register(StripeCharge)
class StripeChargeAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "customer",
        "amount",
        "currency",
        "purpose",
        "status",
        "created_at",
        "effects_done",
    ]
    list_filter = ["status", "purpose", "currency", EffectsFilter, "created_at"]
    search_fields = [
        "payment_intent_id",
        "customer__name",
        "customer__account_number",
        "=grant_id",
        "initiated_by",
    ]
    list_select_related = ["customer"]
    date_hierarchy = "created_at"
    actions = ["retry", "refund"]
    readonly_fields = [f.name for f in StripeCharge._meta.fields]
    fieldsets = [
        (
            None,
            {"fields": ["customer", "amount", "currency", "purpose", "grant_id", "description"]},
        ),
        (
            "Stripe",
            {
                "fields": [
                    "status",
                    "payment_intent_id",
                    "stripe_customer_id",
                    "payment_method_id",
                    "failure_code",
                    "failure_reason",
                    "last_error",
                    "attempts",
                    "last_attempt_at",
                    "refunded_amount",
                    "refunded_by",
                ]
            },
        ),
        ("Money effect", {"fields": ["effects_applied_at", "effects_error", "effects_attempts"]}),
        ("Record", {"fields": ["initiated_by", "created_at", "updated_at", "finished_at"]}),
    ]

    @admin.display(description="effect done", boolean=True)
    def effects_done(self, obj: StripeCharge) -> bool | None:
        return None if not obj.is_settled else obj.effects_applied_at is not None

    @admin.action(
        description="Retry the selected pending charges or due effects", permissions=["act"]
    )
    def retry(
        self, request: HttpRequest, queryset: QuerySet[StripeCharge]
    ) -> TemplateResponse | None:
        due = [
            c
            for c in queryset
            if c.status == StripeCharge.Status.PENDING or c.effects_applied_at is None
        ]
        left = queryset.count() - len(due)
        return confirm_action(
            self,
            request,
            action_name="retry",
            title="Retry charges",
            question=(
                "Retry these charges? A pending charge is sent to Stripe again with its own "
                "idempotency key, so it is never charged twice; a settled one only gets its "
                "money effect applied."
            ),
            confirm_label="Yes, retry",
            items=[(c, c.last_error or c.effects_error) for c in due],
            skipped=f"{left} selected charge(s) have nothing to retry." if left else "",
            run=lambda c, _: stripe_services.retry_charge(charge=c).get_status_display().lower(),
            expected=(BillingError,),
        )

    @admin.action(description="Refund the selected charges", permissions=["act"])
    def refund(
        self, request: HttpRequest, queryset: QuerySet[StripeCharge]
    ) -> TemplateResponse | None:
        refundable = [c for c in queryset.order_by("pk") if c.refundable_amount > 0]
        left = queryset.count() - len(refundable)

        def run(charge: StripeCharge, data: dict[str, Any]) -> str:
            done = stripe_services.refund_charge(
                charge=charge, initiated_by=str(request.user), amount=data.get("amount"),
                allow_debt=bool(data.get("turn_used_credit_into_debt")),
            )  # fmt: skip
            return done.get_status_display().lower()

        return confirm_action(
            self, request, action_name="refund", title="Refund charges", destructive=True,
            question=(
                "Give this money back to the card? A charge that paid for credit is refunded "
                "from that credit: its unused part first. A refund above the unused credit "
                "gives the customer back money for credit they already used; it is refused "
                "unless you tick \u201cTurn used credit into debt\u201d, and then the used "
                "part is booked as debt the customer owes."
            ),
            confirm_label="Yes, refund", items=[(c, refund_note(c)) for c in refundable],
            skipped=f"{left} selected charge(s) have nothing left to refund." if left else "",
            run=run, expected=(BillingError, WalletError), form_class=RefundForm,
        )  # fmt: skip
