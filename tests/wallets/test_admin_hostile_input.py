"""Hostile input to the admin's add-credit form and lists: a form error, never a 500."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.factories import CustomerFactory
from wallets.models import CreditGrant, LedgerTransaction

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(db) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


HOSTILE = {
    "customer": ["\x00", "1\x00", "9" * 40, "-1", "1e3"],
    "currency": ["\x00", "US\x00", "usd", "ZZZ", "€€€"],
    "name": ["\x00", "a\x00b", "x" * 10_000],
    "amount": ["\x00", "1e22", "1E+999999", "1E-999999", "9" * 40, "NaN", "Infinity", "-1",
               "0", "1.0000001"],
    "kind": ["\x00", "nonsense"],
    "payment": ["\x00"],
    "frequency": ["\x00"],
    "effective_at": ["\x00", "9999-99-99", "99999-01-01 00:00", "1e22"],
    "expires_at": ["\x00", "0000-01-01 00:00"],
    "priority": ["\x00", "9" * 40, "-1", "1e3", "NaN"],
    "condition_item": ["\x00", "9" * 40],
    "condition_dimensions": ["\x00", "region=\x00", "a" * 10_000 + "=b", "=", "region"],
    "external_transaction_id": ["\x00", "x" * 1000],
    "memo": ["\x00", "x" * 1000],
}  # fmt: skip


def test_hostile_values_in_add_credit_are_form_errors_and_book_nothing(staff_client):
    customer = CustomerFactory()
    good = {"customer": customer.pk, "name": "Pack", "amount": "10", "kind": "paid",
            "payment": "paid", "frequency": "one_time", "priority": "100"}  # fmt: skip
    wrong = []
    for field, values in HOSTILE.items():
        for value in values:
            response = staff_client.post("/admin/wallets/creditgrant/add/", {**good, field: value})
            page = response.content.decode()
            if response.status_code != 200 or "errorlist" not in page:
                wrong.append(f"{field}={value[:20]!r}: {response.status_code}")
    assert wrong == []
    assert not CreditGrant.objects.exists() and not LedgerTransaction.objects.exists()


@pytest.mark.parametrize(
    "url",
    ["/admin/wallets/creditgrant/?q=%00", "/admin/billing/customer/?q=%00",
     "/admin/wallets/ledgertransaction/?q=a%00b", "/admin/wallets/creditgrant/add/?customer=%00",
     "/admin/billing/customer/%00/change/", "/admin/wallets/creditgrant/?status=%00",
     "/admin/billing/customer/?o=%00"],
)  # fmt: skip
def test_a_nul_in_an_admin_url_is_a_4xx_or_a_redirect(staff_client, url):
    response = staff_client.get(url)

    assert response.status_code < 500, (url, response.status_code)


@pytest.mark.parametrize("forged", ["abc", "1\x00", "\x00", "-1", "1.5", "9" * 40, "٣", " 1"])
@pytest.mark.parametrize(
    ("url", "action"),
    [
        ("/admin/wallets/creditgrant/", "activate_grants"),
        ("/admin/wallets/creditgrant/", "void_grants"),
        ("/admin/wallets/ledgertransaction/", "reverse_transactions"),
    ],
)
def test_a_forged_selection_for_an_admin_action_is_a_400_and_does_nothing(
    staff_client, url, action, forged
):
    grants, transactions = CreditGrant.objects.count(), LedgerTransaction.objects.count()
    response = staff_client.post(url, {"action": action, "_selected_action": ["1", forged]})
    assert response.status_code == 400
    assert b"not a list of ids" in response.content
    assert (CreditGrant.objects.count(), LedgerTransaction.objects.count()) == (
        grants,
        transactions,
    )


def test_a_genuine_selection_still_reaches_the_action(staff_client):
    from tests.wallets.conftest import STAFF
    from wallets import services

    wallet = services.open_wallet(customer=CustomerFactory())
    grant = services.grant_credit(wallet=wallet, amount="5", kind="paid", name="Five", actor=STAFF,
                                  idempotency_key="forged-sel-1", pending=True)  # fmt: skip
    response = staff_client.post(
        "/admin/wallets/creditgrant/",
        {"action": "void_grants", "_selected_action": [str(grant.pk)]},
    )
    assert response.status_code == 200  # the confirmation page
    assert b"Five" in response.content
