"""Refill card settings (the global switch), Generate, and the series list (view,
edit, export, delete or disable)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join

from billing.admin.kit import confirm_action
from billing.models import Partner
from refillcards import codes, export, services
from refillcards.admin.common import FULL_CODES, badge, page
from refillcards.errors import CardError, InvalidSeries
from refillcards.models import (
    CardSeries,
    RefillCard,
    RefillCardSettings,
)
from wallets.actors import Actor


@admin.register(RefillCardSettings)
class RefillCardSettingsAdmin(admin.ModelAdmin):
    """One row: the list page opens it directly."""

    fields = ("enabled", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        current = RefillCardSettings.load()
        return HttpResponseRedirect(
            reverse("admin:refillcards_refillcardsettings_change", args=[current.pk])
        )


# --- series ------------------------------------------------------------------------


class GenerateForm(forms.Form):
    quantity = forms.IntegerField(min_value=1, help_text="How many cards.")
    code_prefix = forms.CharField(
        label="Prefix",
        max_length=codes.MAX_PREFIX,
        required=False,
        help_text="Printed before every code: up to 8 digits and letters (not I, L, O, U).",
    )
    amount = forms.DecimalField(
        label="Price", max_digits=12, decimal_places=2, min_value=0.01,
        help_text="What each card adds to the customer's balance.",
    )  # fmt: skip
    currency = forms.ChoiceField(choices=[])
    partner = forms.ModelChoiceField(queryset=Partner.objects.all())
    valid_until = forms.DateTimeField(
        help_text="After this moment the cards cannot be redeemed (YYYY-MM-DD HH:MM, UTC).",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    note = forms.CharField(max_length=200, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["quantity"] = forms.IntegerField(
            min_value=1, max_value=settings.REFILL_CARD_MAX_SERIES,
            help_text=f"How many cards (up to {settings.REFILL_CARD_MAX_SERIES:,}; more than "
            f"{settings.REFILL_CARD_SYNC_LIMIT:,} are generated in the background).",
        )  # fmt: skip
        self.fields["currency"].choices = [(c, c) for c in settings.CURRENCIES]  # type: ignore[attr-defined]

    def clean_code_prefix(self) -> str:
        try:
            return codes.validate_prefix(self.cleaned_data["code_prefix"])
        except codes.MalformedCode as exc:
            raise forms.ValidationError(str(exc)) from None


class SeriesEditForm(forms.ModelForm):
    class Meta:
        model = CardSeries
        fields = ["valid_until", "note"]
        help_texts = {
            "valid_until": "Applies to the series' active and expired cards too (expired ones "
            "become active again); used and disabled cards keep theirs."
        }

    def clean_valid_until(self) -> Any:
        value = self.cleaned_data["valid_until"]
        if value <= timezone.now():
            raise forms.ValidationError("Valid until must be in the future.")
        return value


@admin.register(CardSeries)
class CardSeriesAdmin(admin.ModelAdmin):
    list_display = ["__str__", "partner", "price_text", "progress", "used", "valid_until",
                    "status_badge", "created_at", "row_actions"]  # fmt: skip
    list_filter = ["status", "partner", "currency"]
    search_fields = ["prefix", "note", "=id"]
    list_select_related = ["partner"]
    form = SeriesEditForm
    readonly_fields = ["progress", "status_badge", "prefix", "quantity", "price_text", "partner",
                       "created_at", "created_by", "error", "used", "row_actions"]  # fmt: skip
    fieldsets = [
        (None, {"fields": ["progress", "status_badge", "row_actions"]}),
        (
            "Series",
            {
                "fields": [
                    "prefix",
                    "quantity",
                    "price_text",
                    "partner",
                    "created_at",
                    "created_by",
                    "used",
                    "error",
                ]
            },
        ),  # fmt: skip
        ("Edit", {"fields": ["valid_until", "note"]}),
    ]
    actions = ["disable_cards"]

    class Media:
        css = {"all": ["refillcards/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[CardSeries]:
        return (
            super()
            .get_queryset(request)
            .annotate(used_cards=Count("cards", filter=Q(cards__status=RefillCard.Status.USED)))
        )

    @admin.display(description="price", ordering="amount")
    def price_text(self, obj: CardSeries) -> str:
        return obj.price

    @admin.display(description="generated")
    def progress(self, obj: CardSeries) -> str:
        return f"{obj.generated:,} of {obj.quantity:,}"

    @admin.display(description="used", ordering="used_cards")
    def used(self, obj: CardSeries) -> int:
        return getattr(obj, "used_cards", None) or obj.cards.filter(status="used").count()

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: CardSeries) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="actions")
    def row_actions(self, obj: CardSeries) -> str:
        links = [
            ("View cards", reverse("admin:refillcards_refillcard_changelist") + f"?series__id__exact={obj.pk}"),
            ("Edit", reverse("admin:refillcards_cardseries_change", args=[obj.pk])),
            ("Export", reverse("admin:refillcards_cardseries_export", args=[obj.pk])),
            ("Delete", reverse("admin:refillcards_cardseries_delete", args=[obj.pk])),
        ]  # fmt: skip
        return format_html_join(" · ", '<a href="{}">{}</a>', ((url, text) for text, url in links))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("refillcards.delete_cardseries")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        found.pop("delete_selected", None)  # one series at a time, through the service
        return found

    def get_urls(self) -> list:
        return [
            path(
                "<int:pk>/export/",
                self.admin_site.admin_view(self.export_view),
                name="refillcards_cardseries_export",
            ),  # fmt: skip
        ] + super().get_urls()

    # Generate (Splynx: Finance → Refill cards → Generate)
    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = GenerateForm(request.POST or None)
        enabled = RefillCardSettings.is_enabled()
        if request.method == "POST" and form.is_valid() and enabled:
            data = form.cleaned_data
            try:
                series = services.create_series(
                    prefix=data["code_prefix"], quantity=data["quantity"], amount=data["amount"],
                    currency=data["currency"], partner=data["partner"],
                    valid_until=data["valid_until"], note=data["note"],
                    actor=Actor.user(request.user),
                )  # fmt: skip
            except InvalidSeries as exc:
                name = {
                    "valid until": "valid_until",
                    "price": "amount",
                    "prefix": "code_prefix",
                }.get(exc.field, exc.field)
                form.add_error(name if name in form.fields else None, exc.message)
            except CardError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, series, f"Generated {series.quantity} cards")
                if series.status == CardSeries.Status.READY:
                    self.message_user(
                        request, f"Generated {series.quantity:,} cards: {series}.", messages.SUCCESS
                    )
                    return HttpResponseRedirect(
                        reverse("admin:refillcards_refillcard_changelist")
                        + f"?series__id__exact={series.pk}"
                    )
                self.message_user(
                    request, f"Generating {series.quantity:,} cards in the background.",
                    messages.INFO,
                )  # fmt: skip
                return HttpResponseRedirect(
                    reverse("admin:refillcards_cardseries_change", args=[series.pk])
                )
        intro = "" if enabled else (
            "Refill cards are disabled: enable them under Refill card settings first."
        )  # fmt: skip
        return page(request, self, title="Generate refill cards", form=form,
                    submit="Generate", intro=intro)  # fmt: skip

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        series = self.get_object(request, object_id)
        generating = series is not None and series.status == CardSeries.Status.GENERATING
        # Not Django's changeform_view: it wraps the save in transaction.atomic(), and
        # save_model's service runs its own durable transaction.
        try:
            return self._changeform_view(  # type: ignore[attr-defined]
                request, object_id, form_url, {**(extra_context or {}), "refresh": generating}
            )
        except CardError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.path)

    def save_model(self, request: HttpRequest, obj: CardSeries, form: Any, change: bool) -> None:
        # The new valid until also applies to the unused cards: the service does it.
        services.update_series(
            series=obj, valid_until=obj.valid_until, note=obj.note, actor=Actor.user(request.user)
        )

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        """Delete only while no card was used; otherwise offer to disable the series."""
        series = get_object_or_404(CardSeries, pk=object_id)
        if not self.has_delete_permission(request, series):
            raise PermissionDenied
        used = series.cards.filter(status=RefillCard.Status.USED).count()
        actor = Actor.user(request.user)
        changelist = reverse("admin:refillcards_cardseries_changelist")
        if request.method == "POST":
            try:
                if request.POST.get("do") == "disable" and self.has_change_permission(request):
                    count = services.disable_series(series=series, actor=actor)
                    self.log_change(request, series, f"Disabled {count} unused cards")
                    self.message_user(
                        request, f"{series}: {count} cards disabled.", messages.SUCCESS
                    )
                elif request.POST.get("do") == "delete":
                    label, pk = str(series), series.pk
                    count = services.delete_series(series=series, actor=actor)
                    series.pk = pk  # for the LogEntry
                    self.log_deletions(request, [series])  # type: ignore[arg-type]
                    self.message_user(
                        request, f"Deleted {label} and its {count} cards.", messages.SUCCESS
                    )
                else:
                    raise PermissionDenied
            except CardError as exc:
                self.message_user(request, f"{series}: {exc}", messages.ERROR)
            return HttpResponseRedirect(changelist)
        if used:
            question = (
                f"{used} card(s) of {series} were used, so the series cannot be deleted (its "
                "payments refer to it). Disable its unused cards instead? They can no longer "
                "be redeemed."
            )
            buttons = [("disable", "Yes, disable the unused cards", True)]
        else:
            question = (
                f"Delete {series} and all its {series.cards.count():,} cards? None was used. "
                "Printed or exported codes stop working."
            )
            buttons = [("delete", "Yes, delete", True)]
        return page(request, self, title=f"Delete {series}", intro=question, buttons=buttons)

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponseBase:
        """Splynx's export icon: pick CSV or PDF, then download. Full codes, so only
        with the dedicated permission; every export is logged."""
        series = get_object_or_404(CardSeries, pk=pk)
        if not request.user.has_perm(FULL_CODES):
            raise PermissionDenied
        if request.method == "POST":
            kind = request.POST.get("format")
            actor = Actor.user(request.user)
            try:
                if kind == "csv":
                    response: HttpResponse | StreamingHttpResponse = export.csv_response(
                        series, actor=actor
                    )
                elif kind == "pdf":
                    response = export.pdf_response(series, actor=actor)
                else:
                    raise Http404("unknown export format")
            except CardError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return HttpResponseRedirect(request.path)
            self.log_change(request, series, f"Exported as {kind.upper()}")
            return response
        exports = series.exports.all()[:10]
        return page(
            request, self, title=f"Export {series}",
            intro=f"{series.cards.count():,} cards with their full codes. Every export is logged.",
            buttons=[("csv", "Download CSV", False), ("pdf", "Download PDF", False)],
            button_name="format", exports=exports,
        )  # fmt: skip

    @admin.action(description="Disable the unused cards of the selected series")
    def disable_cards(self, request: HttpRequest, queryset: QuerySet[CardSeries]) -> Any:
        if not self.has_change_permission(request):
            raise PermissionDenied
        actor = Actor.user(request.user)
        return confirm_action(
            self, request, action_name="disable_cards", title="Disable cards",
            question="Disable every active card of these series? They can no longer be redeemed.",
            items=[(s, f"{s.cards.filter(status='active').count():,} active") for s in queryset],
            run=lambda s, _: f"{services.disable_series(series=s, actor=actor)} cards disabled",
            expected=(CardError,), destructive=True,
        )  # fmt: skip
