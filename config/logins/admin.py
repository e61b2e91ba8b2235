"""Staff see who is locked out of signing in, until when, and unlock them.

Axes' own admin is switched off (`AXES_ENABLE_ADMIN = False`): its status column
judges each row alone, while a lock counts all rows of an account (or of an
address). This one shows the lock as the sign-in pages apply it."""

from collections.abc import Callable
from datetime import datetime

from axes.admin import AccessAttemptAdmin
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from billing.admin.kit import confirm_action
from config.logins.lockout import attempt_lock_ends, format_until, shown_time
from config.logins.models import FailedSignIn

PARAMETER_NAMES = {"username": "account", "ip_address": "address"}


@admin.register(FailedSignIn)
class FailedSignInAdmin(AccessAttemptAdmin):
    list_display = [
        "username",
        "ip_address",
        "failures_since_start",
        "attempt_time",
        "locked",
        "path_info",
        "user_agent",
    ]
    list_filter = ["path_info", "attempt_time"]
    actions = ["unlock_accounts", "unlock_addresses"]

    @admin.display(description="Locked now")
    def locked(self, obj: FailedSignIn) -> str:
        now = timezone.now()
        ends = attempt_lock_ends(obj, now=now)
        if not ends:
            return "no"
        by_end: dict[datetime, list[str]] = {}
        for parameter, end in ends.items():
            by_end.setdefault(shown_time(end), []).append(PARAMETER_NAMES.get(parameter, parameter))
        return "; ".join(
            f"{' and '.join(names)} until {format_until(end, now=now)}"
            for end, names in sorted(by_end.items())
        )

    @admin.action(
        description="Unlock the accounts of the selected rows (from every address)",
        permissions=["delete"],
    )
    def unlock_accounts(
        self, request: HttpRequest, queryset: QuerySet[FailedSignIn]
    ) -> TemplateResponse | None:
        return self._unlock(request, queryset, "username", "unlock_accounts", "Unlock accounts")

    @admin.action(
        description="Unlock the addresses of the selected rows (for every account)",
        permissions=["delete"],
    )
    def unlock_addresses(
        self, request: HttpRequest, queryset: QuerySet[FailedSignIn]
    ) -> TemplateResponse | None:
        return self._unlock(request, queryset, "ip_address", "unlock_addresses", "Unlock addresses")

    def _unlock(
        self,
        request: HttpRequest,
        queryset: QuerySet[FailedSignIn],
        field: str,
        action_name: str,
        title: str,
    ) -> TemplateResponse | None:
        """Forget every failure of the selected rows' accounts (or addresses): one
        row per account (address) stands for all of them."""
        chosen: dict[object, FailedSignIn] = {}
        for row in queryset.order_by("-attempt_time"):
            chosen.setdefault(getattr(row, field), row)
        items = []
        for value, row in chosen.items():
            failures = FailedSignIn.objects.filter(**{field: value})
            items.append((row, f"{sum(failures.values_list('failures_since_start', flat=True))} "
                               f"failures in {failures.count()} row(s)"))  # fmt: skip

        def unlock(row: FailedSignIn, _data: dict) -> str:
            deleted, _ = FailedSignIn.objects.filter(**{field: getattr(row, field)}).delete()
            return "unlocked" if deleted else "already unlocked"

        run: Callable[[FailedSignIn, dict], str] = unlock
        what = PARAMETER_NAMES[field]
        return confirm_action(
            self,
            request,
            action_name=action_name,
            title=title,
            question=(
                f"Forget the failed sign-ins of each {what} below? Its lock ends at once "
                f"(a lock on the {'address' if what == 'account' else 'account'} stays)."
            ),
            confirm_label="Yes, unlock",
            items=items,
            run=run,
            expected=(),
        )
