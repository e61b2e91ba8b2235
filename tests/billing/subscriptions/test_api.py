"""Subscriptions and auto top-up in the API: read, status changes, settings; hostile
input is a 4xx naming the field, a foreign customer is a 404."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from billing.models import ApiKey, Partner
from billing.models.subscriptions import AutoTopUp, PrepaidSubscription
from billing.subscriptions import services
from tests.billing.subscriptions.conftest import STAFF
from wallets import services as wallet_services
from wallets.ledger_check import find_problems

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def tv_sub(alice, service):
    tv = service("TV basic", per_period="30")
    wallet = wallet_services.open_wallet(customer=alice)
    with time_machine.travel(datetime(2026, 1, 1, 9, tzinfo=UTC), tick=False):
        wallet_services.grant_credit(wallet=wallet, amount=D("40"), kind="paid", name="P",
                                     actor=STAFF, idempotency_key="api-p")  # fmt: skip
        return services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)


def post(api, url, body):
    return api.post(url, data=json.dumps(body), content_type="application/json")


def put(api, url, body):
    return api.put(url, data=json.dumps(body), content_type="application/json")


def test_list_and_read_a_subscription(api, alice, tv_sub):
    answer = api.get(f"/api/v1/customers/{alice.account_number}/subscriptions")
    assert answer.status_code == 200
    [sub] = answer.json()
    assert sub["id"] == tv_sub.pk and sub["status"] == "active" and sub["services"] == ["TV basic"]
    assert sub["next_billing_date"] == "2026-02-01" and sub["next_period_fee"] == "30"
    assert sub["history"][0]["new_status"] == "active"
    assert api.get(f"/api/v1/subscriptions/{tv_sub.pk}").json()["name"] == "TV"


def test_deactivate_and_reactivate_through_the_api(api, alice, tv_sub):
    with time_machine.travel(datetime(2026, 1, 10, tzinfo=UTC), tick=False):
        answer = post(api, f"/api/v1/subscriptions/{tv_sub.pk}/deactivate", {"reason": "Paused"})
        assert answer.status_code == 200
        assert (answer.json()["status"], answer.json()["hold"]) == ("deactivated", "staff")
        again = post(api, f"/api/v1/subscriptions/{tv_sub.pk}/deactivate", {"reason": "x"})
        assert again.status_code == 409 and "only an active one" in again.json()["detail"]
        # the current period was billed already: reactivating bills nothing more
        answer = post(api, f"/api/v1/subscriptions/{tv_sub.pk}/reactivate", {"reason": "Back"})
    assert answer.status_code == 200 and answer.json()["status"] == "active"
    assert [h["new_status"] for h in answer.json()["history"]] == [
        "active",
        "deactivated",
        "active",
    ]
    assert tv_sub.charges.count() == 1
    assert find_problems() == []


def test_hostile_input_is_a_4xx_and_changes_nothing(api, alice, bob, tv_sub):
    url = f"/api/v1/subscriptions/{tv_sub.pk}/deactivate"
    for body in [{}, {"reason": ""}, {"reason": "a\x00b"}, {"reason": "x" * 501},
                 {"reason": "ok", "status": "cancelled"}, {"reason": 5}]:  # fmt: skip
        answer = post(api, url, body)
        assert answer.status_code == 422, (body, answer.content)
    assert api.post(url, data="{nope", content_type="application/json").status_code == 400
    assert api.post(url, data="reason=x", content_type="text/plain").status_code == 415
    for pk in ["0", "-1", "99999999", str(2**70), "abc"]:
        assert api.get(f"/api/v1/subscriptions/{pk}").status_code in (404, 422)
    tv_sub.refresh_from_db()
    assert tv_sub.status == "active"
    auto = f"/api/v1/customers/{alice.account_number}/auto-top-up"
    good = {"threshold": "20", "amount": "25", "daily_max_amount": "100"}
    for bad in [{"threshold": "-1"}, {"amount": "NaN"}, {"amount": "1e400"}, {"amount": 5}, {"amount": "1.001"},
                {"threshold": "99999999999"}, {"daily_max_count": 0}, {"colour": "red"},
                {"target": "10"}, {"amount": "0.1"}]:  # fmt: skip
        answer = put(api, auto, {**good, **bad})
        assert answer.status_code == 422, (bad, answer.content)
        assert answer.json()["detail"][0]["loc"][-1] in {*good, *bad}
    assert not AutoTopUp.objects.exists()


def test_a_partner_key_sees_only_its_customers(alice, tv_sub, client):
    other = Partner.objects.create(name="Contoso")
    _key, token = ApiKey.issue(name="contoso", created_by="tests", partner=other)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/subscriptions/{tv_sub.pk}", headers=headers).status_code == 404
    answer = client.post(
        f"/api/v1/subscriptions/{tv_sub.pk}/deactivate", data=json.dumps({"reason": "forged"}),
        content_type="application/json", headers=headers,
    )  # fmt: skip
    assert answer.status_code == 404
    path = f"/api/v1/customers/{alice.account_number}/subscriptions"
    assert client.get(path, headers=headers).status_code == 404
    assert PrepaidSubscription.objects.get().status == "active"


def test_auto_top_up_settings_round_trip(api, alice):
    auto = f"/api/v1/customers/{alice.account_number}/auto-top-up"
    assert api.get(auto).status_code == 404
    body = {"threshold": "20", "amount": "25", "target": "60", "daily_max_amount": "100",
            "daily_max_count": 2}  # fmt: skip
    answer = put(api, auto, body)
    assert answer.status_code == 200, answer.content
    got = api.get(auto).json()
    assert (got["threshold"], got["amount"], got["target"], got["state"]) == (
        "20",
        "25",
        "60",
        "on",
    )
    assert got["attempts"] == []
