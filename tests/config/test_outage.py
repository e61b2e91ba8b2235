"""A database that is away answers 503, never a traceback; a connection whose server
ended it costs no request (config/outage.py). The database really is unreachable
here (the connection points at a folder with no server in it, or its session is
ended by PostgreSQL): nothing is mocked."""

import contextlib
import json

import pytest
from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, connection, connections

from config.outage import API_MESSAGE, close_stale_connections

pytestmark = pytest.mark.django_db(transaction=True)  # these tests drop the connection


@contextlib.contextmanager
def database_unreachable(folder):
    """Django's connection points at a socket folder where no server listens."""
    saved = connection.settings_dict.copy()
    saved_options = dict(saved["OPTIONS"])
    connection.close()
    connection.settings_dict["HOST"] = str(folder)
    connection.settings_dict["OPTIONS"] = {**saved_options, "host": str(folder)}
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        connection.settings_dict["OPTIONS"] = saved_options


def end_session_of(wrapper) -> None:
    """What a PostgreSQL restart does to an idle connection: the server ends it."""
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            # waits (up to 5 s) until the backend has exited, so its socket is closed
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    finally:
        other.close()


def test_the_api_answers_503_with_retry_after_while_the_database_is_away(client, tmp_path):
    with database_unreachable(tmp_path):
        response = client.post(
            "/api/v1/usage",
            json.dumps({"event_id": "e-1", "customer": "C-1", "product": "calls", "quantity": 1}),
            content_type="application/json",
            HTTP_AUTHORIZATION="Bearer ppk_whatever",
        )
        health = client.get("/api/v1/health")
    assert response.status_code == 503, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": API_MESSAGE}
    assert int(response["Retry-After"]) > 0
    assert health.status_code == 503
    assert client.get("/api/v1/health").status_code == 200  # back by itself


@pytest.mark.parametrize("path", ["/portal/", "/admin/"])
def test_portal_and_admin_show_a_plain_unavailable_page(client, tmp_path, path):
    staff = User.objects.create_superuser("olivia", password="x")
    client.force_login(staff)
    with database_unreachable(tmp_path):
        response = client.get(path)
    assert response.status_code == 503
    page = response.content.decode()
    assert "Temporarily unavailable" in page
    assert "Traceback" not in page and "OperationalError" not in page
    assert int(response["Retry-After"]) > 0


def test_a_connection_the_server_ended_costs_no_request(client):
    """Issue 14: after a PostgreSQL restart the first request on each web thread
    failed with "server closed the connection unexpectedly"."""
    assert client.get("/api/v1/health").status_code == 200
    end_session_of(connection)
    assert client.get("/api/v1/health").status_code == 200


def test_close_stale_connections_keeps_a_live_connection():
    connection.close()
    connection.ensure_connection()
    alive = connection.connection
    close_stale_connections()
    assert connection.connection is alive
    end_session_of(connection)
    close_stale_connections()
    assert connection.connection is None
