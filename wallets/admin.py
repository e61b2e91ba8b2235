"""Staff views of the ledger. Ledger rows are read-only here: every change goes
through `wallets.services`, behind a form or a confirmation page."""

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

from billing.admin_kit import (
    ReadableDecimals,
    ReadOnlyAdmin,
    ReadOnlyInline,
    amount_text,
    confirm_action,
)
from billing.models import Customer, ProductItem, clean_dimensions
from wallets import errors, services
from wallets.actors import Actor
from wallets.models import (
    Account,
    CreditGrant,
    CreditLimitChange,
    Entry,
    GrantConsumption,
    LedgerTransaction,
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


# --- wallets ------------------------------------------------------------------------


class GrantInline(ReadOnlyInline):
    model = CreditGrant
    fk_name = "wallet"
    fields = (
        "name",
        "kind",
        "status",
        "amount",
        "remaining",
        "effective_at",
        "expires_at",
        "priority",
        "condition",
    )
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="condition")
    def condition(self, obj: CreditGrant) -> str:
        return condition_text(obj)


class LimitChangeInline(ReadOnlyInline):
    model = CreditLimitChange
    fields = (
        "changed_at",
        "actor",
        "old_limit",
        "new_limit",
        "reason",
    )
    readonly_fields = fields


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = [
        "customer",
        "currency",
        "credit_balance",
        "restricted_balance",
        "debt",
        "credit_limit",
        "available",
        "pending_grants",
    ]
    list_filter = ["currency", "customer__balance_model", "customer__partner"]
    search_fields = ["customer__name", "customer__account_number", "customer__email"]
    list_select_related = ["customer"]
    readonly_fields = (
        "customer",
        "currency",
        "credit_balance",
        "restricted_balance",
        "debt",
        "credit_limit",
        "temporary_credit_increase",
        "temporary_increase_valid_until",
        "available",
        "statement",
        "created_at",
        "updated_at",
    )
    fields = readonly_fields
    inlines = [GrantInline, LimitChangeInline]

    @admin.display(description="available funds")
    def available(self, obj: Wallet) -> str:
        return amount_text(obj.available_funds())

    @admin.display(description="requires action")
    def pending_grants(self, obj: Wallet) -> str:
        count = obj.grants.filter(status="pending").count()
        if not count:
            return "—"
        url = (
            reverse("admin:wallets_creditgrant_changelist")
            + f"?status__exact=pending&wallet__id__exact={obj.pk}"
        )
        return format_html(
            '<a href="{}" style="color:#b54708;font-weight:600">{} Requires Action</a>', url, count
        )

    @admin.display(description="transactions")
    def statement(self, obj: Wallet) -> str:
        url = reverse("admin:wallets_ledgertransaction_changelist") + f"?wallet__id__exact={obj.pk}"
        return format_html('<a href="{}">All transactions of this wallet</a>', url)


# --- grants -------------------------------------------------------------------------


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
            from billing.stripe_gateway import stripe_enabled

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
            from billing import stripe_services
            from billing.errors import BillingError

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
        from wallets import recurring

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


# --- transactions -------------------------------------------------------------------


class EntryInline(ReadOnlyInline):
    model = Entry
    fields = (
        "debit_account",
        "credit_account",
        "amount",
        "currency",
    )
    readonly_fields = fields


class LotInline(ReadOnlyInline):
    model = GrantConsumption
    fields = (
        "grant",
        "amount",
    )
    readonly_fields = fields
    verbose_name = "credit drawn from a grant"
    verbose_name_plural = "credit drawn from grants (lots)"


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "effective_at",
        "kind",
        "wallet",
        "amount",
        "currency",
        "balance_after",
        "debt_after",
        "actor",
        "reference",
    ]
    list_filter = ["kind", "currency"]
    search_fields = [
        "idempotency_key",
        "reference",
        "memo",
        "wallet__customer__name",
        "wallet__customer__account_number",
    ]
    list_select_related = ["wallet__customer"]
    date_hierarchy = "effective_at"
    readonly_fields = (
        "kind",
        "wallet",
        "amount",
        "currency",
        "effective_at",
        "created_at",
        "actor",
        "memo",
        "reference",
        "idempotency_key",
        "balance_after",
        "restricted_after",
        "debt_after",
        "reverses",
        "metadata",
    )
    fields = readonly_fields
    inlines = [EntryInline, LotInline]
    actions = ["reverse_transactions"]

    @admin.action(description="Reverse selected transactions", permissions=["reverse"])
    def reverse_transactions(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        actor = Actor.user(request.user)

        def perform(tx: LedgerTransaction, data: dict[str, Any]) -> str:
            reversal = services.reverse(
                transaction_id=tx.pk, actor=actor, idempotency_key=f"admin-reverse:{tx.pk}"
            )
            return f"reversed (by transaction {reversal.pk})" if len(chosen) == 1 else "reversed"

        chosen = list(queryset)
        return confirm_action(
            self, request, action_name="reverse_transactions", title="Reverse transactions", destructive=True,
            question="Reverse these transactions? Each gets a reversing transaction that puts "
            "the money back where it came from (credit to its original grants); nothing is "
            "edited in place.",
            items=[(tx, f"{tx.get_kind_display()} {amount_text(tx.amount)} {tx.currency}")
                   for tx in chosen],
            run=perform, expected=(errors.WalletError,),
        )  # fmt: skip

    def has_reverse_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("wallets.add_ledgertransaction")


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "code", "currency", "wallet"]
    list_filter = ["kind", "code", "currency"]
    search_fields = ["wallet__customer__name"]


