"""A series' cards: redeem for a customer, edit, disable/activate, delete unused."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from billing.admin.kit import confirm_action
from billing.models import Customer
from refillcards import codes, services
from refillcards.admin.common import FULL_CODES, badge, page
from refillcards.errors import REFUSED, CardError, CardRefused
from refillcards.models import (
    CardSeries,
    RedemptionAttempt,
    RefillCard,
)
from wallets.actors import Actor
from wallets.errors import WalletError


class RedeemForm(forms.Form):
    customer = forms.CharField(
        label="Customer account number", max_length=32,
        help_text="The customer whose balance the card tops up (e.g. A0001001).",
    )  # fmt: skip

    def clean_customer(self) -> Customer:
        number = self.cleaned_data["customer"].strip()
        if "\x00" in number:
            raise forms.ValidationError("The account number may not contain NUL characters.")
        found = Customer.objects.filter(account_number=number).select_related("partner").first()
        if found is None:
            raise forms.ValidationError(f"No customer has the account number {number!r}.")
        return found


class CardEditForm(forms.ModelForm):
    status = forms.ChoiceField(
        choices=[("active", "Active"), ("disabled", "Disabled")],
        help_text="Disabled cards cannot be redeemed.",
    )

    class Meta:
        model = RefillCard
        fields = ["valid_until", "status"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        until = data.get("valid_until")
        if data.get("status") == "active" and until is not None and until <= timezone.now():
            self.add_error("valid_until", "An active card needs a valid until in the future.")
        return data


@admin.register(RefillCard)
class RefillCardAdmin(admin.ModelAdmin):
    list_display = ["serial", "code", "value", "status_badge", "valid_until", "used_by",
                    "used_at", "redeemed_by", "row_actions"]  # fmt: skip
    list_filter = ["status", "series__partner", "series"]
    search_fields = ["serial", "used_by__account_number", "used_by__name"]
    list_select_related = ["series__partner", "used_by"]
    list_per_page = 50
    form = CardEditForm
    readonly_fields = ["serial", "series", "code", "value", "status_badge", "used_by", "used_at",
                       "redeemed_by", "grant", "payment", "changed_at"]  # fmt: skip
    fields = ["serial", "series", "code", "value", "status_badge", "valid_until", "status",
              "used_by", "used_at", "redeemed_by", "grant", "payment", "changed_at"]  # fmt: skip
    actions = ["disable_cards", "activate_cards", "delete_unused"]

    class Media:
        css = {"all": ["refillcards/admin.css"]}

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[RefillCard], search_term: str
    ) -> tuple[QuerySet[RefillCard], bool]:
        """A whole code typed into the search finds its card (by its hash)."""
        try:
            code = codes.normalise(search_term)
        except codes.MalformedCode:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(code_hash=codes.lookup_hash(code)), False

    # The ModelAdmin is shared by every request (and thread): who may see full codes is
    # decided per request by the column's name, never by state kept on `self`.
    @staticmethod
    def _codes_for(request: HttpRequest, names: Any) -> list:
        if not request.user.has_perm(FULL_CODES):
            return list(names)
        return ["full_code" if name == "code" else name for name in names]

    def get_list_display(self, request: HttpRequest) -> Any:
        return self._codes_for(request, super().get_list_display(request))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        names = list(self.readonly_fields)
        if obj is not None and obj.status == RefillCard.Status.USED:
            names += ["valid_until", "status"]
        return self._codes_for(request, names)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        names = list(self.fields or [])
        if obj is not None and obj.status == RefillCard.Status.USED:
            names = [f for f in names if f != "status"]
        return self._codes_for(request, names)

    @admin.display(description="code")
    def code(self, obj: RefillCard) -> str:
        return format_html('<code class="rc-code">{}</code>', obj.masked_code())

    @admin.display(description="code")
    def full_code(self, obj: RefillCard) -> str:
        return format_html('<code class="rc-code">{}</code>', obj.full_code())

    @admin.display(description="value", ordering="series__amount")
    def value(self, obj: RefillCard) -> str:
        return obj.series.price

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: RefillCard) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="actions")
    def row_actions(self, obj: RefillCard) -> str:
        if obj.status == RefillCard.Status.USED:
            return "—"
        links = [
            ("Redeem", reverse("admin:refillcards_refillcard_redeem", args=[obj.pk])),
            ("Edit", reverse("admin:refillcards_refillcard_change", args=[obj.pk])),
            ("Delete", reverse("admin:refillcards_refillcard_delete", args=[obj.pk])),
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', ((url, text) for text, url in links))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # cards come from Generate

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.status == RefillCard.Status.USED:
            return False
        return super().has_delete_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.status == RefillCard.Status.USED:
            return False  # a used card is history: view only
        return super().has_change_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        found.pop("delete_selected", None)  # "delete_unused" instead
        return found

    def get_urls(self) -> list:
        return [
            path(
                "<int:pk>/redeem/",
                self.admin_site.admin_view(self.redeem_view),
                name="refillcards_refillcard_redeem",
            ),  # fmt: skip
        ] + super().get_urls()

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        series_id = request.GET.get("series__id__exact", "")
        series = CardSeries.objects.filter(pk=series_id).first() if series_id.isdigit() else None
        context = {"series": series, "can_export": request.user.has_perm(FULL_CODES)}
        return super().changelist_view(request, {**(extra_context or {}), **context})

    def save_model(self, request: HttpRequest, obj: RefillCard, form: Any, change: bool) -> None:
        services.update_card(
            card=obj, valid_until=obj.valid_until, status=obj.status, actor=Actor.user(request.user)
        )

    def changeform_view(
        self, request: HttpRequest, object_id: Any = None, form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:  # fmt: skip
        # Django wraps this view in transaction.atomic(); the service called by
        # save_model runs its own durable transaction, so it must be the outermost.
        try:
            return self._changeform_view(request, object_id, form_url, extra_context)  # type: ignore[attr-defined]
        except CardError as exc:  # used meanwhile
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.path)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: Any = None
    ) -> HttpResponse:
        # Outside Django's atomic block, for the durable service (see changeform_view).
        try:
            return self._delete_view(request, object_id, extra_context)  # type: ignore[attr-defined]
        except CardError as exc:  # used meanwhile
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:refillcards_refillcard_changelist"))

    def delete_model(self, request: HttpRequest, obj: RefillCard) -> None:
        services.delete_card(card=obj, actor=Actor.user(request.user))

    def redeem_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Redeem this card for a customer (staff top up a balance with it)."""
        card = get_object_or_404(RefillCard.objects.select_related("series__partner"), pk=pk)
        if not request.user.has_perm("refillcards.change_refillcard"):
            raise PermissionDenied
        form = RedeemForm(request.POST or None)
        back = (
            reverse("admin:refillcards_refillcard_changelist")
            + f"?series__id__exact={card.series_id}"
        )
        if request.method == "POST" and form.is_valid():
            customer = form.cleaned_data["customer"]
            try:
                result = services.redeem_card(
                    code=codes.decrypt(card.code_encrypted), customer=customer,
                    actor=Actor.user(request.user), channel=RedemptionAttempt.Channel.STAFF,
                    idempotency_key=f"staff:card:{card.pk}:customer:{customer.pk}",
                )  # fmt: skip
            except CardRefused as exc:
                reason = RedemptionAttempt.Outcome(exc.reason).label
                form.add_error(None, f"{REFUSED} Reason: {reason}.")
            except (CardError, WalletError) as exc:
                form.add_error(None, str(exc))
            else:
                self.log_change(request, card, f"Redeemed for {customer}")
                self.message_user(
                    request,
                    f"Card {card.serial} redeemed for {customer}: {result.amount:.2f} "
                    f"{result.grant.currency} added (balance {result.wallet.credit_balance:.2f}).",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(back)
        intro = (
            f"Card {card.serial} ({card.series.price}, {card.series.partner}, valid until "
            f"{timezone.localtime(card.valid_until):%Y-%m-%d %H:%M}). The customer's balance is "
            "topped up with its value and the card is marked used."
        )
        return page(request, self, title=f"Redeem card {card.serial}", form=form,
                    submit="Redeem", intro=intro, object=card)  # fmt: skip

    def _change_cards(self, request: HttpRequest, queryset: QuerySet[RefillCard], status: str,
                      title: str, question: str) -> Any:  # fmt: skip
        if not self.has_change_permission(request):
            raise PermissionDenied
        actor = Actor.user(request.user)
        source = "active" if status == "disabled" else "disabled"
        items = [(c, c.get_status_display()) for c in queryset.filter(status=source)[:1000]]

        def run(card: RefillCard, _: dict) -> str:
            done = services.set_cards_status(cards=[card.pk], status=status, actor=actor)
            return status if done else "unchanged"

        return confirm_action(
            self, request, action_name=f"{'disable' if status == 'disabled' else 'activate'}_cards",
            title=title, question=question, items=items, run=run, expected=(CardError,),
            skipped=f"Only {source} cards can be changed this way.",
        )  # fmt: skip

    @admin.action(description="Disable selected cards")
    def disable_cards(self, request: HttpRequest, queryset: QuerySet[RefillCard]) -> Any:
        return self._change_cards(request, queryset, "disabled", "Disable cards",
                                  "Disable these cards? They cannot be redeemed until activated.")  # fmt: skip

    @admin.action(description="Activate selected cards")
    def activate_cards(self, request: HttpRequest, queryset: QuerySet[RefillCard]) -> Any:
        return self._change_cards(request, queryset, "active", "Activate cards",
                                  "Activate these cards again (those still valid)?")  # fmt: skip

    @admin.action(description="Delete selected unused cards")
    def delete_unused(self, request: HttpRequest, queryset: QuerySet[RefillCard]) -> Any:
        if not request.user.has_perm("refillcards.delete_refillcard"):
            raise PermissionDenied
        actor = Actor.user(request.user)
        items = [(c, c.get_status_display()) for c in queryset.exclude(status="used")[:1000]]

        def run(card: RefillCard, _: dict) -> str:
            services.delete_card(card=card, actor=actor)
            return "deleted"

        return confirm_action(
            self, request, action_name="delete_unused", title="Delete cards",
            question="Delete these unused cards? Their printed codes stop working.",
            items=items, run=run, expected=(CardError,), destructive=True,
            skipped="Used cards cannot be deleted.",
        )  # fmt: skip
