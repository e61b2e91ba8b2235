"""The Balance & Credits panel's actions (wallets/admin/limits.py) without a browser:
permission, confirmation, one change per form token, hostile input, forged ids,
prepaid customers, the class maximum in the history, the settings page."""

import uuid
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from billing.models import Customer
from tests.factories import CustomerClassFactory, CustomerFactory
from tests.wallets.conftest import STAFF
from wallets import services
from wallets.models import CreditLimitChange, CreditLimitSettings, LedgerTransaction

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def staff_client(db) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def dora():
    customer = CustomerFactory(name="Dora", balance_model=Customer.BalanceModel.POSTPAID)
    return services.open_wallet_with_limit(customer=customer, limit="100", actor=STAFF)


def action(wallet, name):
    return f"/admin/balance/wallet/{wallet.pk}/{name}/"


def test_the_panel_shows_limits_maximum_and_policy(staff_client, dora):
    page = staff_client.get(f"/admin/billing/customer/{dora.customer_id}/change/")
    text = page.content.decode()
    assert page.status_code == 200
    for expected in [
        "Permanent credit limit", "100.00 USD", "Maximum possible increase",
        "1000.00 USD for at most 30 days (global credit limit settings)",
        "As defined by the customer class (no customer class) → No", "Credit limit history",
        "Set when the customer was created.",
    ]:  # fmt: skip
        assert expected in text, expected
    assert "Unallocated payments: <strong>none</strong>" in text  # the invoices panel below


def test_change_the_permanent_limit_confirm_then_once_per_token(staff_client, dora):
    token = str(uuid.uuid4())
    form = {"token": token, "limit": "400", "reason": "Annual review"}
    confirm = staff_client.post(action(dora, "permanent"), form)
    assert confirm.status_code == 200 and b"Please confirm" in confirm.content
    assert CreditLimitChange.objects.filter(wallet=dora).count() == 1  # nothing yet
    done = staff_client.post(action(dora, "permanent"), {**form, "confirmed": "yes"})
    assert done.status_code == 302
    again = staff_client.post(action(dora, "permanent"), {**form, "confirmed": "yes"})
    assert again.status_code == 302  # a double-click: the first change, not a second
    changes = CreditLimitChange.objects.filter(wallet=dora, kind="permanent")
    assert changes.count() == 2 and changes.first().new_limit == D("400")
    assert changes.first().actor == "user:root"
    assert LogEntry.objects.filter(change_message__contains="100.00 → 400.00").count() == 1


HOSTILE = ["\x00", "1\x00", "9" * 40, "-1", "1e22", "NaN", "Infinity", "1.001", "", "abc"]


@pytest.mark.parametrize("name, field", [("permanent", "limit"), ("temporary", "value")])
def test_hostile_values_are_form_errors_and_change_nothing(staff_client, dora, name, field):
    base = {
        "token": str(uuid.uuid4()), "limit": "5", "value": "5", "increase_as": "amount",
        "valid_until": "2099-01-01T00:00", "reason": "r", "confirmed": "yes",
    }  # fmt: skip
    wrong = []
    for value in HOSTILE:
        response = staff_client.post(action(dora, name), {**base, field: value})
        if response.status_code != 400:
            wrong.append((value, response.status_code))
    others = [{"reason": "a\x00b"}, {"reason": "x" * 501}, {"token": "not-a-uuid"}]
    if name == "temporary":
        others += [{"valid_until": "\x00"}, {"valid_until": "99999-01-01T00:00"},
                   {"increase_as": "\x00"}, {"valid_until": "2000-01-01T00:00"}]  # fmt: skip
    for other in others:
        response = staff_client.post(action(dora, name), {**base, **other})
        if response.status_code != 400:
            wrong.append((other, response.status_code))
    assert wrong == []
    assert CreditLimitChange.objects.filter(wallet=dora).count() == 1


def test_forged_wallet_ids_are_404(staff_client, dora):
    for wallet_id in [999999, 2**62]:
        assert staff_client.get(f"/admin/balance/wallet/{wallet_id}/permanent/").status_code == 404
    assert staff_client.get("/admin/balance/wallet/abc/permanent/").status_code == 404


