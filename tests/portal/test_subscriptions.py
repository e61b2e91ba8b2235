"""The portal's Subscriptions page: only the customer's own subscriptions and top-up,
settings saved through the service, hostile input a 400 that changes nothing."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.test import Client

from billing.models.subscriptions import AutoTopUp, Service, ServiceRate
from billing.subscriptions import services
from wallets import services as wallet_services
from wallets.actors import Actor

pytestmark = pytest.mark.django_db
STAFF = Actor.system("tests")


def subscribe(customer, name, fee):
    svc, _ = Service.objects.get_or_create(code=f"svc-{name.lower()}", defaults={"name": name})
    ServiceRate.objects.get_or_create(service=svc, currency=customer.currency,
                                      defaults={"per_period": Decimal(fee)})  # fmt: skip
    wallet = wallet_services.open_wallet(customer=customer)
    wallet_services.grant_credit(wallet=wallet, amount=Decimal("40"), kind="paid", name="P",
                                 actor=STAFF, idempotency_key=f"p-{customer.pk}-{name}")  # fmt: skip
    return services.register_subscription(customer=customer, name=name, services=[svc], actor=STAFF)


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(alice.portal_users.get().user)
    return client


def test_the_page_shows_only_the_customers_own_subscriptions(alice_client, alice, bob):
    with time_machine.travel(datetime(2026, 1, 1, 9, tzinfo=UTC), tick=False):
        subscribe(alice, "Alice TV", "30")
        subscribe(bob, "Bob secret line", "5")
        page = alice_client.get("/portal/subscriptions/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Alice TV" in text and "2026-02-01" in text and "30.00 USD" in text
    assert "Bob secret line" not in text
    assert "No card saved" in text


def test_settings_are_saved_through_the_service(alice_client, alice):
    answer = alice_client.post("/portal/subscriptions/", {
        "enabled": "on", "threshold": "20", "amount": "25", "target": "", "daily_max_count": "2",
        "daily_max_amount": "100", "max_declines": "3",
    })  # fmt: skip
    assert answer.status_code == 302
    saved = AutoTopUp.objects.get(customer=alice)
    assert (saved.threshold, saved.amount, saved.target, saved.daily_max_count) == (
        Decimal("20"), Decimal("25"), None, 2,
    )  # fmt: skip


HOSTILE = {
    "NUL": "\x00", "huge": "1e22", "NaN": "NaN", "Infinity": "Infinity", "negative": "-5",
    "40 digits": "9" * 40, "three decimals": "1.005", "text": "lots",
}  # fmt: skip


@pytest.mark.parametrize("field", ["threshold", "amount", "target", "daily_max_amount",
                                   "daily_max_count", "max_declines"])  # fmt: skip
def test_hostile_values_are_a_form_error_and_change_nothing(alice_client, alice, field):
    good = {"enabled": "on", "threshold": "20", "amount": "25", "target": "",
            "daily_max_count": "2", "daily_max_amount": "100", "max_declines": "3"}  # fmt: skip
    wrong = []
    for name, value in HOSTILE.items():
        response = alice_client.post("/portal/subscriptions/", {**good, field: value})
        if response.status_code != 400:
            wrong.append(f"{name}: {response.status_code}")
    assert wrong == []
    # a rule between fields is a form error too
    response = alice_client.post("/portal/subscriptions/", {**good, "target": "10"})
    assert response.status_code == 400 and "above the threshold" in response.content.decode()
    assert not AutoTopUp.objects.exists()
