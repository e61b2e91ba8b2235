"""GET /api/v1/customers/{account_number}/balance, /grants, /transactions; the docs."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import ApiKey, Partner
from wallets import services
from wallets.actors import Actor

D = Decimal
pytestmark = pytest.mark.django_db
STAFF = Actor.system("tests")


def url(customer, what):
    return f"/api/v1/customers/{customer.account_number}/{what}"


def test_balance_shows_credit_restricted_debt_limit_and_available_funds(
    api, charlie, calls, credit
):
    credit(charlie, "10")
    credit(charlie, "4", condition_item=calls)
    wallet = services.open_wallet(customer=charlie)
    services.change_permanent_limit(wallet=wallet, limit=D("20"), actor=STAFF, reason="test")
    services.grant_credit(wallet=wallet, amount=D("5"), kind="paid", name="Later", actor=STAFF,
                          idempotency_key="pending", pending=True)  # fmt: skip
    services.draw_down(wallet=wallet, amount=D("12"), actor=STAFF, idempotency_key="use")

    response = api.get(url(charlie, "balance"))

    assert response.status_code == 200
    assert response.json() == {
        "customer": charlie.account_number,
        "currency": "EUR",
        "credit_balance": "4",
        "restricted_balance": "4",
        "unrestricted_balance": "0",
        "debt": "2",
        "credit_limit": "20",
        "permanent_credit_limit": "20",
        "temporary_credit_increase": "0",
        "temporary_increase_valid_until": None,
        "available_funds": "18",
        "pending_grants": 1,
    }


def test_a_customer_without_a_wallet_has_zero_balance(api, bob):
    body = api.get(url(bob, "balance")).json()
    assert body["currency"] == "USD"
    assert body["credit_balance"] == body["available_funds"] == body["debt"] == "0"
    assert api.get(url(bob, "balance") + "?currency=EUR").json()["currency"] == "EUR"


def test_unknown_customer_is_404(api, db):
    response = api.get("/api/v1/customers/NOPE/balance")
    assert response.status_code == 404
    assert response.json() == {"detail": "no customer with account number 'NOPE'."}
    assert api.get("/api/v1/customers/NOPE/grants").status_code == 404
    assert api.get("/api/v1/customers/NOPE/transactions").status_code == 404


def test_a_partner_key_cannot_read_other_partners_customers(client, alice):
    _key, token = ApiKey.issue(name="reseller", partner=Partner.objects.create(name="Other"))
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    assert client.get(url(alice, "balance")).status_code == 404
    _key, own = ApiKey.issue(name="own", partner=alice.partner)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {own}"
    assert client.get(url(alice, "balance")).status_code == 200


def test_grants_list_newest_first_with_conditions_and_status_filter(api, alice, calls, credit):
    expires = timezone.now() + timedelta(days=30)
    first = credit(alice, "10", expires_at=expires)
    second = credit(alice, "5", condition_item=calls, condition_dimensions={"region": "eu"})
    wallet = services.open_wallet(customer=alice)
    pending = services.grant_credit(wallet=wallet, amount=D("7"), kind="paid", name="Awaiting",
                                    actor=STAFF, idempotency_key="p", pending=True)  # fmt: skip

    body = api.get(url(alice, "grants")).json()

    assert [g["id"] for g in body["results"]] == [pending.pk, second.pk, first.pk]
    by_id = {g["id"]: g for g in body["results"]}
    assert by_id[second.pk]["condition_product"] == "api-calls"
    assert by_id[second.pk]["condition_dimensions"] == {"region": "eu"}
    assert by_id[second.pk]["restricted"] is True
    assert by_id[first.pk]["remaining"] == "10" and by_id[first.pk]["expires_at"]
    assert by_id[pending.pk]["status"] == "pending" and by_id[pending.pk]["remaining"] == "0"
    only_pending = api.get(url(alice, "grants") + "?status=pending").json()["results"]
    assert [g["id"] for g in only_pending] == [pending.pk]
    assert api.get(url(alice, "grants") + "?status=bogus").status_code == 422


def test_transactions_are_paginated_newest_first_with_the_grants_drawn(api, alice, credit):
    grant = credit(alice, "10")
    wallet = services.open_wallet(customer=alice)
    for i in range(5):
        services.draw_down(wallet=wallet, amount=D("1"), actor=STAFF, idempotency_key=f"u{i}")

    page = api.get(url(alice, "transactions") + "?page_size=2").json()

    assert [t["kind"] for t in page["results"]] == ["usage", "usage"]
    newest = page["results"][0]
    assert newest["balance_after"] == "5" and newest["amount"] == "1"
    assert newest["grants"] == [{"grant_id": grant.pk, "amount": "1"}]
    seen = [t["id"] for t in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [t["id"] for t in page["results"]]
    assert len(seen) == 6 and seen == sorted(seen, reverse=True)  # 5 usages + the grant


def test_transactions_show_reversals_and_what_they_returned(api, alice, credit):
    grant = credit(alice, "10")
    wallet = services.open_wallet(customer=alice)
    use = services.draw_down(wallet=wallet, amount=D("3"), actor=STAFF, idempotency_key="u")
    services.reverse(transaction_id=use.transaction_id, actor=STAFF, idempotency_key="r")

    newest = api.get(url(alice, "transactions")).json()["results"][0]

    assert newest["kind"] == "reversal" and newest["reverses"] == use.transaction_id
    assert newest["grants"] == [{"grant_id": grant.pk, "amount": "-3"}]


def test_openapi_docs_describe_the_usage_api(client, db):
    schema = client.get("/api/v1/openapi.json").json()
    for path in ["/api/v1/usage", "/api/v1/usage/batch", "/api/v1/usage/{event_pk}/reverse",
                 "/api/v1/customers/{account_number}/balance",
                 "/api/v1/customers/{account_number}/grants",
                 "/api/v1/customers/{account_number}/transactions"]:  # fmt: skip
        assert path in schema["paths"], path
    components = schema["components"]
    assert components["securitySchemes"]["ApiKeyAuth"]["scheme"] == "bearer"
    batch = components["schemas"]["UsageBatchIn"]["properties"]["events"]
    event, anything_else = batch["items"]["anyOf"]  # anything else fails alone
    assert "fails alone" in anything_else["description"]
    assert set(event["properties"]) == {
        "event_id",
        "customer",
        "product",
        "quantity",
        "dimensions",
        "timestamp",
    }
    assert set(schema["paths"]["/api/v1/usage"]["post"]["responses"]) >= {
        "200",
        "402",
        "409",
        "422",
    }
    assert client.get("/api/v1/docs").status_code == 200
