"""The JSON API root (/api/v1/). Each app's api.py adds a router here."""

from django.db import connection
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError

from billing.api import api_key_of
from billing.api import router as billing_router
from billing.models import ApiKey
from config.outage import install_api_handlers

api = NinjaAPI(
    title="Prepaid back-office API",
    version="1",
    urls_namespace="api",
    description="Usage events, balances, grants and transactions. Authenticate with "
    "`Authorization: Bearer <API key>` (staff create keys in the admin, under API keys).",
)


@api.get("/health", auth=None, tags=["meta"])
def health(request) -> dict[str, str]:
    """Liveness: the web process is up and PostgreSQL answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"status": "ok"}


@api.exception_handler(AuthenticationError)
def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    """401 with the reason, and the challenge RFC 6750 asks for."""
    response = api.create_response(request, {"detail": exc.message}, status=exc.status_code)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@api.exception_handler(ValidationError)
def invalid_input(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """422 with one entry per field, as ninja answers; but a key this process
    remembered (billing.api.ApiKeyAuth) is checked first: a revoked key gets its
    401, whatever it sent."""
    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey) and not key.checked:
        try:
            api_key_of(request)
        except AuthenticationError as refused:
            return unauthorized(request, refused)
    return api.create_response(request, {"detail": exc.errors}, status=422)


# a database outage: 503, Retry-After, {"detail": "the ledger is unavailable; ..."}
install_api_handlers(api)

api.add_router("/", billing_router)
