"""Balance & Credits in the admin (PortaBilling's tab of that name): the panel on the
customer page, and its actions — change the permanent credit limit, grant or end a
temporary increase, transfer credit to another customer. Each action is a form,
then a confirmation page, then one service call (wallets.services.credit_limits / services.transfer)
with an idempotency key made from a token the form carries, so a double-click
applies once; it is logged (LogEntry on the customer) and reported (message).

Also: the customer form's permanent limit at creation (`CustomerForm`), the global
"maximum possible increase" settings, and the credit limit history (read-only).
Mounted under /admin/balance/ (config/urls.py); registered by wallets/admin/__init__.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from billing.admin.kit import ReadOnlyAdmin
from billing.models import Customer
from billing.money import amount_text
from billing.thresholds import format_amounts, format_percents
from wallets import errors, services
from wallets.actors import Actor
from wallets.models import CreditLimitChange, CreditLimitSettings, LedgerTransaction, Wallet
from wallets.services import credit_limits as limits

PERMISSION = "wallets.change_wallet"
HISTORY_ROWS = 5


# --- the panel ----------------------------------------------------------------------


def _transfer_policy(customer: Customer) -> str:
    allowed = "Yes" if customer.transfers_allowed() else "No"
    if customer.transfer_policy != Customer.TransferPolicy.INHERIT:
        return allowed
    klass = customer.customer_class
    where = f"customer class {klass}" if klass else "no customer class"
    return f"As defined by the customer class ({where}) → {allowed}"


def _wallet_panel(wallet: Wallet, now: datetime) -> dict[str, Any]:
    customer = wallet.customer
    state = limits.limit_state(wallet, now)
    maximum = limits.maximum_increase(customer)
    history = list(wallet.limit_changes.order_by("-changed_at", "-id")[:HISTORY_ROWS])
    low = format_amounts(wallet.low_funds_thresholds or [])
    pct = format_percents(wallet.credit_limit_warnings or [])
    return {
        "wallet": wallet,
        "state": state,
        "unrestricted": wallet.unrestricted_balance,
        "available": wallet.available_funds(now),
        "maximum": maximum.text(wallet.currency),
        "latest_valid_until": now + timedelta(days=maximum.days),
        "history": history,
        "low_funds": low,
        "limit_warnings": pct,
        "pending": wallet.grants.filter(status="pending").count(),
        "history_url": reverse("admin:wallets_creditlimitchange_changelist")
        + f"?wallet__id__exact={wallet.pk}",
        "transactions_url": reverse("admin:wallets_ledgertransaction_changelist")
        + f"?wallet__id__exact={wallet.pk}",
        "pending_url": reverse("admin:wallets_creditgrant_changelist")
        + f"?status__exact=pending&wallet__id__exact={wallet.pk}",
        "wallet_url": reverse("admin:wallets_wallet_change", args=[wallet.pk]),
        "urls": {
            name: reverse(f"balance:{name}", args=[wallet.pk])
            for name in ("permanent", "temporary", "end", "transfer")
        },
    }


def balance_and_credits_panel(customer: Customer) -> SafeString:
    """The panel on the customer page: one glance at balances, limits, thresholds,
    transfer policy and the last limit changes, with the actions."""
    if customer.pk is None:
        return SafeString("—")
    now = timezone.now()
    wallets = [_wallet_panel(w, now) for w in customer.wallets.select_related("customer__customer_class").order_by("currency")]  # fmt: skip
    return SafeString(
        render_to_string(
            "admin/wallets/balance_panel.html",
            {
                "customer": customer,
                "wallets": wallets,
                "postpaid": not customer.is_prepaid,
                "transfer_policy": _transfer_policy(customer),
                "add_credit_url": reverse("admin:wallets_creditgrant_add")
                + f"?customer={customer.pk}",
                "now": now,
            },
        )
    )


# --- the customer form: the permanent limit at creation ----------------------------


class CustomerForm(forms.ModelForm):
    """The customer form; on the add page it also asks for the permanent credit
    limit (PortaBilling: "the credit limit value defined for a customer during
    creation"). Saving a new customer opens its wallet with that limit."""

    permanent_credit_limit = forms.DecimalField(
        label="permanent credit limit",
        required=False,
        min_value=Decimal("0"),
        max_digits=17,
        decimal_places=2,
        initial=Decimal("0"),
        help_text="How far into debt the customer may go (postpaid). 0 for prepaid customers "
        "who may not owe. Changed later from the Balance & Credits panel, with a reason.",
    )

    class Meta:
        model = Customer
        fields = [
            "account_number", "name", "email", "partner", "customer_class", "status",
            "balance_model", "currency", "billing_anchor_day", "transfer_policy",
            "low_funds_thresholds", "credit_limit_warnings",
        ]  # fmt: skip


def open_new_customer_wallet(request: HttpRequest, customer: Customer, form: forms.Form) -> Wallet:
    """Called by the customer admin after saving a new customer."""
    limit = form.cleaned_data.get("permanent_credit_limit") or Decimal("0")
    return services.open_wallet_with_limit(
        customer=customer, limit=limit, actor=Actor.user(request.user)
    )


# --- the action pages --------------------------------------------------------------


class TokenForm(forms.Form):
    # The idempotency key's variable part: made when the form is shown, carried
    # through the confirmation, so a retried or double-clicked submit applies once.
    token = forms.UUIDField(widget=forms.HiddenInput)


class PermanentLimitForm(TokenForm):
    limit = forms.DecimalField(
        label="new permanent credit limit", min_value=Decimal("0"), max_digits=17, decimal_places=2
    )
    reason = forms.CharField(max_length=500, help_text="Why: kept in the credit limit history.")


class TemporaryIncreaseForm(TokenForm):
    increase_as = forms.ChoiceField(
        choices=[("amount", "An amount"), ("percent", "A percentage of the permanent limit")],
        widget=forms.RadioSelect,
        initial="amount",
    )
    value = forms.DecimalField(
        label="temporary increase", min_value=Decimal("0.01"), max_digits=17, decimal_places=2
    )
    valid_until = forms.DateTimeField(
        label="valid until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        help_text="The increase reverts to the permanent limit at this moment exactly.",
    )
    reason = forms.CharField(max_length=500, help_text="Why: kept in the credit limit history.")


class EndIncreaseForm(TokenForm):
    reason = forms.CharField(max_length=500, help_text="Why: kept in the credit limit history.")


class TransferForm(TokenForm):
    receiver = forms.CharField(
        label="to account number", max_length=32, help_text="The receiving customer's account."
    )
    amount = forms.DecimalField(min_value=Decimal("0.01"), max_digits=17, decimal_places=2)
    memo = forms.CharField(max_length=200, required=False)

    def clean_receiver(self) -> Customer:
        number = self.cleaned_data["receiver"].strip()
        customer = Customer.objects.filter(account_number=number).first()
        if customer is None:
            raise forms.ValidationError(f"No customer has account number {number!r}.")
        return customer


def _wallet_or_404(wallet_id: int) -> Wallet:
    wallet = Wallet.objects.select_related("customer__customer_class").filter(pk=wallet_id).first()
    if wallet is None:
        raise Http404("No such wallet.")
    return wallet


def _customer_admin() -> admin.ModelAdmin:
    return admin.site._registry[Customer]


class Action:
    """One panel action: its form, what the confirmation says, the service call."""

    title = ""
    form_class: type[TokenForm] = TokenForm
    confirm_label = "Yes, apply"

    def check(self, wallet: Wallet) -> None:
        """Refuse the action for this wallet before any form is shown."""

    def initial(self, wallet: Wallet) -> dict[str, Any]:
        return {}

    def summary(self, wallet: Wallet, data: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def apply(self, wallet: Wallet, data: dict[str, Any], actor: Actor, key: str) -> str:
        raise NotImplementedError

    def hint(self, wallet: Wallet) -> str:
        return ""

    def applied(self, key: str) -> bool:
        """Whether this key already did its work (a double-click, a resubmit)."""
        return CreditLimitChange.objects.filter(idempotency_key=key).exists()


class PermanentAction(Action):
    title = "Change the permanent credit limit"
    form_class = PermanentLimitForm
    confirm_label = "Yes, change the limit"

    def initial(self, wallet: Wallet) -> dict[str, Any]:
        return {"limit": wallet.credit_limit.quantize(Decimal("0.01"))}

    def summary(self, wallet: Wallet, data: dict[str, Any]) -> list[str]:
        return [
            f"Permanent credit limit: {amount_text(wallet.credit_limit)} → "
            f"{amount_text(data['limit'])} {wallet.currency}",
            f"Reason: {data['reason']}",
        ]

    def apply(self, wallet: Wallet, data: dict[str, Any], actor: Actor, key: str) -> str:
        change = services.change_permanent_limit(
            wallet=wallet, limit=data["limit"], actor=actor, reason=data["reason"],
            idempotency_key=key,
        )  # fmt: skip
        if change is None:
            return f"The permanent credit limit is already {amount_text(data['limit'])}; nothing changed."
        return f"Permanent credit limit {amount_text(change.old_limit)} → {amount_text(change.new_limit)} {wallet.currency}."


class TemporaryAction(Action):
    title = "Grant a temporary credit-limit increase"
    form_class = TemporaryIncreaseForm
    confirm_label = "Yes, grant the increase"

    def check(self, wallet: Wallet) -> None:
        if wallet.customer.is_prepaid:
            raise errors.LimitRefused(
                "Temporary credit-limit increases are for postpaid customers only; "
                f"{wallet.customer} is prepaid."
            )

    def hint(self, wallet: Wallet) -> str:
        maximum = limits.maximum_increase(wallet.customer)
        latest = timezone.now() + timedelta(days=maximum.days)
        return (
            f"Maximum possible increase: {maximum.text(wallet.currency)}; Valid Until at the "
            f"latest {latest:%Y-%m-%d %H:%M} UTC. A percentage needs a positive permanent limit "
            f"(now {amount_text(wallet.credit_limit)} {wallet.currency})."
        )

    def summary(self, wallet: Wallet, data: dict[str, Any]) -> list[str]:
        how = (
            f"{data['value']}% of the permanent limit {amount_text(wallet.credit_limit)}"
            if data["increase_as"] == "percent"
            else f"{amount_text(data['value'])} {wallet.currency}"
        )
        return [
            f"Temporary increase: {how}",
            f"Valid Until: {data['valid_until']:%Y-%m-%d %H:%M} UTC",
            f"Reason: {data['reason']}",
        ]

    def apply(self, wallet: Wallet, data: dict[str, Any], actor: Actor, key: str) -> str:
        size = {"percent" if data["increase_as"] == "percent" else "amount": data["value"]}
        change = services.grant_temporary_increase(
            wallet=wallet, valid_until=data["valid_until"], actor=actor, reason=data["reason"],
            idempotency_key=key, **size,
        )  # fmt: skip
        return (
            f"Temporary increase of {amount_text(change.new_temporary_increase)} {wallet.currency} "
            f"until {change.valid_until:%Y-%m-%d %H:%M} UTC."
        )


class EndAction(Action):
    title = "End the temporary credit-limit increase"
    form_class = EndIncreaseForm
    confirm_label = "Yes, end the increase"

    def check(self, wallet: Wallet) -> None:
        if wallet.effective_credit_limit() <= wallet.credit_limit:
            raise errors.LimitRefused("No temporary increase is in force for this wallet.")

    def summary(self, wallet: Wallet, data: dict[str, Any]) -> list[str]:
        state = limits.limit_state(wallet)
        return [
            f"Effective credit limit: {amount_text(state.effective)} → "
            f"{amount_text(state.permanent)} {wallet.currency} now, instead of at "
            f"{state.valid_until:%Y-%m-%d %H:%M} UTC",
            f"Debt above the permanent limit after this: "
            f"{amount_text(max(state.debt - state.permanent, Decimal(0)))} {wallet.currency}",
            f"Reason: {data['reason']}",
        ]

    def apply(self, wallet: Wallet, data: dict[str, Any], actor: Actor, key: str) -> str:
        change = services.end_temporary_increase(
            wallet=wallet, actor=actor, reason=data["reason"], idempotency_key=key
        )
        if change is None:
            return "No temporary increase was in force; nothing changed."
        return f"Temporary increase of {amount_text(change.old_temporary_increase)} ended."


class TransferAction(Action):
    title = "Transfer credit to another customer"
    form_class = TransferForm
    confirm_label = "Yes, transfer"

    def hint(self, wallet: Wallet) -> str:
        spendable = wallet.spendable_credit()
        return (
            f"Only unrestricted credit in force moves ({amount_text(spendable)} {wallet.currency} "
            f"now), never the credit limit; the receiver keeps each credit's expiry. Transfers "
            f"allowed for this customer: {_transfer_policy(wallet.customer)}."
        )

    def summary(self, wallet: Wallet, data: dict[str, Any]) -> list[str]:
        receiver: Customer = data["receiver"]
        return [
            f"From: {wallet.customer} ({wallet.currency})",
            f"To: {receiver} — transfers allowed: {_transfer_policy(receiver)}",
            f"Amount: {amount_text(data['amount'])} {wallet.currency}",
            *([f"Memo: {data['memo']}"] if data.get("memo") else []),
        ]

    def applied(self, key: str) -> bool:
        return LedgerTransaction.objects.filter(idempotency_key=key).exists()

    def apply(self, wallet: Wallet, data: dict[str, Any], actor: Actor, key: str) -> str:
        receiver: Customer = data["receiver"]
        target = Wallet.objects.filter(customer=receiver, currency=wallet.currency).first()
        if target is None:
            raise errors.CurrencyMismatch(
                f"{receiver} has no {wallet.currency} wallet; transfers need the same currency."
            )
        tx = services.transfer(
            source=wallet, target=target, amount=data["amount"], actor=actor,
            idempotency_key=key, memo=data.get("memo") or "",
        )  # fmt: skip
        return f"Transferred {amount_text(tx.amount)} {wallet.currency} to {receiver} (transaction #{tx.pk})."


ACTIONS: dict[str, Action] = {
    "permanent": PermanentAction(),
    "temporary": TemporaryAction(),
    "end": EndAction(),
    "transfer": TransferAction(),
}


def action_view(request: HttpRequest, wallet_id: int, name: str) -> HttpResponse:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    action = ACTIONS[name]
    wallet = _wallet_or_404(wallet_id)
    customer = wallet.customer
    back = reverse("admin:billing_customer_change", args=[customer.pk])
    try:
        action.check(wallet)
    except errors.WalletError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(back)
    if request.method == "POST":
        form = action.form_class(request.POST)
    else:
        form = action.form_class(initial={"token": uuid.uuid4(), **action.initial(wallet)})
    confirming = False
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            if request.POST.get("confirmed") == "yes":
                key = f"admin:{name}:{wallet.pk}:{data['token']}"
                if action.applied(key):
                    messages.info(request, "This was already done (the form was sent twice).")
                    return HttpResponseRedirect(back)
                try:
                    outcome = action.apply(wallet, data, Actor.user(request.user), key)
                except errors.WalletError as exc:
                    field = getattr(exc, "field", "")
                    form.add_error(field if field in form.fields else None, str(exc))
                    status = 400
                else:
                    _customer_admin().log_change(request, customer, f"{action.title}: {outcome}")
                    messages.success(request, outcome)
                    return HttpResponseRedirect(back)
            else:
                confirming = True
        else:
            status = 400
    if "valid_until" in form.fields and not form.is_bound:
        form.initial.setdefault(
            "valid_until",
            (timezone.now() + timedelta(days=7)).astimezone(UTC).replace(second=0, microsecond=0),
        )
    context = {
        **admin.site.each_context(request),
        "title": action.title,
        "subtitle": str(customer),
        "customer": customer,
        "wallet": wallet,
        "form": form,
        "confirming": confirming,
        "summary": action.summary(wallet, form.cleaned_data) if confirming else [],
        "hint": action.hint(wallet),
        "confirm_label": action.confirm_label,
        "back": back,
        "opts": Customer._meta,
        "state": limits.limit_state(wallet),
    }
    return TemplateResponse(request, "admin/wallets/balance_action.html", context, status=status)


def _view(name: str) -> Any:
    def view(request: HttpRequest, wallet_id: int) -> HttpResponse:
        return action_view(request, wallet_id, name)

    view.__name__ = f"{name}_view"
    return admin.site.admin_view(view)


app_name = "balance"
urlpatterns = [path(f"wallet/<int:wallet_id>/{name}/", _view(name), name=name) for name in ACTIONS]


# --- settings and history ------------------------------------------------------------


class CreditLimitSettingsAdmin(admin.ModelAdmin):
    """One row: the list page opens it directly."""

    fields = ("max_temporary_increase_amount", "max_temporary_increase_days", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        current = CreditLimitSettings.load()
        return HttpResponseRedirect(
            reverse("admin:wallets_creditlimitsettings_change", args=[current.pk])
        )


class CreditLimitChangeAdmin(ReadOnlyAdmin):
    """The credit limit history: every change, read-only."""

    list_display = [
        "changed_at", "wallet", "kind", "old_limit", "new_limit", "old_temporary_increase",
        "new_temporary_increase", "valid_until", "actor", "reason",
    ]  # fmt: skip
    list_filter = ["kind", "wallet__currency", "wallet__customer__balance_model"]
    search_fields = ["wallet__customer__name", "wallet__customer__account_number", "reason"]
    list_select_related = ["wallet__customer"]
    date_hierarchy = "changed_at"


def register(site: admin.AdminSite) -> None:
    """Called by wallets/admin/__init__.py: the settings, and the history admin in
    place of the plain one in wallets/admin/ledger.py."""
    site.register(CreditLimitSettings, CreditLimitSettingsAdmin)
    if site.is_registered(CreditLimitChange):
        site.unregister(CreditLimitChange)
    site.register(CreditLimitChange, CreditLimitChangeAdmin)
