"""POST /api/v1/usage, /usage/batch and /usage/{id}/reverse through the test client."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import ApiKey, Partner, UsageEvent
from tests.factories import CustomerFactory
from wallets.ledger_check import find_problems
from wallets.models import LedgerTransaction, Wallet

D = Decimal
pytestmark = pytest.mark.django_db

USAGE = "/api/v1/usage"
BATCH = "/api/v1/usage/batch"


def post(client, url, body):
    return client.post(url, body, content_type="application/json")


def event(customer, event_id="e1", quantity="2", **fields):
    return {"event_id": event_id, "customer": customer.account_number, "product": "api-calls",
            "quantity": quantity, **fields}  # fmt: skip


def nothing_booked():
    return (
        not UsageEvent.objects.exists()
        and not LedgerTransaction.objects.filter(kind="usage").exists()
    )


@pytest.fixture
def funded(alice, calls, price, credit):
    """Alice with 10 USD of credit; API calls at 0.5 (0.4 in the EU)."""
    price(calls, "0.5")
    price(calls, "0.4", dimensions={"region": "eu"})
    return credit(alice, "10")


def test_one_event_is_rated_drawn_down_and_answered(api, alice, funded):
    response = post(api, USAGE, event(alice, dimensions={"region": "eu"}))

    assert response.status_code == 200
    body = response.json()
    event_row = UsageEvent.objects.get()
    assert body == {
        "id": event_row.pk,
        "event_id": "e1",
        "status": "booked",
        "customer": alice.account_number,
        "product": "api-calls",
        "quantity": "2",
        "dimensions": {"region": "eu"},
        "timestamp": body["timestamp"],
        "unit_price": "0.4",
        "amount": "0.8",
        "currency": "USD",
        "from_credits": "0.8",
        "to_debt": "0",
        "grants": [{"grant_id": funded.pk, "amount": "0.8"}],
        "transaction_id": event_row.transaction_id,
        "credit_balance": "9.2",
        "debt": "0",
        "available_funds": "9.2",
        "replayed": False,
    }
    assert event_row.api_key.name == "metering"
    tx = LedgerTransaction.objects.get(pk=event_row.transaction_id)
    assert tx.actor == "api-key:metering (" + event_row.api_key.prefix + "…)"


def test_the_same_event_id_again_returns_the_same_answer_and_books_nothing(api, alice, funded):
    at = (timezone.now() - timedelta(seconds=5)).isoformat()
    first = post(api, USAGE, event(alice, timestamp=at))
    again = post(api, USAGE, event(alice, timestamp=at))

    assert again.status_code == 200
    assert again.json() == {**first.json(), "replayed": True}
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1
    assert Wallet.objects.get(customer=alice).credit_balance == D("9")


def test_the_same_event_id_with_other_content_is_409(api, alice, funded):
    post(api, USAGE, event(alice))

    response = post(api, USAGE, event(alice, quantity="3"))

    assert response.status_code == 409
    assert "event_id 'e1' was already used for another event" in response.json()["detail"]
    assert LedgerTransaction.objects.filter(kind="usage").count() == 1


def test_insufficient_funds_is_402_with_the_ledgers_message(api, alice, funded):
    response = post(api, USAGE, event(alice, quantity="100"))

    assert response.status_code == 402
    assert response.json()["detail"] == (
        "insufficient funds: this usage costs 50.000000 USD but the wallet can cover "
        "10.000000 USD (credits that apply 10.000000, credit limit room 0). Top up or raise "
        "the credit limit."
    )
    assert not LedgerTransaction.objects.filter(kind="usage").exists()
    assert UsageEvent.objects.get().status == "refused"


def test_usage_beyond_the_credits_shows_the_amount_due(api, charlie, calls, price, credit):
    from wallets import services
    from wallets.actors import Actor

    price(calls, "1", currency="EUR")
    credit(charlie, "1")
    wallet = Wallet.objects.get(customer=charlie)
    services.change_permanent_limit(
        wallet=wallet, limit=D("50"), actor=Actor.system("tests"), reason="test"
    )

    body = post(api, USAGE, event(charlie, quantity="3")).json()

    assert (body["from_credits"], body["to_debt"], body["debt"]) == ("1", "2", "2")
    assert body["available_funds"] == "48"


def loc_msgs(response) -> dict[str, str]:
    return {tuple(e["loc"])[-1]: e["msg"] for e in response.json()["detail"]}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"customer": "NOPE"}, "customer", "no customer with account number 'NOPE'."),
        ({"product": "nope"}, "product", "no product item with code 'nope'."),
        ({"quantity": "-2"}, "quantity", "must be greater than zero, got -2"),
        ({"quantity": 0}, "quantity", "must be greater than zero, got 0"),
        ({"quantity": "0.0000001"}, "quantity", "use at most 6 decimal places"),
        ({"quantity": 1e-7}, "quantity", "use at most 6 decimal places"),
        ({"quantity": "lots"}, "quantity", "Input should be a valid decimal"),
        ({"quantity": True}, "quantity", "Decimal input should be"),
        ({"quantity": None}, "quantity", "Decimal input should be"),
        ({"dimensions": {"region": ["eu"]}}, "dimensions", "'region' must be a string or an integer, got a list."),
        ({"dimensions": {"region": {"x": 1}}}, "dimensions", "got an object"),
        ({"dimensions": {"region": 1.5}}, "dimensions", "got a decimal number (1.5)"),
        ({"dimensions": {"region": False}}, "dimensions", "got a boolean"),
        ({"dimensions": "eu"}, "dimensions", "Input should be a valid dictionary"),
        ({"event_id": ""}, "event_id", "send a non-empty string"),
        ({"event_id": 7}, "event_id", "Input should be a valid string"),
        ({"timestamp": "soon"}, "timestamp", "Input should be a valid datetime"),
        ({"timestamp": "2026-11-25T10:00:00"}, "timestamp", "add a time zone"),
    ],
)  # fmt: skip
def test_bad_input_is_422_with_the_field_and_books_nothing(
    api, alice, funded, change, field, message
):
    response = post(api, USAGE, {**event(alice), **change})

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors[0]["loc"] == ["body", "event", field]
    assert message in errors[0]["msg"]
    assert nothing_booked()


def test_a_missing_field_is_422(api, alice, funded):
    body = event(alice)
    del body["product"]
    response = post(api, USAGE, body)
    assert response.status_code == 422
    assert loc_msgs(response) == {"product": "Field required"}


def test_a_timestamp_too_far_in_the_future_is_422(api, alice, funded, settings):
    settings.USAGE_FUTURE_TOLERANCE_SECONDS = 60
    later = (timezone.now() + timedelta(minutes=3)).isoformat()

    response = post(api, USAGE, event(alice, timestamp=later))

    assert response.status_code == 422
    assert "in the future; at most 60 seconds ahead is accepted" in loc_msgs(response)["timestamp"]
    assert nothing_booked()


def test_a_timestamp_too_old_is_422(api, alice, funded, settings):
    settings.USAGE_MAX_AGE_DAYS = 30
    ancient = (timezone.now() - timedelta(days=31)).isoformat()

    response = post(api, USAGE, event(alice, timestamp=ancient))

    assert response.status_code == 422
    assert (
        "31 days old; usage older than 30 days is not accepted" in (loc_msgs(response)["timestamp"])
    )
    assert nothing_booked()


def test_a_partner_key_sees_only_its_partners_customers(client, alice, funded):
    other = Partner.objects.create(name="Elsewhere")
    _key, token = ApiKey.issue(name="reseller", partner=other)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    response = post(client, USAGE, event(alice))

    assert response.status_code == 422
    assert (
        loc_msgs(response)["customer"]
        == f"no customer with account number {alice.account_number!r}."
    )
    theirs = CustomerFactory(partner=other)
    assert post(client, USAGE, event(theirs)).status_code == 402  # visible, but no credit


# --- batches -----------------------------------------------------------------------------


def test_a_batch_books_the_valid_events_and_reports_each_invalid_one(
    api, alice, bob, funded, credit
):
    credit(bob, "1")
    events = [
        event(alice, "a1"),
        event(bob, "b1", quantity="10"),  # 5 USD, bob has 1
        {**event(alice, "a2"), "quantity": "-1"},
        "not an event",
        {**event(alice, "a3"), "dimensions": {"region": [1]}},
        {"event_id": "a4"},
        event(alice, "a5", dimensions={"region": "eu"}),
        event(alice, "a1"),  # a repeat of the first
    ]

    response = post(api, BATCH, {"events": events})

    assert response.status_code == 200
    body = response.json()
    assert (body["booked"], body["replayed"], body["failed"]) == (2, 1, 5)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(8))
    assert [r["status"] for r in results] == [200, 402, 422, 422, 422, 422, 200, 200]
    assert results[0]["usage"]["amount"] == "1" and results[6]["usage"]["amount"] == "0.8"
    assert results[7]["usage"] == {**results[0]["usage"], "replayed": True}
    assert results[1]["errors"][0]["msg"].startswith("insufficient funds")
    assert results[2]["errors"] == [
        {"loc": ["quantity"], "msg": "must be greater than zero, got -1; to correct usage, "
         "reverse the event instead.", "type": "value_error"}
    ]  # fmt: skip
    assert results[3]["errors"][0]["msg"] == "each event must be a JSON object (see UsageEventIn)."
    assert "must be a string or an integer" in results[4]["errors"][0]["msg"]
    assert {e["loc"][0] for e in results[5]["errors"]} == {"customer", "product", "quantity"}
    assert results[5]["event_id"] == "a4"
    assert Wallet.objects.get(customer=alice).credit_balance == D("8.2")
    assert LedgerTransaction.objects.filter(kind="usage").count() == 2
    assert find_problems() == []


def test_a_batch_too_big_is_422_and_books_nothing(api, alice, funded, settings):
    settings.USAGE_BATCH_MAX_EVENTS = 3
    events = [event(alice, f"e{i}") for i in range(4)]

    response = post(api, BATCH, {"events": events})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "batch", "events"], "type": "value_error",
         "msg": "a batch holds at most 3 events, got 4; split it into smaller batches."}
    ]  # fmt: skip
    assert nothing_booked()


def test_the_default_batch_limit_is_1000(api, alice, funded):
    events = [event(alice, f"e{i}") for i in range(1001)]
    response = post(api, BATCH, {"events": events})
    assert response.status_code == 422
    assert "at most 1000 events, got 1001" in response.json()["detail"][0]["msg"]
    assert nothing_booked()


def test_an_empty_batch_is_422(api, alice, funded):
    response = post(api, BATCH, {"events": []})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "send at least one event."
    assert post(api, BATCH, {"events": "x"}).status_code == 422


# --- reversal ----------------------------------------------------------------------------


def test_reverse_returns_the_credit_and_a_second_call_replays(api, alice, funded):
    booked = post(api, USAGE, event(alice, quantity="4")).json()

    response = api.post(f"/api/v1/usage/{booked['id']}/reverse")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "reversed" and body["amount"] == "2"
    assert body["grants"] == [{"grant_id": funded.pk, "amount": "2"}]
    assert body["credit_balance"] == body["available_funds"] == "10"
    assert body["reversed_transaction_id"] == booked["transaction_id"]
    assert not body["replayed"]
    again = api.post(f"/api/v1/usage/{booked['id']}/reverse").json()
    assert again == {**body, "replayed": True}
    assert post(api, USAGE, event(alice, quantity="4")).json()["status"] == "reversed"
    assert find_problems() == []


def test_reverse_of_an_unknown_or_refused_event(api, alice, funded):
    assert api.post("/api/v1/usage/999999/reverse").status_code == 404
    post(api, USAGE, event(alice, quantity="1000"))
    refused = UsageEvent.objects.get()

    response = api.post(f"/api/v1/usage/{refused.pk}/reverse")

    assert response.status_code == 409
    assert "nothing was booked" in response.json()["detail"]


def test_a_partner_key_cannot_reverse_other_partners_usage(api, client, alice, funded):
    booked = post(api, USAGE, event(alice)).json()
    _key, token = ApiKey.issue(name="reseller", partner=Partner.objects.create(name="Other"))

    response = client.post(
        f"/api/v1/usage/{booked['id']}/reverse", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 404
    assert UsageEvent.objects.get().status == "booked"


def test_usage_that_crosses_a_low_funds_threshold_queues_the_warning(api, alice, funded):
    """Real-time draw-down through the API triggers the balance warnings (issue 7)."""
    from wallets.models import Notification
    from wallets.services import copy_warning_thresholds

    alice.low_funds_thresholds = "5"
    alice.save()
    copy_warning_thresholds(alice)  # what the admin and the portal do after a change
    # 10 USD of credit, 0.5 per call: 10 calls leave exactly 5 (not below it) …
    assert post(api, USAGE, event(alice, "e1", quantity="10")).status_code == 200
    assert not Notification.objects.exists()
    # … one more call crosses it, a batch going further queues nothing more
    assert post(api, USAGE, event(alice, "e2", quantity="1")).status_code == 200
    batch = {"events": [event(alice, f"b{i}", quantity="1") for i in range(3)]}
    assert post(api, BATCH, batch).status_code == 200
    (warning,) = Notification.objects.all()
    assert warning.kind == "low_funds" and warning.customer == alice
    assert warning.subject == "Low funds: less than 5.00 USD available"
    assert "4.50 USD are available now" in warning.body


def test_usage_answers_are_what_their_schemas_render(api, alice, bob, funded, credit):
    """The usage views return their JSON directly (no re-validation, for speed):
    it must be exactly what ninja would render from the documented schemas."""
    import json

    from ninja.responses import NinjaJSONEncoder

    from billing.api.schemas import UsageBatchOut, UsageOut

    def rendered(schema, body):
        return json.loads(
            json.dumps(schema.model_validate(body).model_dump(), cls=NinjaJSONEncoder)
        )

    at = (timezone.now() - timedelta(seconds=5)).isoformat()
    single = post(api, USAGE, event(alice, "s1", timestamp=at)).json()
    assert single == rendered(UsageOut, single)
    assert post(api, USAGE, event(alice, "s1", timestamp=at)).json() == {**single, "replayed": True}
    credit(bob, "1")
    events = [event(alice, "a1"), event(bob, "b1", quantity="10"), {"event_id": "x"},
              event(alice, "a1"), event(alice, "s1", timestamp=at)]  # fmt: skip
    batch = post(api, BATCH, {"events": events}).json()
    assert batch == rendered(UsageBatchOut, batch)
    assert [r["status"] for r in batch["results"]] == [200, 402, 422, 200, 200]
