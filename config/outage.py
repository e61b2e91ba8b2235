"""What the web answers while PostgreSQL is away, and how a restart of it costs no
request.

- The API answers a database error that ends a request with 503, `Retry-After`
  and the usual `{"detail": ...}`: every money-moving call is idempotent by its
  key, so retrying with the same event id books it at most once
  (`install_api_handlers`, registered by config/api.py).
- Every other page (portal, admin, webhooks) answers with a plain "temporarily
  unavailable" page, 503 (`DatabaseOutageMiddleware`), never a traceback, whatever
  DEBUG says: an outage is not a bug in the code.
- Connections are persistent (CONN_MAX_AGE), so after PostgreSQL restarts each web
  thread and worker process holds one whose server is gone. Before each request
  (and each Celery task, config/celery.py) `close_stale_connections` asks the
  kernel whether an idle connection has anything to read: an idle PostgreSQL
  connection never does, unless the server ended it (the socket is at end of file,
  or holds the server's goodbye). Such a connection is closed, and the request's
  first query opens a fresh one. This costs one `poll()` system call, no round trip
  to the server (unlike CONN_HEALTH_CHECKS' `SELECT 1`); bench/README.md has both
  measured.

Kept apart from the API's other error handlers so each can change on its own.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

#: the errors that mean "the database did not answer" (connection refused or lost,
#: server shutting down, ...), as Django raises them
UNAVAILABLE = (OperationalError, InterfaceError)

API_MESSAGE = "the ledger is unavailable; retry with the same event_id"


def retry_after() -> str:
    return str(settings.OUTAGE_RETRY_AFTER_SECONDS)


def close_stale_connections(**kwargs: object) -> None:
    """Close each idle database connection whose server has ended it (see above)."""
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None or connection.in_atomic_block:
            continue
        if raw.closed or raw.broken or _has_input(raw.fileno()):
            connection.close()


def _has_input(fd: int) -> bool:
    """True when the socket is readable, hung up or in error: for an idle
    PostgreSQL connection, all three mean the server is gone."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


# --- the API ------------------------------------------------------------------------


def install_api_handlers(api: object) -> None:
    """Register the 503 answer on a NinjaAPI (config/api.py)."""

    def database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.warning("database unavailable, answered 503: %s %s: %s", request.method,
                       request.path, _first_line(exc))  # fmt: skip
        response = api.create_response(  # type: ignore[attr-defined]
            request, {"detail": API_MESSAGE}, status=503
        )
        response["Retry-After"] = retry_after()
        return response

    for error in UNAVAILABLE:
        api.add_exception_handler(error, database_unavailable)  # type: ignore[attr-defined]


# --- pages --------------------------------------------------------------------------


class DatabaseOutageMiddleware:
    """First in MIDDLEWARE: drops stale connections before the request, and turns a
    database outage in a view (or its template) into the plain 503 page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        close_stale_connections()
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, UNAVAILABLE):
            return None
        logger.warning("database unavailable, answered 503: %s %s: %s", request.method,
                       request.path, _first_line(exc))  # fmt: skip
        # No request context: its processors (the signed-in user) would ask the database.
        response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = retry_after()
        return response


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
