"""Lockout after failed sign-ins, on both sign-in pages (portal and admin).

Defaults: 5 failures in a row lock the account and the client address for 15
minutes from the last failure."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tests.factories import UserFactory
from tests.logins.conftest import PASSWORD, signed_in

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ALICE_IP = "203.0.113.7"
OTHER_IP = "198.51.100.20"


@pytest.fixture
def frozen():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def test_four_failures_are_answered_as_usual_and_the_right_password_still_works(
    client, sign_in, frozen
):
    response = sign_in.fail(client, 4, REMOTE_ADDR=ALICE_IP)
    assert response.status_code == 200
    assert "try again after" not in response.content.decode()
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 302
    assert signed_in(client)


def test_five_failures_lock_and_the_page_says_until_when(client, sign_in, frozen):
    response = sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)

    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed sign-in attempts" in page
    assert "try again after 10:15 UTC (in 15 minutes)" in page
    assert response["Retry-After"] == "900"
    # The sign-in page itself, in its own site's style, not a bare error page.
    assert sign_in.base_template in [t.name for t in response.templates]
    assert 'name="password"' in page
    assert "correct username and password" not in page


def test_the_right_password_is_refused_while_locked(client, sign_in, frozen):
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)
    frozen.shift(timedelta(minutes=5))

    response = sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP)

    assert response.status_code == 429
    assert not signed_in(client)
    assert "try again after 10:15 UTC (in 10 minutes)" in response.content.decode()


def test_further_failures_while_locked_do_not_extend_the_lock(client, sign_in, frozen):
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)
    frozen.shift(timedelta(minutes=14))
    response = sign_in.fail(client, 20, REMOTE_ADDR=ALICE_IP)
    assert "try again after 10:15 UTC (in 1 minute)" in response.content.decode()
    from axes.models import AccessAttempt

    assert AccessAttempt.objects.get().failures_since_start == 5


def test_the_lock_ends_after_the_cool_off(client, sign_in, frozen):
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)

    frozen.move_to(T0 + timedelta(minutes=14, seconds=59))
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 429
    frozen.move_to(T0 + timedelta(minutes=15, seconds=1))
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 302
    assert signed_in(client)


def test_the_time_shown_is_rounded_up_to_the_minute(client, sign_in, frozen):
    frozen.move_to(T0 + timedelta(seconds=20))
    response = sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)
    # Locked until 10:15:20: "after 10:16" is the first whole minute that is true.
    assert "try again after 10:16 UTC" in response.content.decode()


def test_the_account_is_locked_from_every_address(client, sign_in, frozen):
    sign_in.fail(client, 3, REMOTE_ADDR=ALICE_IP)
    response = sign_in.fail(client, 2, REMOTE_ADDR=OTHER_IP)
    assert response.status_code == 429

    response = sign_in.post(client, PASSWORD, REMOTE_ADDR="192.0.2.99")
    assert response.status_code == 429
    assert not signed_in(client)


def test_the_address_is_locked_for_every_account(client, sign_in, frozen):
    for name in ["mallory1", "mallory2", "mallory3", "mallory4", "mallory5"]:
        response = sign_in.post(client, "guess", username=name, REMOTE_ADDR=ALICE_IP)
    assert response.status_code == 429

    # The real account, from the locked address: refused...
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 429
    assert not signed_in(client)
    # ...and from another address: not affected.
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=OTHER_IP).status_code == 302
    assert signed_in(client)


def test_another_account_from_another_address_is_not_affected(client, sign_in, frozen):
    UserFactory(username="bob", is_staff=True)
    sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)

    response = sign_in.post(client, PASSWORD, username="bob", REMOTE_ADDR=OTHER_IP)

    assert response.status_code == 302
    assert signed_in(client)


def test_failures_spread_beyond_the_cool_off_never_lock(client, sign_in, frozen):
    for _ in range(10):
        sign_in.fail(client, 1, REMOTE_ADDR=ALICE_IP)
        frozen.shift(timedelta(minutes=16))
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR=ALICE_IP).status_code == 302


def test_the_lockout_message_names_the_date_when_it_is_not_today(client, sign_in, settings):
    settings.AXES_COOLOFF_TIME = timedelta(hours=24)
    with time_machine.travel(T0, tick=False):
        response = sign_in.fail(client, 5, REMOTE_ADDR=ALICE_IP)
    assert re.search(
        r"try again after 10:00 UTC on 3 March 2026 \(in 1.day\)", response.content.decode()
    )


@pytest.mark.parametrize(
    "username", ["ali\x00ce", "", "' OR 1=1 --", "a" * 300], ids=["nul", "empty", "sql", "long"]
)
def test_hostile_usernames_never_reach_a_500(client, sign_in, username):
    from axes.models import AccessAttempt

    response = sign_in.post(client, "wrong", username=username)
    assert response.status_code == 200
    if username in ["ali\x00ce", ""]:  # refused by the form: never reaches a password check
        assert not AccessAttempt.objects.exists()
    else:  # an unknown username, counted like any other (cut to the column's 255)
        assert AccessAttempt.objects.get().username == username[:255]


def test_a_lock_made_of_several_rows_ends_when_the_page_said(client, sign_in, frozen):
    """Three failures from one address, two more from another five minutes later:
    the lock ends when the first three drop out of the count (10:15), not 15
    minutes after the last failure."""
    sign_in.fail(client, 3, REMOTE_ADDR=ALICE_IP)
    frozen.shift(timedelta(minutes=5))
    response = sign_in.fail(client, 2, REMOTE_ADDR=OTHER_IP)
    assert "try again after 10:15 UTC (in 10 minutes)" in response.content.decode()

    frozen.move_to(T0 + timedelta(minutes=14, seconds=59))
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR="192.0.2.50").status_code == 429
    frozen.move_to(T0 + timedelta(minutes=15, seconds=1))
    assert sign_in.post(client, PASSWORD, REMOTE_ADDR="192.0.2.50").status_code == 302
