"""Staff see who is locked out of signing in, until when, and unlock them."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.test import Client

from config.logins.models import FailedSignIn
from tests.factories import UserFactory
from tests.logins.conftest import PASSWORD, signed_in

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LIST = "/admin/logins/failedsignin/"
ALICE_IP = "203.0.113.7"


@pytest.fixture
def staff(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def frozen():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def test_staff_see_the_lockout_and_until_when(client, sign_in, staff, frozen):
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)
    frozen.shift(timedelta(minutes=3))

    page = staff.get(LIST).content.decode()

    assert sign_in.username in page and ALICE_IP in page
    assert "account and address until 10:15 UTC (in 12 minutes)" in page


def test_the_list_shows_a_lock_made_of_several_rows(client, sign_in, staff, frozen):
    """Three failures from one address and two from another lock the account; no
    row alone has five."""
    sign_in.fail(client, 3, REMOTE_ADDR=ALICE_IP)
    frozen.shift(timedelta(minutes=1))
    sign_in.fail(client, 2, REMOTE_ADDR="198.51.100.20")

    page = staff.get(LIST).content.decode()

    assert page.count("account until 10:15 UTC") == 2  # the lock ends 15 min after the 3rd failure
    assert "address until" not in page


def test_rows_past_their_cool_off_are_not_locked(client, sign_in, staff, frozen):
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)
    frozen.shift(timedelta(minutes=16))
    page = staff.get(LIST).content.decode()
    assert "until" not in page.split('id="result_list"')[1]


def test_staff_unlock_an_account_after_confirming(client, sign_in, staff, frozen):
    sign_in.fail(client, 3, REMOTE_ADDR=ALICE_IP)
    sign_in.fail(client, 2, REMOTE_ADDR="198.51.100.20")
    row = FailedSignIn.objects.filter(ip_address=ALICE_IP).get()

    confirm = staff.post(LIST, {"action": "unlock_accounts", "_selected_action": [row.pk]})
    assert confirm.status_code == 200
    assert f"{sign_in.username} from {ALICE_IP}" in confirm.content.decode()
    assert "5 failures in 2 row(s)" in confirm.content.decode()
    assert FailedSignIn.objects.count() == 2  # nothing happens before the confirmation

    done = staff.post(
        LIST, {"action": "unlock_accounts", "_selected_action": [row.pk], "post": "yes"},
        follow=True,
    )  # fmt: skip
    assert "Unlock accounts: 1 unlocked." in done.content.decode()
    assert not FailedSignIn.objects.exists()
    assert LogEntry.objects.filter(change_message__startswith="Unlock accounts").count() == 1

    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 302
    assert signed_in(client)


def test_staff_unlock_an_address_and_the_account_lock_stays(client, sign_in, staff, frozen):
    for name in ["m1", "m2", "m3", "m4", "m5"]:
        sign_in.post(client, "guess", username=name, REMOTE_ADDR=ALICE_IP)
    sign_in.fail(client, 5, REMOTE_ADDR="198.51.100.20")  # the account, from elsewhere
    row = FailedSignIn.objects.filter(username="m1").get()

    staff.post(LIST, {"action": "unlock_addresses", "_selected_action": [row.pk], "post": "yes"})

    assert not FailedSignIn.objects.filter(ip_address=ALICE_IP).exists()
    assert sign_in.post(client, PASSWORD, username="m1", REMOTE_ADDR=ALICE_IP).status_code == 200
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 429


def test_staff_clear_rows_with_the_ordinary_delete(client, sign_in, staff, frozen):
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)
    row = FailedSignIn.objects.get()
    staff.post(LIST, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 302


def test_staff_without_the_delete_permission_cannot_unlock(client, sign_in, frozen):
    from django.contrib.auth.models import Permission

    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_failedsignin"))
    viewer = Client()
    viewer.force_login(clerk)
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)

    page = viewer.get(LIST)
    assert page.status_code == 200 and sign_in.username in page.content.decode()
    assert "unlock_accounts" not in page.content.decode()
    row = FailedSignIn.objects.get()
    viewer.post(LIST, {"action": "unlock_accounts", "_selected_action": [row.pk], "post": "yes"})
    assert FailedSignIn.objects.exists()