@admin.register(CreditLimitChange)
class CreditLimitChangeAdmin(ReadOnlyAdmin):
    list_display = ["changed_at", "wallet", "old_limit", "new_limit", "actor", "reason"]
    list_filter = ["wallet__currency"]
    search_fields = ["wallet__customer__name", "reason"]


# --- scheduled jobs: prepaid credit settings, recurring grants, notifications -------
# (new section; the classes above are unchanged)

from wallets import notifications as notification_service  # noqa: E402
from wallets import recurring  # noqa: E402
from wallets.models import Notification, PrepaidCreditSettings  # noqa: E402


@admin.register(PrepaidCreditSettings)
class PrepaidCreditSettingsAdmin(admin.ModelAdmin):
    """One row: the list page opens it directly."""

    fields = ("default_expiry_count", "default_expiry_unit", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        current = PrepaidCreditSettings.load()
        return HttpResponseRedirect(
            reverse("admin:wallets_prepaidcreditsettings_change", args=[current.pk])
        )


@admin.register(RecurringGrantRule)
class RecurringGrantRuleAdmin(ReadableDecimals, admin.ModelAdmin):
    list_display = [
        "name",
        "customer",
        "amount",
        "currency",
        "kind",
        "active",
        "starts_on",
        "ends_on",
        "next_period_start",
        "grants",
    ]
    list_filter = ["active", "kind", "wallet__currency"]
    search_fields = ["name", "wallet__customer__name", "wallet__customer__account_number"]
    list_select_related = ["wallet__customer"]
    autocomplete_fields = ["wallet"]
    fields = (
        "wallet",
        "name",
        "amount",
        "kind",
        "pending",
        "condition_item",
        "condition_dimensions",
        "priority",
        "expiry_count",
        "expiry_unit",
        "active",
        "starts_on",
        "ends_on",
        "next_period_start",
        "grants",
    )
    readonly_fields = ("next_period_start", "grants")
    actions = ["pause_rules", "resume_rules"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # An existing rule is paused and resumed with the actions (resuming does not
        # catch up the paused periods); its wallet never changes.
        if obj is not None:
            return (*self.readonly_fields, "wallet", "active")
        return tuple(self.readonly_fields)

    @admin.display(description="customer", ordering="wallet__customer__name")
    def customer(self, obj: RecurringGrantRule) -> Customer:
        return obj.wallet.customer

    @admin.display(description="currency")
    def currency(self, obj: RecurringGrantRule) -> str:
        return obj.wallet.currency

    @admin.display(description="grants issued")
    def grants(self, obj: RecurringGrantRule) -> str:
        if obj.pk is None:
            return "—"
        url = (
            reverse("admin:wallets_creditgrant_changelist")
            + f"?source_type=recurring_rule&source_id={obj.pk}"
        )
        return format_html('<a href="{}">Grants of this rule</a>', url)

    @admin.action(description="Pause selected rules", permissions=["change"])
    def pause_rules(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = recurring.pause_rules(rule_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Paused {done} rule(s).", messages.SUCCESS)

    @admin.action(
        description="Resume selected rules from the current period", permissions=["change"]
    )
    def resume_rules(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = recurring.resume_rules(rule_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Resumed {done} rule(s).", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "customer",
        "kind",
        "subject",
        "status",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "last_error",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["subject", "dedupe_key", "recipient", "customer__name", "customer__email"]
    list_select_related = ["customer"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "customer",
        "kind",
        "recipient",
        "subject",
        "body",
        "dedupe_key",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "created_at",
        "sent_at",
    )
    fields = readonly_fields
    actions = ["retry"]

    @admin.action(description="Retry selected failed notifications", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = notification_service.retry_notifications(
            notification_ids=list(queryset.values_list("pk", flat=True))
        )
        self.message_user(request, f"Queued {done} notification(s) again.", messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("wallets.change_notification")


from wallets import admin_limits  # noqa: E402 (Balance & Credits, limit history)

admin_limits.register(admin.site)
