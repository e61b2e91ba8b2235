"""The top-up invoice and payment API: the seed's flow, idempotency keys, and
hostile input (never a 5xx, nothing booked, the field named)."""

import json
from decimal import Decimal

import pytest
from django.test import Client

from billing.models import ApiKey, Partner
from invoices.models import Invoice, Payment, PaymentAllocation
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, Wallet

D = Decimal
pytestmark = pytest.mark.django_db


def post(client, url, body, raw=None):
    return client.post(
        f"/api/v1{url}", data=raw if raw is not None else json.dumps(body),
        content_type="application/json",
    )  # fmt: skip


def test_seed_flow_through_the_api(api, alice, mailoutbox):
    acct = alice.account_number
    created = post(api, f"/customers/{acct}/top-up-invoices", {"name": "Dec", "amount": "100.00"})
    assert created.status_code == 201, created.content
    invoice = created.json()
    assert invoice["status"] == "draft" and invoice["number"] is None
    sent = post(api, f"/top-up-invoices/{invoice['id']}/send", {})
    assert sent.status_code == 200 and sent.json()["number"] == "TOP-000001"
    paid = post(api, f"/customers/{acct}/payments",
                {"amount": "100", "method": "bank_transfer", "reference": "B-1", "idempotency_key": "pay-1"})  # fmt: skip
    assert paid.status_code == 201, paid.content
    payment = paid.json()
    assert payment["unallocated"] == "100"
    listed = api.get(f"/api/v1/customers/{acct}/payments?unallocated=true").json()
    assert [p["id"] for p in listed["results"]] == [payment["id"]]
    body = {"invoice_id": invoice["id"], "idempotency_key": "alloc-1"}
    allocated = post(api, f"/payments/{payment['id']}/allocations", body)
    assert allocated.status_code == 201, allocated.content
    again = post(api, f"/payments/{payment['id']}/allocations", body)
    assert again.json()["id"] == allocated.json()["id"]
    assert PaymentAllocation.objects.count() == 1
    got = api.get(f"/api/v1/top-up-invoices/{invoice['id']}").json()
    assert got["status"] == "paid" and got["open_amount"] == "0"
    assert Wallet.objects.get(customer=alice).credit_balance == D("100")
    pdf = api.get(f"/api/v1/top-up-invoices/{invoice['id']}/pdf")
    assert pdf.status_code == 200 and pdf.content[:5] == b"%PDF-"
    assert api.get(f"/api/v1/customers/{acct}/payments?unallocated=true").json()["results"] == []
    # a paid invoice cannot be voided; a draft can
    refused = post(api, f"/top-up-invoices/{invoice['id']}/void", {"reason": "x"})
    assert refused.status_code == 409 and "remove those payments" in refused.json()["detail"]
    draft = post(api, f"/customers/{acct}/top-up-invoices", {"name": "2", "amount": "5"}).json()
    voided = post(api, f"/top-up-invoices/{draft['id']}/void", {"reason": "typo"})
    assert voided.status_code == 200 and voided.json()["status"] == "void"
    # the same payment key twice is one payment
    post(
        api,
        f"/customers/{acct}/payments",
        {"amount": "7", "method": "cash", "idempotency_key": "pay-2"},
    )
    post(
        api,
        f"/customers/{acct}/payments",
        {"amount": "7", "method": "cash", "idempotency_key": "pay-2"},
    )
    assert Payment.objects.count() == 2
    assert find_problems() == []


def test_a_draft_and_over_allocation_are_refused(api, alice):
    acct = alice.account_number
    invoice = post(api, f"/customers/{acct}/top-up-invoices", {"name": "D", "amount": "50"}).json()
    payment = post(api, f"/customers/{acct}/payments",
                   {"amount": "80", "method": "cash", "idempotency_key": "p"}).json()  # fmt: skip
    url = f"/payments/{payment['id']}/allocations"
    draft = post(api, url, {"invoice_id": invoice["id"], "idempotency_key": "a"})
    assert draft.status_code == 409 and "is a draft" in draft.json()["detail"]
    # sent, the customer's unallocated payment pays it at once (oldest first)
    sent = post(api, f"/top-up-invoices/{invoice['id']}/send", {"email": False}).json()
    assert sent["status"] == "paid" and sent["allocations"][0]["amount"] == "50"
    second = post(api, f"/customers/{acct}/top-up-invoices", {"name": "E", "amount": "200"}).json()
    second = post(api, f"/top-up-invoices/{second['id']}/send", {"email": False}).json()
    assert second["open_amount"] == "170"  # the 30 left of the first payment
    more = post(api, f"/customers/{acct}/payments",
                {"amount": "100", "method": "cash", "idempotency_key": "q"}).json()  # fmt: skip
    url = f"/payments/{more['id']}/allocations"
    for amount, says in (("250", "unallocated 100.00"), ("100.01", "unallocated 100.00")):
        over = post(
            api, url, {"invoice_id": second["id"], "amount": amount, "idempotency_key": amount}
        )
        assert over.status_code == 422
        assert says in over.json()["detail"][0]["msg"]
        assert over.json()["detail"][0]["loc"] == ["body", "amount"]
    assert PaymentAllocation.objects.count() == 2
    assert find_problems() == []


