"""Admin of partners, customer classes, customers and portal users."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from billing.errors import BillingError
from billing.models import (
    Customer,
    CustomerClass,
    Partner,
    PortalUser,
    StripePaymentMethod,
)
from billing.stripe import services as stripe_services
from billing.stripe.gateway import stripe_enabled
from wallets.actors import Actor
from wallets.admin.limits import CustomerForm, balance_and_credits_panel, open_new_customer_wallet
from wallets.services import (
    copy_class_warning_thresholds,
    copy_warning_thresholds,
    record_class_maximum_change,
)

LIMIT_MAXIMUM_FIELDS = {"max_temporary_increase_amount", "max_temporary_increase_days"}


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "refill_cards_in_portal",
        "top_up_in_portal",
        "transfers_in_portal",
        "customer_count",
    ]
    list_filter = ["refill_cards_in_portal", "top_up_in_portal", "transfers_in_portal"]
    search_fields = ["name", "support_email"]

    @admin.display(description="customers")
    def customer_count(self, obj: Partner) -> int:
        return obj.customers.count()


# Changing these (on a customer or a class) copies them onto the wallets, explicitly.
WARNING_FIELDS = {"low_funds_thresholds", "credit_limit_warnings"}


@admin.register(CustomerClass)
class CustomerClassAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "transfers_allowed",
        "max_temporary_increase_amount",
        "max_temporary_increase_days",
        "low_funds_thresholds",
        "credit_limit_warnings",
    ]
    list_filter = ["transfers_allowed"]
    search_fields = ["name"]

    def save_model(self, request: HttpRequest, obj: CustomerClass, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and WARNING_FIELDS & set(form.changed_data):
            copy_class_warning_thresholds(obj)
        if change and LIMIT_MAXIMUM_FIELDS & set(form.changed_data):
            record_class_maximum_change(
                klass=obj, old_amount=form.initial.get("max_temporary_increase_amount"),
                old_days=form.initial.get("max_temporary_increase_days"),
                actor=Actor.user(request.user),
            )  # fmt: skip


class PortalUserInline(admin.TabularInline):
    model = PortalUser
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["created_at"]


class StripePaymentMethodInline(admin.TabularInline):
    model = StripePaymentMethod
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "stripe_payment_method_id",
        "brand",
        "last4",
        "exp_month",
        "exp_year",
        "is_default",
    )
    verbose_name_plural = "cards saved at Stripe (synced from Stripe)"

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    # The add form also asks for the permanent credit limit (wallets.admin.limits).
    form = CustomerForm
    list_display = [
        "account_number",
        "name",
        "email",
        "partner",
        "customer_class",
        "balance_model",
        "currency",
        "status",
    ]
    list_display_links = ["account_number", "name"]
    list_filter = ["status", "balance_model", "currency", "partner", "customer_class"]
    search_fields = ["account_number", "name", "email", "stripe_customer_id"]
    list_select_related = ["partner", "customer_class"]
    autocomplete_fields = ["partner", "customer_class"]
    readonly_fields = ["created_at", "updated_at", "balances", "stripe_customer_id", "stripe_link"]
    inlines = [PortalUserInline, StripePaymentMethodInline]
    actions = ["sync_stripe_customer"]
    fieldsets = [
        (
            None,
            {"fields": ["account_number", "name", "email", "partner", "customer_class", "status"]},
        ),
        (
            "Balance",
            {"fields": ["balance_model", "currency", "billing_anchor_day", "transfer_policy"]},
        ),
        ("Balance & Credits", {"fields": ["balances"]}),
        (
            "Balance warnings",
            {
                "fields": ["low_funds_thresholds", "credit_limit_warnings"],
                "description": "Emails to the customer when a balance change crosses one "
                "of these; see Notifications for what was sent.",
            },
        ),
        ("Payments", {"fields": ["stripe_link", "stripe_customer_id"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None:
            return self.fieldsets
        balance = ["balance_model", "currency", "billing_anchor_day", "transfer_policy"]
        return [
            (title, {**options, "fields": [*balance, "permanent_credit_limit"]})
            if title == "Balance"
            else (title, options)
            for title, options in self.fieldsets
            if title != "Balance & Credits"
        ]

    def save_model(self, request: HttpRequest, obj: Customer, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and (WARNING_FIELDS | {"customer_class"}) & set(form.changed_data):
            copy_warning_thresholds(obj)
        if not change:  # a new customer's wallet opens at once, with its limit
            open_new_customer_wallet(request, obj, form)

    @admin.display(description="balances")
    def balances(self, obj: Customer) -> str:
        """The Balance & Credits panel (wallets.admin.limits), then the customer's
        unallocated payments with "Record payment" and "Create top-up invoice"
        (invoices.admin.payments)."""
        if obj.pk is None:
            return "—"
        from invoices.admin import unallocated_panel  # the admins register each other late

        return format_html("{}{}", balance_and_credits_panel(obj), unallocated_panel(obj))

    @admin.display(description="Stripe")
    def stripe_link(self, obj: Customer) -> str:
        if not obj.pk or not obj.stripe_customer_id:
            state = "Not linked to Stripe"
        else:
            default = obj.stripe_payment_methods.filter(is_default=True).first()
            card = (
                f"default card {default}" if default else "no default card: 'charge now' needs one"
            )
            state = f"Linked ({obj.stripe_customer_id}), {card}"
        if not stripe_enabled():
            state += " · Stripe is not configured (STRIPE_API_KEY), card payments are off"
        return state

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not stripe_enabled():
            actions.pop("sync_stripe_customer", None)
        return actions

    @admin.action(description="Create/sync Stripe customer", permissions=["change"])
    def sync_stripe_customer(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        synced = 0
        for customer in queryset:
            try:
                stripe_services.sync_stripe_customer(customer=customer)
            except BillingError as exc:
                self.message_user(request, f"{customer}: {exc}", messages.ERROR)
                continue
            self.log_change(request, customer, f"Synced with Stripe {customer.stripe_customer_id}")
            synced += 1
        if synced:
            self.message_user(
                request, f"{synced} customer(s) created or synced at Stripe.", messages.SUCCESS
            )


def pending_badge(wallet) -> str:
    count = wallet.grants.filter(status="pending").count()
    if not count:
        return ""
    url = (
        reverse("admin:wallets_creditgrant_changelist")
        + f"?status__exact=pending&wallet__id__exact={wallet.pk}"
    )
    return format_html(
        '<a href="{}" style="color:#fff;background:#b54708;padding:2px 8px;border-radius:10px">'
        "{} Requires Action</a>",
        url,
        count,
    )


@admin.register(PortalUser)
class PortalUserAdmin(admin.ModelAdmin):
    list_display = ["user", "customer", "created_at"]
    search_fields = ["user__username", "user__email", "customer__name", "customer__account_number"]
    autocomplete_fields = ["user", "customer"]
