"""The JSON API root (/api/v1/). Each app's api.py adds a router here."""

from django.db import connection
from ninja import NinjaAPI

api = NinjaAPI(title="Prepaid back-office API", version="1", urls_namespace="api")


@api.get("/health", auth=None, tags=["meta"])
def health(request) -> dict[str, str]:
    """Liveness: the web process is up and PostgreSQL answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"status": "ok"}
