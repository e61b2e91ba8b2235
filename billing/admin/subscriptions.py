"""Admin of prepaid subscriptions and automatic top-up (imported by billing.admin).

Registering a subscription, changing its status and saving top-up settings are
service calls (`billing.subscriptions.services` / `.topup`) from explicit views and
actions; status actions ask for a reason on a confirmation page and are logged."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from billing.admin.kit import ReadableDecimals, ReadOnlyInline, amount_text, confirm_action
from billing.models import Customer
from billing.models.subscriptions import (
    AutoTopUp,
    AutoTopUpAttempt,
    PrepaidSubscription,
    Service,
    ServiceRate,
    SubscriptionCharge,
    SubscriptionStatusChange,
)
from billing.subscriptions import services, topup
from billing.subscriptions.errors import SubscriptionError
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.errors import WalletError


class ServiceRateInline(admin.TabularInline):
    model = ServiceRate
    extra = 1


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "active", "rates"]
    list_filter = ["active"]
    search_fields = ["name", "code"]
    inlines = [ServiceRateInline]

    @admin.display(description="rates")
    def rates(self, obj: Service) -> str:
        return "; ".join(str(rate).split(": ", 1)[1] for rate in obj.rates.all()) or "—"


class StatusChangeInline(ReadOnlyInline):
    model = SubscriptionStatusChange
    fields = readonly_fields = ("changed_at", "old_status", "new_status", "reason", "actor")
    verbose_name_plural = "status history"


class ChargeInline(ReadOnlyInline):
    model = SubscriptionCharge
    fields = readonly_fields = (
        "period_start", "last_day", "amount", "currency", "ledger", "billed_at",
    )  # fmt: skip
    verbose_name_plural = "billing history"

    @admin.display(description="wallet transaction")
    def ledger(self, obj: SubscriptionCharge) -> str:
        if obj.transaction_id is None:
            return "— (nothing to pay)"
        url = reverse("admin:wallets_ledgertransaction_change", args=[obj.transaction_id])
        return format_html('<a href="{}">#{}</a>', url, obj.transaction_id)


class RegisterForm(forms.Form):
    customer = forms.ModelChoiceField(queryset=Customer.objects.order_by("account_number"))
    name = forms.CharField(max_length=200)
    services = forms.ModelMultipleChoiceField(
        queryset=Service.objects.filter(active=True), widget=forms.CheckboxSelectMultiple
    )
    anchor_day = forms.IntegerField(
        min_value=1, max_value=28, required=False,
        help_text="Day of the month each billing period starts. Empty: the customer's.",
    )  # fmt: skip
    starts_on = forms.DateField(required=False, help_text="Empty: today.")


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500, help_text="Kept in the status history and shown to other systems."
    )


@admin.register(PrepaidSubscription)
class PrepaidSubscriptionAdmin(ReadableDecimals, admin.ModelAdmin):
    list_display = ["name", "customer", "status_badge", "hold", "next_billing", "period_fee",
                    "status_changed_at"]  # fmt: skip
    list_filter = ["status", "hold"]
    search_fields = ["name", "customer__account_number", "customer__name"]
    list_select_related = ["customer", "wallet"]
    fields = readonly_fields = (
        "customer", "wallet", "name", "services_text", "anchor_day", "starts_on", "status",
        "hold", "status_reason", "status_changed_at", "next_period_start", "created_by",
        "created_at",
    )  # fmt: skip
    inlines = [ChargeInline, StatusChangeInline]
    actions = ["deactivate", "reactivate", "cancel"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # the change page is read-only; status changes are the actions below
        return super().has_change_permission(request, obj) and obj is None

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: PrepaidSubscription) -> str:
        colour = {"active": "#2e7d32", "deactivated": "#b26a00", "cancelled": "#777"}[obj.status]
        return format_html('<b style="color:{}">{}</b>', colour, obj.get_status_display())

    @admin.display(description="next billing", ordering="next_period_start")
    def next_billing(self, obj: PrepaidSubscription) -> str:
        return f"{obj.next_billing_date:%Y-%m-%d}" if obj.next_billing_date else "on hold"

    @admin.display(description="next fee")
    def period_fee(self, obj: PrepaidSubscription) -> str:
        fee = services.fee_for(obj, obj.period_from(obj.next_period_start))
        return f"{amount_text(fee)} {obj.wallet.currency}"

    @admin.display(description="services")
    def services_text(self, obj: PrepaidSubscription) -> str:
        return ", ".join(s.name for s in obj.services.all())

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        initial = {"customer": request.GET.get("customer")} if request.GET.get("customer") else {}
        form = RegisterForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                sub = services.register_subscription(
                    customer=data["customer"], name=data["name"], services=list(data["services"]),
                    anchor_day=data["anchor_day"], starts_on=data["starts_on"],
                    actor=Actor.user(request.user),
                )  # fmt: skip
            except (SubscriptionError, WalletError) as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, sub, "Registered")
                self.message_user(
                    request, f"Registered {sub}: {sub.get_status_display().lower()}"
                    + (f" ({sub.status_reason})" if sub.status != "active" else ""),
                    messages.SUCCESS if sub.status == "active" else messages.WARNING,
                )  # fmt: skip
                return HttpResponseRedirect(
                    reverse("admin:billing_prepaidsubscription_change", args=[sub.pk])
                )
        context = {
            **self.admin_site.each_context(request), "title": "Register a prepaid subscription",
            "form": form, "opts": self.model._meta, "submit_label": "Register",
        }  # fmt: skip
        return TemplateResponse(
            request, "admin/subscriptions/form.html", context, status=400 if form.errors else 200
        )

    def _status_action(
        self, request: HttpRequest, queryset: QuerySet, *, name: str, title: str,
        allowed: set[str], service: Any, destructive: bool = False,
    ) -> HttpResponse | None:  # fmt: skip
        actor = Actor.user(request.user)
        chosen = list(queryset.select_related("customer", "wallet"))
        items = [
            (s, f"{s.get_status_display()}; {s.customer}") for s in chosen if s.status in allowed
        ]
        skipped = len(chosen) - len(items)
        return confirm_action(
            self, request, action_name=name, title=title,
            question=f"{title} these subscriptions? Say why: the reason is kept in the status "
            "history and shown to other systems.",
            items=items, form_class=ReasonForm, destructive=destructive,
            skipped=f"{skipped} selected subscription(s) cannot be changed this way." if skipped else "",
            run=lambda s, data: service(subscription=s, reason=data["reason"], actor=actor).status,
            expected=(SubscriptionError, WalletError),
        )  # fmt: skip

    @admin.action(description="Deactivate selected subscriptions", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._status_action(request, queryset, name="deactivate", title="Deactivate",
                                   allowed={"active"}, service=services.deactivate_subscription,
                                   destructive=True)  # fmt: skip

    @admin.action(
        description="Reactivate selected subscriptions (bills the current period)",
        permissions=["change"],
    )
    def reactivate(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._status_action(request, queryset, name="reactivate", title="Reactivate",
                                   allowed={"deactivated"},
                                   service=services.reactivate_subscription)  # fmt: skip

    @admin.action(description="Cancel selected subscriptions", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._status_action(request, queryset, name="cancel", title="Cancel",
                                   allowed={"active", "deactivated"},
                                   service=services.cancel_subscription, destructive=True)  # fmt: skip


class AttemptInline(ReadOnlyInline):
    model = AutoTopUpAttempt
    fields = readonly_fields = (
        "created_at", "crossing", "try_number", "amount", "outcome", "reason", "charge",
    )  # fmt: skip
    verbose_name_plural = "attempts"
    ordering = ["-created_at", "-id"]


class AutoTopUpForm(forms.ModelForm):
    customer = forms.ModelChoiceField(queryset=Customer.objects.order_by("account_number"))
    currency = forms.CharField(max_length=3, required=False, help_text="Empty: the customer's.")

    def clean_currency(self) -> str:
        currency = (self.cleaned_data.get("currency") or "").upper()
        if currency and currency not in settings.CURRENCIES:
            raise forms.ValidationError(f"Use one of {', '.join(settings.CURRENCIES)}.")
        return currency

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        needed = ["threshold", "amount", "daily_max_amount", "daily_max_count", "max_declines"]
        if all(data.get(name) is not None for name in needed):
            for problem in topup.settings_problems(
                threshold=data["threshold"], amount=data["amount"], target=data.get("target"),
                daily_max_amount=data["daily_max_amount"], daily_max_count=data["daily_max_count"],
                max_declines=data["max_declines"],
            ):  # fmt: skip
                field, _, message = problem.partition(": ")
                self.add_error(field if field in self.fields else None, message)
        return data

    class Meta:
        model = AutoTopUp
        fields = ["enabled", "threshold", "amount", "target", "daily_max_count",
                  "daily_max_amount", "max_declines"]  # fmt: skip


class AutoTopUpChangeForm(AutoTopUpForm):
    """The same form for existing settings: the wallet stays."""

    customer = None  # type: ignore[assignment]
    currency = None  # type: ignore[assignment]


@admin.register(AutoTopUp)
class AutoTopUpAdmin(ReadableDecimals, admin.ModelAdmin):
    list_display = ["wallet", "state_text", "threshold", "amount", "target", "daily_max_count",
                    "daily_max_amount", "declines", "next_attempt_at"]  # fmt: skip
    list_filter = ["enabled"]
    search_fields = ["customer__account_number", "customer__name"]
    list_select_related = ["wallet__customer"]
    inlines = [AttemptInline]
    actions = ["resume"]

    @admin.display(description="state")
    def state_text(self, obj: AutoTopUp) -> str:
        return {"on": "On", "off": "Off", "paused": f"Paused: {obj.paused_reason}"}[obj.state]

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            return AutoTopUpForm
        return super().get_form(request, obj, change=change, fields=AutoTopUpForm.Meta.fields)

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:  # fmt: skip
        # Django wraps this view in a transaction; the settings service opens its own
        # durable one (the only write here), so the view runs without the wrapper.
        return self._changeform_view(request, object_id, form_url, extra_context)  # type: ignore[attr-defined]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # switch it off instead: the attempts are its history

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return [AttemptInline] if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["customer", "currency", *AutoTopUpForm.Meta.fields]
        return [*AutoTopUpForm.Meta.fields, "state_text", "crossing", "declines", "next_attempt_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["state_text", "crossing", "declines", "next_attempt_at"] if obj else []

    def save_model(self, request: HttpRequest, obj: AutoTopUp, form: Any, change: bool) -> None:
        # The settings are written by the service (validation, lifting a pause), not here.
        data = form.cleaned_data
        wallet = obj.wallet if change else wallet_services.open_wallet(
            customer=data["customer"], currency=(data.get("currency") or "").upper() or None
        )  # fmt: skip
        saved = topup.configure_auto_top_up(
            wallet=wallet, actor=Actor.user(request.user), enabled=data["enabled"],
            threshold=data["threshold"], amount=data["amount"], target=data.get("target"),
            daily_max_count=data["daily_max_count"], daily_max_amount=data["daily_max_amount"],
            max_declines=data["max_declines"],
        )  # fmt: skip
        obj.pk = saved.pk
        obj.refresh_from_db()

    @admin.action(
        description="Resume after declines (the card was updated)", permissions=["change"]
    )
    def resume(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        chosen = list(queryset.select_related("customer"))
        items = [(t, t.paused_reason) for t in chosen if t.paused_at is not None]
        return confirm_action(
            self, request, action_name="resume", title="Resume automatic top-up",
            question="Resume these automatic top-ups? Only after the customer updated the card.",
            items=items, skipped="None of the selected top-ups is paused.",
            run=lambda t, _: f"resumed {topup.resume_auto_top_up(customer_id=t.customer_id)}",
            expected=(SubscriptionError,),
        )  # fmt: skip
