"""Pieces every app's admin shares.

- `ReadableDecimals`: ledger amounts are kept with six decimals (rates of 0.0001 per
  call draw down exactly), which Django's admin prints as "100.000000". Staff read
  money: the mixin shows every decimal field that keeps more than two places as
  "100.00" or "12.345" (two decimals at least, more only where the value has them)
  in list columns and read-only fields. Editable form fields are left alone.
- `amount_text`: the same formatting for values computed in admin methods.
- `ReadOnlyAdmin` / `ReadOnlyInline`: records only services write.
- `confirm_action`: the one confirmation flow of every admin action.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import models
from django.http import HttpRequest
from django.template.response import TemplateResponse

from billing.money import amount_text

__all__ = [
    "ReadOnlyAdmin", "ReadOnlyInline", "ReadableDecimals", "amount_text", "confirm_action",
]  # fmt: skip


class ReadableDecimals:
    """Mixin for ModelAdmin and inline classes (put it first in the bases)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.make_decimals_readable()

    def make_decimals_readable(self) -> None:
        this: Any = self  # a ModelAdmin or an inline, by the time __init__ ran
        wide = {
            field.name: field
            for field in this.model._meta.fields
            if isinstance(field, models.DecimalField) and field.decimal_places > 2
        }
        if not wide:
            return
        readonly = {name for name in this.readonly_fields if isinstance(name, str)}

        def swap(name: Any, *, always: bool = False) -> Any:
            if isinstance(name, str) and name in wide and (always or name in readonly):
                return self._readable_column(wide[name])
            return name

        def swap_all(names: Any, *, always: bool = False) -> Any:
            return type(names)(swap(name, always=always) for name in names)

        if getattr(this, "list_display", None):
            this.list_display = swap_all(this.list_display, always=True)
        this.readonly_fields = swap_all(this.readonly_fields)
        if this.fields:
            this.fields = swap_all(this.fields)
        if this.fieldsets:
            this.fieldsets = [
                (title, {**options, "fields": swap_all(options["fields"])})
                for title, options in this.fieldsets
            ]

    def _readable_column(self, field: models.DecimalField) -> str:
        name = f"{field.name}_readable"

        @admin.display(description=str(field.verbose_name), ordering=field.name)
        def column(obj: models.Model) -> str:
            return amount_text(getattr(obj, field.name))

        column.__name__ = name
        setattr(self, name, column)
        return name


class ReadOnlyAdmin(ReadableDecimals, admin.ModelAdmin):
    """Records written by services only (ledger rows, events, runs): staff look, and
    act through actions that call the services."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_act_permission(self, request: Any) -> bool:
        """Actions (retry, reverse…) need the model's change permission."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


class ReadOnlyInline(ReadableDecimals, admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


def confirm_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    action_name: str,
    title: str,
    question: str,
    items: list[tuple[Any, str]],
    run: Callable[[Any, dict[str, Any]], str],
    expected: tuple[type[Exception], ...],
    skipped: str = "",
    confirm_label: str = "",
    form_class: type[forms.Form] | None = None,
    destructive: bool = False,
) -> TemplateResponse | None:
    """Every admin action that changes money or state, in the shape of Django's
    delete_selected: a confirmation page listing what will be touched (each with a
    note), asking for any input the service needs (`form_class`); once confirmed,
    `run(obj, form data)` calls the service for each object and returns what
    happened ("voided"), which is logged (LogEntry) and summed up for the user.
    An `expected` error is shown for its object and changes nothing else.
    `destructive` (void, reverse, revoke) shows the confirm button red, as Django's
    delete confirmation does; others (activate, retry) show the ordinary button."""
    if not items:
        modeladmin.message_user(
            request, skipped or "None of the selected items can be changed this way.",
            messages.WARNING,
        )  # fmt: skip
        return None
    confirmed = bool(request.POST.get("post"))
    form = form_class(request.POST if confirmed else None) if form_class else None
    if confirmed and (form is None or form.is_valid()):
        data = form.cleaned_data if form else {}
        details = ", ".join(f"{name.replace('_', ' ')}: {value}" for name, value in data.items())
        outcomes: Counter[str] = Counter()
        for obj, _note in items:
            try:
                outcome = run(obj, data)
            except expected as exc:
                modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
                continue
            modeladmin.log_change(
                request, obj, f"{title}: {outcome}" + (f" ({details})" if details else "")
            )
            outcomes[outcome] += 1
        if outcomes:
            summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items()))
            modeladmin.message_user(request, f"{title}: {summary}.", messages.SUCCESS)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "question": question,
        "confirm_label": confirm_label or f"Yes, {title.split()[0].lower()}",
        "items": items,
        "skipped": skipped,
        "form": form,
        "opts": modeladmin.model._meta,
        "action_name": action_name,
        "destructive": destructive,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media,
    }
    return TemplateResponse(request, "admin/confirm_action.html", context)
