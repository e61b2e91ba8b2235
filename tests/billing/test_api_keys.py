"""API keys: bearer authentication with clear 401s, hashed storage, the admin."""

import hashlib
from datetime import timedelta

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from billing.models import ApiKey

pytestmark = pytest.mark.django_db
BALANCE = "/api/v1/customers/{}/balance"
KEYS = "/admin/billing/apikey/"


def get_balance(client, customer, **headers):
    return client.get(BALANCE.format(customer.account_number), headers=headers)


def test_only_the_hash_of_the_secret_is_stored(api_key):
    key, token = api_key
    assert token.startswith("ppk_") and len(token) > 40
    assert key.secret_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(key.prefix) and len(key.prefix) == 12
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert token not in str(stored)


def test_a_valid_key_is_accepted_and_its_use_recorded(api_key, alice):
    key, token = api_key
    response = get_balance(Client(), alice, Authorization=f"Bearer {token}")
    assert response.status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_last_used_is_written_at_most_once_a_minute(api_key, alice):
    key, token = api_key
    client = Client(headers={"Authorization": f"Bearer {token}"})
    get_balance(client, alice)
    key.refresh_from_db()
    first = key.last_used_at
    get_balance(client, alice)
    key.refresh_from_db()
    assert key.last_used_at == first
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        get_balance(client, alice)
    key.refresh_from_db()
    assert key.last_used_at > first


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing API key: send the header 'Authorization: Bearer <your API key>'."),
        ("Basic abc", "The Authorization header must read 'Bearer <your API key>'."),
        ("Bearer", "The Authorization header must read 'Bearer <your API key>'."),
        ("Bearer ppk_not-a-real-key", "Invalid API key: no such key."),
        ("Bearer something-else", "Invalid API key: no such key."),
    ],
)
def test_missing_or_invalid_keys_get_401_with_the_reason(alice, header, message):
    headers = {"Authorization": header} if header else {}
    response = get_balance(Client(), alice, **headers)
    assert response.status_code == 401
    assert response.json()["detail"].startswith(message)
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_revoked_key_gets_401_at_once(api_key, alice):
    key, token = api_key
    client = Client(headers={"Authorization": f"Bearer {token}"})
    assert get_balance(client, alice).status_code == 200

    assert key.revoke(by="admin") is True
    assert key.revoke(by="admin") is False  # once

    response = get_balance(client, alice)
    assert response.status_code == 401
    assert "was revoked on" in response.json()["detail"]
    assert "ask staff for a new one" in response.json()["detail"]


def test_every_usage_route_needs_a_key(alice):
    client = Client()
    for method, path in [
        ("post", "/api/v1/usage"),
        ("post", "/api/v1/usage/batch"),
        ("post", "/api/v1/usage/1/reverse"),
        ("get", BALANCE.format(alice.account_number)),
        ("get", f"/api/v1/customers/{alice.account_number}/grants"),
        ("get", f"/api/v1/customers/{alice.account_number}/transactions"),
    ]:
        assert getattr(client, method)(path).status_code == 401, path
    assert client.get("/api/v1/health").status_code == 200


# --- admin -------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, db):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_creating_a_key_in_the_admin_shows_the_secret_once(staff_client, alice):
    response = staff_client.post(f"{KEYS}add/", {"name": "Metering"}, follow=True)

    key = ApiKey.objects.get()
    (shown,) = [m for m in messages_of(response) if "shown only once" in m]
    token = shown.rsplit(": ", 1)[1]
    assert key.secret_hash == hashlib.sha256(token.encode()).hexdigest()
    assert key.created_by == "root"
    page = staff_client.get(f"{KEYS}{key.pk}/change/").content.decode()
    assert key.prefix in page and token not in page
    api = Client(headers={"Authorization": f"Bearer {token}"})
    assert get_balance(api, alice).status_code == 200


def test_revoking_in_the_admin_asks_first_then_revokes_and_logs(staff_client, api_key, alice):
    key, token = api_key
    form = {"action": "revoke", "_selected_action": [key.pk]}

    confirm = staff_client.post(KEYS, form)
    assert confirm.status_code == 200
    assert "Revoke these API keys?" in confirm.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is None  # nothing happens before "yes"

    done = staff_client.post(KEYS, {**form, "post": "yes"}, follow=True)

    assert "Revoke API keys: 1 revoked." in messages_of(done)
    key.refresh_from_db()
    assert key.revoked_at is not None and key.revoked_by == "root"
    assert LogEntry.objects.filter(object_id=str(key.pk)).exists()
    assert get_balance(Client(), alice, Authorization=f"Bearer {token}").status_code == 401
    again = staff_client.post(KEYS, form, follow=True)
    assert "1 selected key(s) were already revoked." in " ".join(messages_of(again))


def test_keys_cannot_be_deleted_and_the_list_filters_revoked(staff_client, api_key):
    key, _token = api_key
    assert staff_client.post(f"{KEYS}{key.pk}/delete/", {"post": "yes"}).status_code == 403
    assert staff_client.get(KEYS, {"revoked_at__isnull": "True"}).status_code == 200


def test_a_remembered_key_is_refused_at_once_when_revoked_and_books_nothing(api_key, alice):
    """Web processes remember keys (no round trip per usage request); the usage
    lookup re-reads the key's revocation in its own statement, and every other
    route re-checks it, so a revocation still takes effect on the next request."""
    from billing.api.auth import KNOWN_KEYS
    from billing.models import UsageEvent

    key, token = api_key
    client = Client(headers={"Authorization": f"Bearer {token}"})
    assert get_balance(client, alice).status_code == 200
    assert key.secret_hash in KNOWN_KEYS
    event = {"event_id": "e1", "customer": alice.account_number, "product": "none", "quantity": "1"}

    key.revoke(by="admin")

    for path, body in [
        ("/api/v1/usage", event),
        ("/api/v1/usage/batch", {"events": [event]}),
        ("/api/v1/usage/batch", {"events": [{"quantity": "x"}]}),  # nothing to look up
        ("/api/v1/usage", {"quantity": "x"}),  # invalid: 401 before 422
        (BALANCE.format(alice.account_number), None),
    ]:
        KNOWN_KEYS[key.secret_hash] = tuple(  # as another process may still remember it
            getattr(ApiKey.objects.get(pk=key.pk), n) if n != "revoked_at" else None
            for n in ApiKey.AUTH_COLUMNS
        )
        if body is None:
            response = client.get(path)
        else:
            response = client.post(path, body, content_type="application/json")
        assert response.status_code == 401, (path, body, response.content)
        assert "was revoked on" in response.json()["detail"]
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
        assert key.secret_hash not in KNOWN_KEYS  # forgotten
    assert not UsageEvent.objects.exists()