def test_another_partners_customer_is_invisible(alice):
    other = Partner.objects.create(name="Elsewhere")
    _key, token = ApiKey.issue(name="partner key", created_by="tests", partner=other)
    client = Client(headers={"Authorization": f"Bearer {token}"})
    from invoices.topups import create_top_up_invoice
    from wallets.actors import Actor

    invoice = create_top_up_invoice(customer=alice, name="x", amount="10", actor=Actor.system("t"))
    assert client.get(f"/api/v1/top-up-invoices/{invoice.pk}").status_code == 404
    assert post(client, f"/top-up-invoices/{invoice.pk}/send", {}).status_code == 404
    assert client.get(f"/api/v1/top-up-invoices/{invoice.pk}/pdf").status_code == 404
    response = post(client, f"/customers/{alice.account_number}/payments",
                    {"amount": "1", "method": "cash", "idempotency_key": "k"})  # fmt: skip
    assert response.status_code == 404
    assert Invoice.objects.get().status == "draft" and not Payment.objects.exists()


HOSTILE = {
    "huge": '"1e22"', "huge digits": '"' + "9" * 40 + '"', "negative": '"-1"', "zero": '"0"',
    "three places": '"1.005"', "NaN": '"NaN"', "number": "10", "NUL": '"\\u0000"',
    "lone surrogate": '"\\ud800"', "null": "null", "object": '{"a": 1}', "empty": '""',
}  # fmt: skip


TEXT_HOSTILE = ("NUL", "lone surrogate", "object", "null", "number")
CASES = (
    [("amount", name) for name in HOSTILE]
    + [("method", name) for name in HOSTILE]
    + [("currency", name) for name in HOSTILE if name != "null"]
    + [("received_on", name) for name in HOSTILE if name != "null"]
    + [("reference", name) for name in TEXT_HOSTILE]
    + [("idempotency_key", name) for name in (*TEXT_HOSTILE, "empty")]
    + [("reference", "oversized"), ("comment", "NUL"), ("received_on", "future"), ("extra", "zero")]
)
MORE = {"oversized": '"' + "r" * 201 + '"', "future": '"2999-01-01"'}


@pytest.mark.parametrize(("field", "name"), CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_hostile_payment_fields_are_refused_and_book_nothing(api, alice, field, name):
    value = {**HOSTILE, **MORE}[name]
    fields = {"amount": '"10.00"', "method": '"cash"', "idempotency_key": '"k1"', field: value}
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    response = post(api, f"/customers/{alice.account_number}/payments", None, raw=raw)
    assert 400 <= response.status_code < 500, (response.status_code, response.content)
    detail = response.json()["detail"]
    assert field in json.dumps(detail), detail
    assert not Payment.objects.exists() and not CreditGrant.objects.exists()


@pytest.mark.parametrize(
    "raw",
    ['{"name": "x", "amount": "10", "extra": 1}', '{"name": "\\u0000", "amount": "10"}',
     '{"name": "x", "amount": "1e5"}', '{"name": "x", "amount": "10", "currency": "EUR"}',
     '{"name": "", "amount": "10"}', "[]", "{", '{"name": "x", "amount": "0.00"}'],
)  # fmt: skip
def test_hostile_invoice_bodies(api, alice, raw):
    response = post(api, f"/customers/{alice.account_number}/top-up-invoices", None, raw=raw)
    assert 400 <= response.status_code < 500, (response.status_code, response.content)
    assert not Invoice.objects.exists()


@pytest.mark.parametrize("path", ["0", "-1", "99999999999999999999", "abc", "9223372036854775807"])
def test_forged_ids_are_404_or_422(api, path):
    for response in (
        api.get(f"/api/v1/top-up-invoices/{path}"),
        post(api, f"/top-up-invoices/{path}/send", {}),
        post(api, f"/payments/{path}/allocations", {"invoice_id": 1, "idempotency_key": "k"}),
    ):
        assert response.status_code in (404, 422), (path, response.status_code, response.content)
