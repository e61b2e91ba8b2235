"""The JSON API root (/api/v1/). Each app's api.py adds a router here."""

from django.db import connection
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError

from billing.api import router as billing_router

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


api.add_router("/", billing_router)
