import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing import stripe_services, stripe_webhooks
from billing.admin_kit import ReadableDecimals, ReadOnlyAdmin, amount_text, confirm_action
from billing.errors import BillingError
from billing.models import (
    ApiKey,
    Customer,
    CustomerClass,
    Partner,
    PortalUser,
    Price,
    ProductItem,
    StripeCharge,
    StripeChargeQuerySet,
    StripeEvent,
    StripePaymentMethod,
    UsageEvent,
)
from billing.stripe_gateway import stripe_enabled
from billing.usage import reverse_usage
from wallets.actors import Actor
from wallets.admin_limits import CustomerForm, balance_and_credits_panel, open_new_customer_wallet
from wallets.errors import WalletError
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
    # The add form also asks for the permanent credit limit (wallets.admin_limits).
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
        """The Balance & Credits panel (wallets.admin_limits)."""
        return balance_and_credits_panel(obj)

    def wallet_rows(self, obj: Customer) -> str:
        """Each wallet's balance, debt and pending (Requires Action) credit, with links."""
        if obj.pk is None:
            return "—"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:wallets_wallet_change", args=[w.pk]),
                    w.currency,
                    amount_text(w.credit_balance),
                    amount_text(w.debt),
                    amount_text(w.available_funds()),
                    pending_badge(w),
                )
                for w in obj.wallets.all()
            ),
        )
        add = reverse("admin:wallets_creditgrant_add") + f"?customer={obj.pk}"
        return format_html(
            "<table><tr><th>Wallet</th><th>Credit</th><th>Debt</th><th>Available funds</th><th></th></tr>{}</table>"
            '<p><a class="button" href="{}">Add prepaid credits</a></p>',
            rows,
            add,
        )

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


class PriceInline(ReadableDecimals, admin.TabularInline):
    model = Price
    extra = 1
    fields = ["currency", "unit_price", "dimensions", "effective_from", "effective_to"]
    ordering = ["currency", "-effective_from"]
    verbose_name_plural = (
        "prices (the most specific matching dimensions win, then the latest effective)"
    )


class PriceInForceFilter(admin.SimpleListFilter):
    title = "price in force"
    parameter_name = "priced"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin
    ) -> Iterable[tuple[str, str]]:
        return [("yes", "Has a price now"), ("no", "No price now (usage is refused)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        priced = Price.objects.effective(timezone.now()).values("product_item")
        if self.value() == "yes":
            return queryset.filter(pk__in=priced)
        if self.value() == "no":
            return queryset.exclude(pk__in=priced)
        return queryset


@admin.register(ProductItem)
class ProductItemAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "unit", "active", "prices_now"]
    list_filter = ["active", PriceInForceFilter, "unit", "prices__currency"]
    search_fields = ["code", "name"]
    inlines = [PriceInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProductItem]:
        return super().get_queryset(request).prefetch_related("prices").distinct()

    @admin.display(description="prices in force now")
    def prices_now(self, obj: ProductItem) -> str:
        now = timezone.now()
        current = sorted(
            (p for p in obj.prices.all() if p.is_effective(now)),
            key=lambda p: (p.currency, -p.specificity),
        )
        return ", ".join(str(p).removeprefix(f"{obj.code} ") for p in current) or "—"


@admin.register(Price)
class PriceAdmin(ReadableDecimals, admin.ModelAdmin):
    list_display = [
        "product_item",
        "currency",
        "unit_price",
        "dimensions",
        "effective_from",
        "effective_to",
    ]
    list_filter = ["currency", "product_item", "effective_from"]
    search_fields = ["product_item__code", "product_item__name"]
    list_select_related = ["product_item"]
    autocomplete_fields = ["product_item"]
    date_hierarchy = "effective_from"


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
