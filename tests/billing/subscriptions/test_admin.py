"""The subscriptions and auto top-up admin: forms go through the services, bad input
is a form error (never a 500) that changes nothing, status actions need the change
permission, a reason and a confirmation, and are logged."""

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client

from billing.models.subscriptions import AutoTopUp, PrepaidSubscription
from billing.subscriptions import services
from tests.billing.subscriptions.conftest import STAFF
from tests.factories import UserFactory
from wallets import services as wallet_services
from wallets.ledger_check import find_problems

pytestmark = pytest.mark.django_db
ADD_TOPUP = "/admin/billing/autotopup/add/"
SUBS = "/admin/billing/prepaidsubscription/"


@pytest.fixture
def staff(db) -> Client:
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.fixture
def tv(service):
    return service("TV basic", per_period="10")


def test_register_through_the_admin_form_bills_the_first_period(staff, alice, tv):
    wallet_services.grant_credit(wallet=wallet_services.open_wallet(customer=alice),
                                 amount=Decimal("25"), kind="paid", name="P", actor=STAFF,
                                 idempotency_key="adm-1")  # fmt: skip
    answer = staff.post(f"{SUBS}add/", {"customer": alice.pk, "name": "TV", "services": [tv.pk]})
    assert answer.status_code == 302
    sub = PrepaidSubscription.objects.get()
    assert sub.created_by == "user:root" and sub.charges.count() == 1
    assert LogEntry.objects.filter(object_id=str(sub.pk)).exists()
    assert find_problems() == []


@pytest.mark.parametrize("bad", [
    {"name": "TV\x00"}, {"name": ""}, {"name": "x" * 201}, {"anchor_day": "31"},
    {"anchor_day": "1e22"}, {"services": ["999999"]}, {"customer": "999999"},
    {"starts_on": "2026-02-30"}, {"customer": "-1"},
])  # fmt: skip
def test_hostile_registration_input_is_a_form_error(staff, alice, tv, bad):
    form = {"customer": alice.pk, "name": "TV", "services": [tv.pk], **bad}
    answer = staff.post(f"{SUBS}add/", form)
    assert answer.status_code in (200, 400)
    assert not PrepaidSubscription.objects.exists()


def topup_form(customer, **changes):
    return {"customer": customer.pk, "currency": "", "enabled": "on", "threshold": "20",
            "amount": "25", "target": "", "daily_max_count": "3", "daily_max_amount": "100",
            "max_declines": "3", **changes}  # fmt: skip


def test_auto_top_up_settings_in_the_admin(staff, alice):
    answer = staff.post(ADD_TOPUP, topup_form(alice))
    assert answer.status_code == 302, answer.context["adminform"].form.errors
    saved = AutoTopUp.objects.get()
    assert (saved.threshold, saved.amount) == (Decimal("20"), Decimal("25"))
    change = f"/admin/billing/autotopup/{saved.pk}/change/"
    form = topup_form(alice, threshold="30", target="80")
    form.pop("customer"), form.pop("currency")
    form.update({"attempts-TOTAL_FORMS": "0", "attempts-INITIAL_FORMS": "0"})
    assert staff.post(change, form).status_code == 302
    saved.refresh_from_db()
    assert (saved.threshold, saved.target) == (Decimal("30"), Decimal("80"))


@pytest.mark.parametrize("bad", [
    {"threshold": "NaN"}, {"amount": "1e22"}, {"amount": "\x00"}, {"amount": "-5"},
    {"amount": "0.10"}, {"target": "5"}, {"daily_max_amount": "1"}, {"daily_max_count": "0"},
    {"max_declines": "99"}, {"currency": "XXX"}, {"amount": "9" * 40},
])  # fmt: skip
def test_hostile_auto_top_up_input_is_a_form_error(staff, alice, bad):
    answer = staff.post(ADD_TOPUP, topup_form(alice, **bad))
    assert answer.status_code in (200, 400), answer.status_code
    assert not AutoTopUp.objects.exists()


def test_status_actions_need_a_reason_and_the_change_permission(alice, tv, staff):
    wallet_services.grant_credit(wallet=wallet_services.open_wallet(customer=alice),
                                 amount=Decimal("25"), kind="paid", name="P", actor=STAFF,
                                 idempotency_key="adm-2")  # fmt: skip
    sub = services.register_subscription(customer=alice, name="TV", services=[tv], actor=STAFF)
    action = {"action": "deactivate", "_selected_action": [sub.pk]}
    page = staff.post(SUBS, action)
    assert page.status_code == 200 and b"Deactivate these subscriptions?" in page.content
    page = staff.post(SUBS, {**action, "post": "yes", "reason": ""})
    assert page.status_code == 200  # the form asks again for a reason
    sub.refresh_from_db()
    assert sub.status == "active"

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_prepaidsubscription"))
    client = Client(raise_request_exception=False)
    client.force_login(viewer)
    answer = client.post(SUBS, {**action, "post": "yes", "reason": "sneaky"})
    sub.refresh_from_db()
    assert sub.status == "active" and answer.status_code in (200, 302, 403)

    staff.post(SUBS, {**action, "post": "yes", "reason": "Customer asked"})
    sub.refresh_from_db()
    assert (sub.status, sub.status_reason) == ("deactivated", "Customer asked")
    assert LogEntry.objects.filter(
        object_id=str(sub.pk), change_message__contains="Customer asked"
    ).exists()
    # a forged id selects nothing
    answer = staff.post(SUBS, {"action": "reactivate", "_selected_action": ["999999"], "post": "yes",
                               "reason": "x"})  # fmt: skip
    assert answer.status_code in (200, 302)
