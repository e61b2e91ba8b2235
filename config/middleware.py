"""Middleware of the whole site."""

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)


class RefuseNulInUrl:
    """A NUL character (`%00`) in the path or the query string is refused with a 400
    that says so. PostgreSQL refuses NUL in text, so one that reaches a query (an
    admin search `?q=%00`, a list filter) was a 500; no URL of ours needs one. Form
    fields refuse NUL themselves (Django's CharField), and the API (/api/) answers
    its own 422 naming the parameter."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith("/api/") and (
            "\x00" in request.path
            or any("\x00" in k or any("\x00" in v for v in vs) for k, vs in request.GET.lists())
        ):
            return HttpResponseBadRequest(
                "Bad request: the address contains a NUL character (%00). Remove it and try again.",
                content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)


class RefuseForgedAdminSelection:
    """An admin list action posts the ids of the rows ticked (`_selected_action`).
    A forged selection (`abc`, a NUL, a number past bigint) reached the database as
    a lookup and was a 500; every model in our admin has an integer id, so anything
    but a plain id is refused with a 400 that says so, and nothing is done."""

    BIGINT = 2**63 - 1

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path.startswith("/admin/"):
            selected = request.POST.getlist("_selected_action")
            if not all(v.isascii() and v.isdigit() and int(v) <= self.BIGINT for v in selected):
                return HttpResponseBadRequest(
                    "Bad request: the rows selected for the action are not a list of ids. "
                    "Go back to the list, tick the rows and choose the action again.",
                    content_type="text/plain; charset=utf-8",
                )
        return self.get_response(request)


class PlainServerError:
    """An unexpected error in a page answers the plain 500 page, never Django's
    technical page with its traceback and settings, even with DEBUG on (`make run`):
    the traceback goes to the log. `SHOW_TRACEBACKS=true` brings the technical page
    back on a developer's own machine. First in MIDDLEWARE, so the database-outage
    middleware answers its 503 before this one is asked."""

    HANDLED_BY_DJANGO = (
        Http404, PermissionDenied, BadRequest, SuspiciousOperation, MultiPartParserError,
    )  # fmt: skip

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if settings.SHOW_TRACEBACKS or isinstance(exc, self.HANDLED_BY_DJANGO):
            return None
        logger.exception("unexpected error in %s %s", request.method, request.path)
        # No request context: its processors could fail the same way the view did.
        return HttpResponse(render_to_string("500.html"), status=500)
