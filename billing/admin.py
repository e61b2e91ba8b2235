from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from billing.models import Customer, CustomerClass, Partner, PortalUser, ProductItem


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


@admin.register(CustomerClass)
class CustomerClassAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "transfers_allowed",
        "max_temporary_increase_amount",
        "max_temporary_increase_days",
    ]
    list_filter = ["transfers_allowed"]
    search_fields = ["name"]


class PortalUserInline(admin.TabularInline):
    model = PortalUser
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["created_at"]


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
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
    readonly_fields = ["created_at", "updated_at", "balances"]
    inlines = [PortalUserInline]
    fieldsets = [
        (
            None,
            {"fields": ["account_number", "name", "email", "partner", "customer_class", "status"]},
        ),
        (
            "Balance",
            {"fields": ["balance_model", "currency", "billing_anchor_day", "transfer_policy"]},
        ),
        ("Wallets", {"fields": ["balances"]}),
        ("Payments", {"fields": ["stripe_customer_id"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="balances")
    def balances(self, obj: Customer) -> str:
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
                    w.credit_balance,
                    w.debt,
                    w.available_funds(),
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


@admin.register(ProductItem)
class ProductItemAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "unit", "active"]
    list_filter = ["active"]
    search_fields = ["code", "name"]
