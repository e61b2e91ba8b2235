"""The portal's credit limit and transfer pages (portal/balance_views.py): scoped to
the signed-in customer, the policy, one booking per form token, hostile input."""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import Customer
from tests.factories import CustomerFactory, customer_with_login
from wallets import services
from wallets.actors import Actor
from wallets.models import LedgerTransaction, Wallet

pytestmark = pytest.mark.django_db
STAFF = Actor.system("tests")
D = Decimal


def client_for(customer) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(customer.portal_users.get().user)
    return client


@pytest.fixture
def pair(alice, bob):
    for who in (alice, bob):
        who.transfer_policy = Customer.TransferPolicy.YES
        who.save()
    source = services.open_wallet(customer=alice)
    services.grant_credit(wallet=source, amount=D("20"), kind="paid", name="Top-up", actor=STAFF,
                          idempotency_key="g")  # fmt: skip
    services.open_wallet(customer=bob)
    return alice, bob


def test_the_credit_limit_page_shows_only_my_history():
    dora = customer_with_login("dora", balance_model="postpaid")
    wallet = services.open_wallet_with_limit(customer=dora, limit="100", actor=STAFF)
    services.grant_temporary_increase(
        wallet=wallet, amount="25", valid_until=timezone.now() + timedelta(days=3), actor=STAFF,
        reason="Holiday",
    )  # fmt: skip
    other = CustomerFactory(balance_model="postpaid")
    services.open_wallet_with_limit(customer=other, limit="999", actor=STAFF)
    page = client_for(dora).get("/portal/credit-limit/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Holiday" in text and "125.00" in text and "Temporary increase granted" in text
    assert "999.00" not in text


def test_a_transfer_books_once_per_token_and_both_see_it(pair):
    alice, bob = pair
    client = client_for(alice)
    form = {"token": str(uuid.uuid4()), "receiver": bob.account_number, "amount": "8"}
    confirm = client.post("/portal/transfer/", form)
    assert confirm.status_code == 200 and b"Please confirm" in confirm.content
    assert not LedgerTransaction.objects.filter(kind="transfer").exists()
    for _ in range(2):  # a double-click
        assert client.post("/portal/transfer/", {**form, "confirmed": "yes"}).status_code == 302
    assert LedgerTransaction.objects.filter(kind="transfer").count() == 1
    assert Wallet.objects.get(customer=bob).credit_balance == D("8")
    bob_sees = client_for(bob).get("/portal/transactions/").content.decode()
    assert f"Received from {alice.account_number}" in bob_sees


def test_transfers_follow_the_policy_and_the_partner_setting(pair):
    alice, bob = pair
    bob.transfer_policy = Customer.TransferPolicy.NO
    bob.save()
    form = {"token": str(uuid.uuid4()), "receiver": bob.account_number, "amount": "1",
            "confirmed": "yes"}  # fmt: skip
    refused = client_for(alice).post("/portal/transfer/", form)
    assert refused.status_code == 400 and b"cannot receive transfers" in refused.content
    alice.partner.transfers_in_portal = False
    alice.partner.save()
    closed = client_for(alice).get("/portal/transfer/")
    assert closed.status_code == 403 and b"not available" in closed.content
    assert not LedgerTransaction.objects.filter(kind="transfer").exists()


HOSTILE = ["\x00", "1\x00", "9" * 40, "-1", "0", "1e22", "NaN", "Infinity", "1.001", "", "€"]


def test_hostile_transfer_input_is_a_form_error_and_books_nothing(pair):
    alice, bob = pair
    client = client_for(alice)
    base = {"token": str(uuid.uuid4()), "receiver": bob.account_number, "amount": "1",
            "confirmed": "yes"}  # fmt: skip
    wrong = []
    for value in HOSTILE:
        response = client.post("/portal/transfer/", {**base, "amount": value})
        if response.status_code != 400:
            wrong.append(("amount", value, response.status_code))
    for receiver in ["\x00", "x" * 500, alice.account_number, "A999999", ""]:
        response = client.post("/portal/transfer/", {**base, "receiver": receiver})
        if response.status_code != 400:
            wrong.append(("receiver", receiver, response.status_code))
    for token in ["", "\x00", "not-a-uuid"]:
        response = client.post("/portal/transfer/", {**base, "token": token})
        if response.status_code != 400:
            wrong.append(("token", token, response.status_code))
    too_much = client.post("/portal/transfer/", {**base, "amount": "500"})
    if too_much.status_code != 400 or b"insufficient funds" not in too_much.content:
        wrong.append(("amount", "500", too_much.status_code))
    assert wrong == []
    assert not LedgerTransaction.objects.filter(kind="transfer").exists()
