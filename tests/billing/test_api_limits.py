"""The credit limit and transfer API (billing/api_limits.py): read and change limits,
temporary increases and history; transfers; idempotency keys; hostile input."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.models import ApiKey, Customer, Partner
from tests.factories import CustomerFactory
from wallets import services
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import CreditLimitChange, LedgerTransaction

D = Decimal
pytestmark = pytest.mark.django_db
STAFF = Actor.system("tests")
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def url(customer, what="credit-limit"):
    return f"/api/v1/customers/{customer.account_number}/{what}"


def send(api, method, path, body):
    return getattr(api, method)(path, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def dora():
    customer = CustomerFactory(name="Dora", balance_model=Customer.BalanceModel.POSTPAID)
    services.open_wallet_with_limit(customer=customer, limit="100", actor=STAFF)
    return customer


def test_read_the_credit_limit_with_the_maximum_possible_increase(api, dora):
    response = api.get(url(dora))
    assert response.status_code == 200
    assert response.json() == {
        "customer": dora.account_number, "currency": "USD", "balance_model": "postpaid",
        "permanent_credit_limit": "100", "temporary_credit_increase": "0",
        "temporary_increase_valid_until": None, "effective_credit_limit": "100", "debt": "0",
        "over_limit": "0", "available_funds": "100",
        "maximum_increase": {"amount": "1000", "days": 30,
                             "source": "global credit limit settings"},
    }  # fmt: skip


def test_change_the_permanent_limit_once_per_key(api, dora):
    body = {"limit": "250", "reason": "Good payer", "idempotency_key": "k1"}
    first = send(api, "put", url(dora), body)
    assert first.status_code == 200, first.content
    assert first.json()["change"]["old_limit"] == "100"
    assert first.json()["credit_limit"]["permanent_credit_limit"] == "250"
    again = send(api, "put", url(dora), body)
    assert again.json()["change"]["id"] == first.json()["change"]["id"]
    conflict = send(api, "put", url(dora), {**body, "limit": "300"})
    assert conflict.status_code == 409
    assert "already used" in conflict.json()["detail"]
    assert CreditLimitChange.objects.filter(wallet__customer=dora).count() == 2


def test_temporary_increase_and_its_end_and_the_history(api, dora):
    with time_machine.travel(T0, tick=False):
        granted = send(api, "post", url(dora, "credit-limit/temporary-increase"), {
            "percent": "50", "valid_until": "2026-12-09T10:00:00Z", "reason": "Season",
            "idempotency_key": "t1",
        })  # fmt: skip
        assert granted.status_code == 200, granted.content
        limit = granted.json()["credit_limit"]
        assert (limit["temporary_credit_increase"], limit["effective_credit_limit"]) == (
            "50",
            "150",
        )
        assert limit["temporary_increase_valid_until"] == "2026-12-09T10:00:00Z"
        ended = send(api, "post", url(dora, "credit-limit/temporary-increase/end"), {
            "reason": "Paid early", "idempotency_key": "e1",
        })  # fmt: skip
        assert ended.json()["change"]["kind"] == "ended"
        assert ended.json()["credit_limit"]["effective_credit_limit"] == "100"
        history = api.get(url(dora, "credit-limit/history")).json()
    assert [row["kind"] for row in history["results"]] == ["ended", "temporary", "permanent"]
    assert history["results"][0]["actor"].startswith("api-key:")


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"amount": "5000"}, "amount", "maximum possible increase: 1000.00 USD"),
        ({"amount": "5", "valid_until": "2026-12-01T10:00:00Z"}, "valid_until", "in the future"),
        ({"amount": "5", "valid_until": "2027-02-01T10:00:00Z"}, "valid_until", "at most 30 days"),
    ],
)
def test_refused_increases_are_422_naming_the_field(api, dora, body, field, message):
    full = {"valid_until": "2026-12-05T10:00:00Z", "reason": "r", "idempotency_key": "x", **body}
    with time_machine.travel(T0, tick=False):
        response = send(api, "post", url(dora, "credit-limit/temporary-increase"), full)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", field] and message in error["msg"]
    assert CreditLimitChange.objects.filter(kind="temporary").count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"limit": "-1"},
        {"limit": "1e5"},
        {"limit": "1.001"},
        {"limit": 5},
        {"limit": "NaN"},
        {"limit": "9" * 40},
        {"reason": "a\x00b"},
        {"reason": "   "},
        {"reason": "x" * 501},
        {"idempotency_key": ""},
        {"unknown": 1},
        {"limit": "1\u0000"},
        {"currency": "usd"},
    ],
)
def test_hostile_permanent_limits_are_422_and_change_nothing(api, dora, body):
    full = {"limit": "5", "reason": "r", "idempotency_key": "k", **body}
    response = send(api, "put", url(dora), full)
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"][0] == "body"
    assert CreditLimitChange.objects.filter(wallet__customer=dora).count() == 1


def test_prepaid_and_below_debt_are_refused(api, dora):
    prepaid = CustomerFactory()
    services.open_wallet(customer=prepaid)
    response = send(api, "post", url(prepaid, "credit-limit/temporary-increase"), {
        "amount": "5", "valid_until": "2099-01-01T00:00:00Z", "reason": "r",
        "idempotency_key": "p",
    })  # fmt: skip
    assert response.status_code == 422 and "postpaid customers only" in response.content.decode()
    services.draw_down(wallet=dora.wallets.get(), amount=D("80"), actor=STAFF, idempotency_key="u")
    below = send(api, "put", url(dora), {"limit": "50", "reason": "r", "idempotency_key": "b"})
    assert below.status_code == 422 and "below the current debt" in below.content.decode()


def test_a_partner_key_sees_only_its_customers(dora):
    from django.test import Client

    other = Partner.objects.create(name="Other partner")
    _key, token = ApiKey.issue(name="partner", created_by="tests", partner=other)
    client = Client(headers={"Authorization": f"Bearer {token}"})
    assert client.get(url(dora)).status_code == 404
    put = send(client, "put", url(dora), {"limit": "5", "reason": "r", "idempotency_key": "k"})
    assert put.status_code == 404


def test_transfer_books_once_per_key_and_follows_the_policy(api, alice, bob, credit):
    credit(alice, "30")
    services.open_wallet(customer=bob)
    body = {"to_customer": bob.account_number, "amount": "12.5", "idempotency_key": "tr1"}
    refused = send(api, "post", url(alice, "transfers"), body)
    assert refused.status_code == 403  # no class, policy Inherit: not allowed
    for who in (alice, bob):
        who.transfer_policy = Customer.TransferPolicy.YES
        who.save()
    first = send(api, "post", url(alice, "transfers"), body)
    assert first.status_code == 200, first.content
    assert first.json()["amount"] == "12.5" and first.json()["sender_available_funds"] == "17.5"
    again = send(api, "post", url(alice, "transfers"), body)
    assert again.json()["transaction_id"] == first.json()["transaction_id"]
    assert LedgerTransaction.objects.filter(kind="transfer").count() == 1
    too_much = send(api, "post", url(alice, "transfers"), {**body, "amount": "100",
                                                          "idempotency_key": "tr2"})  # fmt: skip
    assert too_much.status_code == 402
    to_self = send(api, "post", url(alice, "transfers"), {**body, "to_customer": alice.account_number,
                                                         "idempotency_key": "tr3"})  # fmt: skip
    assert to_self.status_code == 422
    nobody = send(api, "post", url(alice, "transfers"), {**body, "to_customer": "NOPE",
                                                        "idempotency_key": "tr4"})  # fmt: skip
    assert nobody.status_code == 422
    assert find_problems() == []


def test_valid_until_edges_through_the_api(api, dora):
    until = T0 + timedelta(days=2)
    with time_machine.travel(T0, tick=False):
        send(api, "post", url(dora, "credit-limit/temporary-increase"), {
            "amount": "40", "valid_until": until.isoformat(), "reason": "r", "idempotency_key": "v",
        })  # fmt: skip
    with time_machine.travel(until - timedelta(microseconds=1), tick=False):
        assert api.get(url(dora)).json()["effective_credit_limit"] == "140"
    with time_machine.travel(until, tick=False):
        assert api.get(url(dora)).json()["effective_credit_limit"] == "100"
