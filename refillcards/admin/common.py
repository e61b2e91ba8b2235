"""What every refill card admin page shares: status badges, the form page, the
permission that shows full codes."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import (
    HttpRequest,
)
from django.template.response import TemplateResponse
from django.utils.html import format_html

FULL_CODES = "refillcards.view_full_codes"
STATUS_COLOURS = {"active": "#1a7f37", "used": "#0969da", "disabled": "#6e7781",
                  "expired": "#b35900", "generating": "#8250df", "ready": "#1a7f37",
                  "failed": "#cf222e"}  # fmt: skip


def badge(status: str, label: str) -> str:
    return format_html(
        '<span class="rc-status" style="color:#fff;background:{};padding:2px 8px;'
        'border-radius:10px;font-size:11px">{}</span>',
        STATUS_COLOURS.get(status, "#5b6478"),
        label,
    )


def page(request: HttpRequest, modeladmin: admin.ModelAdmin, **context: Any) -> TemplateResponse:
    return TemplateResponse(
        request,
        "admin/refillcards/form_page.html",
        {**modeladmin.admin_site.each_context(request), "opts": modeladmin.model._meta, **context},
    )
