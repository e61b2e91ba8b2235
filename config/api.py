"""The JSON API root (/api/v1/). Each app's api.py adds a router here.

Errors are always JSON `{"detail": ...}`, never an HTML page or a traceback (not
even with DEBUG): field errors are 422 with one entry per field (ninja's
validation and `billing.api`), everything else goes through `api_error()` below,
the one place that maps an exception type to its status and message.
"""

import json
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from billing.api import ErrorOut, api_key_of, documented
from billing.api import router as billing_router
from billing.api.limits import router as limits_router
from billing.api.subscriptions import router as subscriptions_router
from billing.models import ApiKey
from config.outage import install_api_handlers
from invoices.api import router as invoices_router
from refillcards.api import router as refill_cards_router

log = logging.getLogger(__name__)


class ApiRefusal(Exception):
    """A request refused before any view ran (its body or its media type), with
    the status and the message the client gets."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _no_constant(name: str) -> Any:
    raise ValueError(f'{name} is not a JSON value; send numbers as text, e.g. "2.5"')


class JsonParser(Parser):
    """Request bodies are JSON, sent as JSON: `Content-Type: application/json`
    (or `application/<anything>+json`) and strict JSON (no NaN / Infinity)."""

    def parse_body(self, request: HttpRequest) -> Any:
        media_type = (request.content_type or "").lower()
        if media_type != "application/json" and not (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            raise ApiRefusal(
                415,
                f"Send the body as JSON with 'Content-Type: application/json' "
                f"(got {request.content_type or 'no content type'!r}).",
            )
        try:
            return json.loads(request.body, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            raise ApiRefusal(400, f"The body is not valid JSON: {reason[:200]}.") from None


api = NinjaAPI(
    title="Prepaid back-office API",
    version="1",
    urls_namespace="api",
    parser=JsonParser(),
    description="Usage events, balances, grants and transactions. Authenticate with "
    "`Authorization: Bearer <API key>` (staff create keys in the admin, under API keys).\n\n"
    'Errors are JSON `{"detail": ...}`: 400 a body that is not JSON, 401 a missing, unknown '
    "or revoked key, 404 an unknown customer or event, 413 a body over "
    f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes, 415 a body not sent as "
    "`application/json`, 422 bad input (`detail` is a list with one entry per field: "
    "`loc`, `msg`, `type`; unknown fields are refused), 500 an error on our side (logged; "
    "no details are sent). Usage answers also use 402 (insufficient funds) and 409 (an "
    "event id reused for another event).",
)


HEALTH_RESPONSES = {200: dict[str, str], 500: ErrorOut}


@api.get(
    "/health",
    auth=None,
    tags=["meta"],
    response=HEALTH_RESPONSES,
    openapi_extra=documented(HEALTH_RESPONSES),
)
def health(request) -> dict[str, str]:
    """Liveness: the web process is up and PostgreSQL answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"status": "ok"}


# --- errors ----------------------------------------------------------------------------

INTERNAL_ERROR = (
    "Internal error: the server could not complete this request (it is logged on our "
    "side). Retrying is safe: an event id is booked at most once."
)

# Exceptions (other than field errors, 401 and ninja's HttpError) that have an answer
# of their own: type → (status, message). Looked up along the exception's class
# hierarchy; anything not here is an unexpected error: logged, answered with a 500.
ERROR_ANSWERS: dict[type[BaseException], tuple[int, str]] = {
    RequestDataTooBig: (
        413,
        f"The body is too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes. "
        f"Send at most {settings.USAGE_BATCH_MAX_EVENTS} events per batch.",
    ),
}


def error_response(request: HttpRequest, status: int, detail: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail}, status=status)


@api.exception_handler(Exception)
@api.exception_handler(HttpError)
def api_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """The JSON answer for any exception a view (or ninja, reading the request)
    raised that no more specific handler took. Never a traceback: the client gets
    a message, the log gets the traceback."""
    if isinstance(exc, ApiRefusal):
        return error_response(request, exc.status_code, exc.message)
    if isinstance(exc, HttpError) and isinstance(exc.__cause__, ApiRefusal):
        # ninja wraps whatever the parser raises in a 400 HttpError
        return api_error(request, exc.__cause__)
    if isinstance(exc, HttpError):
        return error_response(request, exc.status_code, str(exc))
    for kind in type(exc).__mro__:
        if kind in ERROR_ANSWERS:
            status, message = ERROR_ANSWERS[kind]
            log.warning("API %s %s: %s (%s)", request.method, request.path, status, exc)
            return error_response(request, status, message)
    log.error("API %s %s failed", request.method, request.path, exc_info=exc)
    return error_response(request, 500, INTERNAL_ERROR)


@api.exception_handler(AuthenticationError)
def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    """401 with the reason, and the challenge RFC 6750 asks for."""
    response = error_response(request, exc.status_code, exc.message)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@api.exception_handler(ValidationError)
def invalid_input(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """422 with one entry per field, as ninja answers; but a key this process
    remembered (billing.api.auth.ApiKeyAuth) is checked first: a revoked key gets its
    401, whatever it sent."""
    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey) and not key.checked:
        try:
            api_key_of(request)
        except AuthenticationError as refused:
            return unauthorized(request, refused)
    return error_response(request, 422, exc.errors)


# a database outage: 503, Retry-After, {"detail": "the ledger is unavailable; ..."}
install_api_handlers(api)

api.add_router("/", billing_router)
api.add_router("/", refill_cards_router)
api.add_router("/", invoices_router)
api.add_router("/", subscriptions_router)
api.add_router("/", limits_router)  # credit limits and transfers (issue 15)


def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other URL under /api/: a JSON 404 (not Django's HTML page)."""
    return HttpResponse(
        json.dumps({"detail": "No such API endpoint; see /api/v1/docs."}),
        status=404,
        content_type="application/json",
    )


# After api.urls in config/urls.py: catches what the API does not route.
not_found_urls = [re_path(r"^api/", not_found)]
