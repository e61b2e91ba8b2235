"""Credit grants in the admin: the grant form (one-off or recurring) and the
actions that activate, void and refund, each through `wallets.services`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin.kit import (
    ReadOnlyAdmin,
    amount_text,
    confirm_action,
)
from billing.models import Customer, ProductItem, clean_dimensions
from wallets import errors, recurring, services
from wallets.actors import Actor
from wallets.models import (
    CreditGrant,
    RecurringGrantRule,
    Wallet,
)

STATUS_COLOURS = {
    "pending": "#b54708",
    "active": "#067647",
    "exhausted": "#5b6478",
    "expired": "#5b6478",
    "voided": "#b42318",
}


def status_badge(grant: CreditGrant) -> str:
    return format_html(
        '<span style="color:#fff;background:{};padding:2px 8px;border-radius:10px;font-size:11px">{}</span>',
        STATUS_COLOURS.get(grant.status, "#5b6478"),
        grant.get_status_display(),
    )


def condition_text(grant: CreditGrant) -> str:
    parts = []
    if grant.condition_item_id:
        parts.append(str(grant.condition_item))
    parts += [f"{k}={v}" for k, v in grant.condition_dimensions.items()]
    return ", ".join(parts) or "—"


class GrantForm(forms.Form):
    """Staff add credit to a customer's wallet; the form calls grant_credit."""

    customer = forms.ModelChoiceField(queryset=Customer.objects.all())
    currency = forms.ChoiceField(
        choices=lambda: [("", "The customer's currency")] + [(c, c) for c in settings.CURRENCIES],
        required=False,
        help_text="Empty: the customer's currency.",
    )
    name = forms.CharField(max_length=200, initial="Prepaid credits")
    amount = forms.DecimalField(max_digits=18, decimal_places=6, min_value=Decimal("0.000001"))
    kind = forms.ChoiceField(
        choices=[(k, label) for k, label in CreditGrant.Kind.choices if k != "transfer"],
        initial="paid",
    )
    payment = forms.ChoiceField(
        choices=[
            ("paid", "Payment received (cash / bank): credit is usable now"),
            (
                "reconcile_later",
                "Reconcile Later: pending, shown as Requires Action until activated",
            ),
            ("now", "Now: charge the customer's default card (Stripe)"),
        ],
        initial="paid",
        widget=forms.RadioSelect,
        help_text="Free credits ignore this: they need no payment.",
    )
    frequency = forms.ChoiceField(
        choices=[("one_time", "One-Time"), ("recurring", "Recurring: once per billing period")],
        initial="one_time",
        widget=forms.RadioSelect,
        help_text="Recurring creates a rule; the grant of the current period is issued at once.",
    )
    effective_at = forms.DateTimeField(required=False, help_text="Empty: now.")
    expires_at = forms.DateTimeField(
        required=False, help_text="Empty: the default period from Prepaid credit settings."
    )
    priority = forms.IntegerField(min_value=0, max_value=32767, initial=100)
    condition_item = forms.ModelChoiceField(
        queryset=ProductItem.objects.filter(active=True), required=False
    )
    condition_dimensions = forms.CharField(
        required=False, help_text="Dimension values, e.g. region=eu, tier=gold (comma-separated)."
    )
    external_transaction_id = forms.CharField(max_length=255, required=False)
    memo = forms.CharField(max_length=500, required=False)

    def clean_condition_dimensions(self) -> dict[str, str]:
        raw = self.cleaned_data["condition_dimensions"].strip()
        dims: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise forms.ValidationError(f"'{part}' is not name=value; write e.g. region=eu.")
            dims[name.strip()] = value.strip()
        try:  # the limits usage dimensions have (length, printable characters)
            return clean_dimensions(dims, what="condition dimensions")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(CreditGrant)
class CreditGrantAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "customer",
        "kind",
        "badge",
        "amount",
        "remaining",
        "currency",
        "condition",
        "expires_at",
        "priority",
    ]
    list_filter = ["status", "kind", "currency", "restricted"]
    search_fields = [
        "name",
        "wallet__customer__name",
        "wallet__customer__account_number",
        "external_transaction_id",
    ]
    list_select_related = ["wallet__customer", "condition_item"]
    readonly_fields = (
        "wallet",
        "name",
        "kind",
        "badge",
        "amount",
        "remaining",
        "currency",
        "effective_at",
        "expires_at",
        "priority",
        "condition",
        "funding_code",
        "source_type",
        "source_id",
        "external_transaction_id",
        "issued_by",
        "created_at",
        "activated_at",
        "ended_at",
    )
    fields = readonly_fields
    actions = ["activate_grants", "void_grants"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("wallets.add_creditgrant")

    @admin.display(description="customer", ordering="wallet__customer__name")
    def customer(self, obj: CreditGrant) -> Customer:
        return obj.wallet.customer

    @admin.display(description="status", ordering="status")
    def badge(self, obj: CreditGrant) -> str:
        return status_badge(obj)

    @admin.display(description="condition")
    def condition(self, obj: CreditGrant) -> str:
        return condition_text(obj)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        initial = {"customer": request.GET.get("customer")} if request.GET.get("customer") else {}
        form = GrantForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                grant = self._grant(request, data)
            except errors.WalletError as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, grant, f"Granted {grant.amount} {grant.currency}")
                state = {
                    "pending": "pending (Requires Action)",
                    "voided": "voided: the card payment failed",
                }.get(grant.status, grant.status)
                self.message_user(request, f"Added {grant} — {state}.", messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:wallets_creditgrant_change", args=[grant.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Add credit",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/wallets/grant_form.html", context)

    def _grant(self, request: HttpRequest, data: dict[str, Any]) -> CreditGrant:
        customer: Customer = data["customer"]
        charge_now = data["payment"] == "now" and data["kind"] != "free"
        if charge_now:
            from billing.stripe.gateway import stripe_enabled

            if not stripe_enabled():
                raise errors.WalletError(
                    "'Now' needs Stripe: set STRIPE_API_KEY, or choose Reconcile Later."
                )
            if not customer.stripe_payment_methods.filter(is_default=True).exists():
                raise errors.WalletError(
                    f"{customer} has no default card at Stripe; add one, or choose Reconcile Later."
                )
        wallet = services.open_wallet(customer=customer, currency=data["currency"] or None)
        if data["frequency"] == "recurring":
            return self._recurring(request, wallet, data)
        starts = data["effective_at"] or timezone.now()
        grant = services.grant_credit(
            wallet=wallet,
            amount=data["amount"],
            kind=data["kind"],
            name=data["name"],
            actor=Actor.user(request.user),
            # one form post = one grant; a double-submitted form carries the same token
            idempotency_key=f"admin-grant:{request.POST.get('csrfmiddlewaretoken', '')}:{customer.pk}",
            pending=data["payment"] in ("reconcile_later", "now") and data["kind"] != "free",
            effective_at=starts,
            expires_at=data["expires_at"],  # none: the service applies the default period
            priority=data["priority"],
            condition_item=data["condition_item"],
            condition_dimensions=data["condition_dimensions"],
            external_transaction_id=data["external_transaction_id"],
            memo=data["memo"],
        )
        if charge_now:
            # The grant waits (pending) until the money is in; a decline voids it.
            from billing.errors import BillingError
            from billing.stripe import services as stripe_services

            try:
                stripe_services.charge_off_session(
                    customer=customer, amount=grant.amount, purpose="grant", grant_id=grant.pk,
                    currency=grant.currency, initiated_by=Actor.user(request.user).label,
                )  # fmt: skip
            except BillingError as exc:
                self.message_user(request, f"The card was not charged ({exc}); the credit stays Requires Action.",
                                  messages.WARNING)  # fmt: skip
            grant.refresh_from_db()
        return grant

    def _recurring(self, request: HttpRequest, wallet: Wallet, data: dict[str, Any]) -> CreditGrant:
        """A recurring grant is a rule (issued once per billing period by the
        "Issue recurring credit grants" job); this period's grant is issued now."""
        if data["payment"] == "now" or data["kind"] not in ("paid", "free"):
            raise errors.WalletError(
                "Recurring credit is paid (Reconcile Later / received) or free; not 'Now'."
            )
        rule = RecurringGrantRule.objects.create(
            wallet=wallet, name=data["name"], amount=data["amount"], kind=data["kind"],
            pending=data["payment"] == "reconcile_later" and data["kind"] != "free",
            condition_item=data["condition_item"], condition_dimensions=data["condition_dimensions"],
            priority=data["priority"],
        )  # fmt: skip
        self.log_addition(request, rule, "Recurring credit rule")
        recurring.issue_recurring_grants(actor=Actor.user(request.user), rule_ids=[rule.pk])
        grant = CreditGrant.objects.filter(
            wallet=wallet, source_type="recurring_rule", source_id=str(rule.pk)
        ).first()
        if grant is None:
            raise errors.WalletError(
                "The rule was saved but no grant was issued for this period; see the job runs."
            )
        return grant

    class ActivateForm(forms.Form):
        external_transaction_id = forms.CharField(
            max_length=255,
            help_text="The payment's id in your payment system (bank reference, PSP id).",
        )

    @admin.action(description="Activate selected Requires Action grants", permissions=["change"])
    def activate_grants(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)

        def perform(grant: CreditGrant, data: dict[str, Any]) -> str:
            services.activate_grant(
                grant=grant, external_transaction_id=data["external_transaction_id"], actor=actor,
                idempotency_key=f"admin-activate:{grant.pk}",
            )  # fmt: skip
            return "activated"

        pending = list(queryset.filter(status="pending").select_related("wallet__customer"))
        left = queryset.count() - len(pending)
        return confirm_action(
            self, request, action_name="activate_grants", title="Activate credit",
            question="Activate these Requires Action grants? Enter the id of the payment "
            "that paid for them; the credit becomes spendable at once.",
            items=[(g, f"{g.wallet.customer} · {amount_text(g.amount)} {g.currency}") for g in pending],
            skipped=f"{left} selected grant(s) are not awaiting payment and are left alone."
            if left else "",
            run=perform, expected=(errors.WalletError,), form_class=self.ActivateForm,
        )  # fmt: skip

    @admin.action(description="Void selected grants (unused part only)", permissions=["change"])
    def void_grants(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)

        def perform(grant: CreditGrant, data: dict[str, Any]) -> str:
            services.void_grant(grant=grant, actor=actor, idempotency_key=f"admin-void:{grant.pk}")
            return "voided"

        grants = list(queryset.select_related("wallet__customer"))
        return confirm_action(
            self, request, action_name="void_grants", title="Void credit", destructive=True,
            question="Void these grants? Only their unused part is taken back (to whoever "
            "funded it); what was already spent stays spent. The ledger records it as a new "
            "transaction; nothing is edited in place.",
            items=[(g, f"{amount_text(g.remaining)} {g.currency} unused") for g in grants],
            run=perform, expected=(errors.WalletError,),
        )  # fmt: skip

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # the change *page* stays read-only (all fields are), actions need the permission
        return request.user.has_perm("wallets.change_creditgrant")