def test_staff_without_the_permission_get_403(dora):
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_customer"))
    client = Client(raise_request_exception=False)
    client.force_login(user)
    form = {"token": str(uuid.uuid4()), "limit": "900", "reason": "r", "confirmed": "yes"}
    assert client.post(action(dora, "permanent"), form).status_code == 403
    anonymous = Client().get(action(dora, "permanent"))
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert CreditLimitChange.objects.filter(wallet=dora).count() == 1


def test_prepaid_customers_are_not_offered_a_temporary_increase(staff_client):
    wallet = services.open_wallet(customer=CustomerFactory())
    page = staff_client.get(f"/admin/billing/customer/{wallet.customer_id}/change/")
    assert b"Grant temporary increase" not in page.content
    response = staff_client.get(action(wallet, "temporary"))
    assert response.status_code == 302  # back to the customer, with the reason
    follow = staff_client.get(response["Location"])
    assert b"postpaid customers only" in follow.content


def test_transfer_from_the_panel_confirms_and_books_once(staff_client, alice, bob, grant):
    for who in (alice, bob):
        who.transfer_policy = Customer.TransferPolicy.YES
        who.save()
    source = services.open_wallet(customer=alice)
    grant(source, "20")
    services.open_wallet(customer=bob)
    form = {"token": str(uuid.uuid4()), "receiver": bob.account_number, "amount": "7.5"}
    confirm = staff_client.post(action(source, "transfer"), form)
    assert b"Please confirm" in confirm.content and b"Amount: 7.50 USD" in confirm.content
    for _ in range(2):
        assert (
            staff_client.post(action(source, "transfer"), {**form, "confirmed": "yes"}).status_code
            == 302
        )
    assert LedgerTransaction.objects.filter(kind="transfer").count() == 1
    unknown = staff_client.post(action(source, "transfer"), {**form, "receiver": "NOPE\x00"})
    assert unknown.status_code == 400


def test_the_class_maximum_change_in_the_admin_is_recorded(staff_client):
    gold = CustomerClassFactory(name="Gold", max_temporary_increase_amount=D("500"))
    wallet = services.open_wallet_with_limit(
        customer=CustomerFactory(balance_model="postpaid", customer_class=gold), limit="10",
        actor=STAFF,
    )  # fmt: skip
    response = staff_client.post(f"/admin/billing/customerclass/{gold.pk}/change/", {
        "name": "Gold", "max_temporary_increase_amount": "700", "max_temporary_increase_days": "",
        "low_funds_thresholds": "", "credit_limit_warnings": "",
    })  # fmt: skip
    assert response.status_code == 302, response.content
    change = CreditLimitChange.objects.get(wallet=wallet, kind="class_maximum")
    assert "500.00 / global days → 700.00 / global days" in change.reason


def test_the_global_maximum_is_edited_in_the_admin(staff_client):
    listing = staff_client.get("/admin/wallets/creditlimitsettings/")
    assert listing.status_code == 302
    response = staff_client.post(listing["Location"], {
        "max_temporary_increase_amount": "250", "max_temporary_increase_days": "7",
    })  # fmt: skip
    assert response.status_code == 302
    settings = CreditLimitSettings.load()
    assert (settings.max_temporary_increase_amount, settings.max_temporary_increase_days) == (
        250,
        7,
    )
    bad = staff_client.post(listing["Location"], {
        "max_temporary_increase_amount": "-1", "max_temporary_increase_days": "0",
    })  # fmt: skip
    assert bad.status_code == 200 and b"errornote" in bad.content


def test_the_history_is_read_only_in_the_admin(staff_client, dora):
    change = CreditLimitChange.objects.get(wallet=dora)
    listing = staff_client.get("/admin/wallets/creditlimitchange/?kind__exact=permanent")
    assert listing.status_code == 200 and b"Set when the customer was created." in listing.content
    assert (
        staff_client.post(f"/admin/wallets/creditlimitchange/{change.pk}/change/", {}).status_code
        == 403
    )
