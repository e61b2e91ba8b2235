"""Admin of the catalogue: product items and prices."""

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from billing.admin.kit import ReadableDecimals
from billing.models import (
    Price,
    ProductItem,
)


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
