"""The refill card API for partner systems: redeem (idempotency key), card status by
serial, series list; partner-restricted keys; hostile input never a 5xx."""

import json
import re

import pytest
from django.test import Client

from billing.models import ApiKey
from invoices.models import Payment
from refillcards import codes
from refillcards.errors import REFUSED
from refillcards.models import RefillCard, RefillCardSettings
from tests.billing.conftest import api, api_key  # noqa: F401 - shared fixtures
from tests.billing.test_api_hostile_input import HOSTILE_JSON
from tests.factories import CustomerFactory, PartnerFactory
from wallets.models import CreditGrant

pytestmark = pytest.mark.django_db
URL = "/api/v1/refill-cards/redeem"


def post(client, body, **extra):
    text = body if isinstance(body, str) else json.dumps(body)
    return client.post(URL, text, content_type="application/json", **extra)


def test_redeem_replay_and_status(api, alice, series_of):  # noqa: F811
    series, plain = series_of(2)
    body = {"code": plain[0], "customer": alice.account_number, "idempotency_key": "order-1"}
    first = post(api, body)
    assert first.status_code == 200, first.content
    answer = first.json()
    assert answer["amount"] == "10" and answer["currency"] == "USD" and not answer["replayed"]
    assert answer["credit_balance"] == "10" and answer["payment_id"]
    again = post(api, body)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["grant_id"] == answer["grant_id"]
    assert CreditGrant.objects.count() == 1 and Payment.objects.count() == 1
    other = post(api, {**body, "code": plain[1]})
    assert other.status_code == 409
    status = api.get(f"/api/v1/refill-cards/cards/{answer['serial']}")
    assert status.status_code == 200
    assert status.json()["status"] == "used" and status.json()["used_by"] == alice.account_number
    assert "code" not in status.json()
    listed = api.get("/api/v1/refill-cards/series")
    assert listed.status_code == 200
    item = listed.json()["results"][0]
    assert (item["id"], item["used"], item["generated"], item["partner"]) == (
        series.pk, 1, 2, alice.partner.name,
    )  # fmt: skip


def test_refusals_are_one_answer_and_lock_out(api, alice, bob, series_of):  # noqa: F811
    series, plain = series_of(2)
    post(api, {"code": plain[0], "customer": bob.account_number, "idempotency_key": "b"})
    answers = set()
    for n, code in enumerate([plain[0], codes.new_code("NW"), plain[1][:-1] + "0", "zz"]):
        response = post(api, {"code": code, "customer": alice.account_number,
                              "idempotency_key": f"a{n}"})  # fmt: skip
        if code == plain[1][:-1] + "0" and codes.normalise(plain[1])[-1] == "0":
            continue  # the made-up typo happened to be the real check character
        assert response.status_code == 422
        answers.add(json.dumps(response.json()))
    assert len(answers) == 1 and REFUSED in answers.pop()
    for n in range(5):
        post(api, {"code": codes.new_code(""), "customer": alice.account_number,
                   "idempotency_key": f"x{n}"})  # fmt: skip
    locked = post(
        api, {"code": plain[1], "customer": alice.account_number, "idempotency_key": "ok"}
    )
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert RefillCard.objects.get(series=series, number=2).status == "active"


def test_a_partner_key_sees_only_its_partner(alice, series_of):
    _, plain = series_of(1)
    contoso = PartnerFactory(name="Contoso")
    stranger = CustomerFactory(partner=contoso)
    _key, token = ApiKey.issue(name="contoso shop", partner=contoso)
    client = Client(headers={"Authorization": f"Bearer {token}"})
    foreign = post(
        client, {"code": plain[0], "customer": alice.account_number, "idempotency_key": "f"}
    )
    assert foreign.status_code == 404
    assert (
        client.get(f"/api/v1/refill-cards/cards/{RefillCard.objects.get().serial}").status_code
        == 404
    )
    assert client.get("/api/v1/refill-cards/series").json()["results"] == []
    # its own customer with another partner's card: the one refusal
    mine = post(
        client, {"code": plain[0], "customer": stranger.account_number, "idempotency_key": "g"}
    )
    assert mine.status_code == 422
    assert RefillCard.objects.get().status == "active"


def test_disabled_module_is_403(api, alice, series_of):  # noqa: F811
    _, plain = series_of(1)
    RefillCardSettings.objects.update_or_create(pk=1, defaults={"enabled": False})
    response = post(
        api, {"code": plain[0], "customer": alice.account_number, "idempotency_key": "d"}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("field", ["code", "customer", "idempotency_key"])
def test_hostile_values_are_4xx_naming_the_field(api, alice, series_of, field):  # noqa: F811
    _, plain = series_of(1)
    marker = "__HOSTILE__"
    good = {"code": plain[0], "customer": alice.account_number, "idempotency_key": "h"}
    for name, raw in HOSTILE_JSON.items():
        value = json.loads(raw)
        if field == "idempotency_key" and isinstance(value, str) and value.strip() \
                and not re.search("[\x00-\x1f\x7f-\x9f\ud800-\udfff]", value) and len(value) <= 200:  # fmt: skip
            continue  # any printable text is a fine key
        text = json.dumps({**good, field: marker}).replace(json.dumps(marker), raw)
        response = post(api, text)
        # a printable string is a wrong code: refused, and after 5 of them a lockout (429)
        assert response.status_code in (400, 404, 413, 422, 429), (name, response.status_code)
        if response.status_code == 422:
            detail = response.json()["detail"]
            assert any(field in entry["loc"] or entry["loc"][-1] == "code" for entry in detail), (
                name,
                detail,
            )
    extra = post(api, {**good, "surprise": 1})
    assert extra.status_code == 422 and "surprise" in json.dumps(extra.json())
    assert RefillCard.objects.get().status == "active"
    assert not CreditGrant.objects.exists()
    assert post(api, good).status_code in (200, 429)


@pytest.mark.parametrize("serial", ["x", "1" * 500, "%00", "0001-000001%00", "..%2F..%2F"])
def test_hostile_serials_are_4xx(api, serial):  # noqa: F811
    response = api.get(f"/api/v1/refill-cards/cards/{serial}")
    assert response.status_code in (404, 422)
