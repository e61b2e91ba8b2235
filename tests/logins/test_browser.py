"""Real Chromium (Debian's) through Playwright: the lockout as a person sees it."""

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from config.logins.lockout import shown_time
from config.logins.models import FailedSignIn
from tests.logins.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SUBMIT = {"portal": "button[type=submit]", "admin": "input[type=submit]"}
ERROR = {"portal": "p.error", "admin": "p.errornote"}


def test_the_sign_in_page_says_when_to_try_again(live_server, page, sign_in, artifacts_dir):
    page.goto(f"{live_server.url}{sign_in.url}")
    for _ in range(5):
        page.fill("#id_username", sign_in.username)
        page.fill("#id_password", "wrong-password")
        page.click(SUBMIT[sign_in.name])

    until = shown_time(FailedSignIn.objects.get().attempt_time + timedelta(minutes=15))
    error = page.locator(ERROR[sign_in.name])
    expect(error).to_contain_text("Too many failed sign-in attempts")
    expect(error).to_contain_text(f"try again after {until:%H:%M} UTC")
    expect(error).to_contain_text(re.compile(r"\(in 1[45] minutes\)"))
    page.screenshot(path=f"/tmp/logins-{sign_in.name}-locked.png", full_page=True)
    page.screenshot(path=f"{artifacts_dir}/{sign_in.name}-login-locked.png", full_page=True)

    # The right password, typed into the same page, is refused while locked.
    page.fill("#id_username", sign_in.username)
    page.fill("#id_password", PASSWORD)
    page.click(SUBMIT[sign_in.name])
    expect(page.locator(ERROR[sign_in.name])).to_contain_text("Too many failed sign-in attempts")
    assert page.url.endswith(sign_in.url)


def test_staff_see_the_lockout_and_unlock_the_account(live_server, page, db, artifacts_dir):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tests.factories import customer_with_login

    customer_with_login("alice")
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    for _ in range(5):
        Client().post("/portal/login/", {"username": "alice", "password": "x"},
                      REMOTE_ADDR="203.0.113.7")  # fmt: skip

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.click("text=Failed sign-ins")
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text("203.0.113.7")
    expect(row).to_contain_text("account and address until")
    page.screenshot(path="/tmp/logins-admin-lockouts.png", full_page=True)
    page.screenshot(path=f"{artifacts_dir}/admin-lockouts.png", full_page=True)

    page.check("input.action-select")
    page.select_option("select[name=action]", "unlock_accounts")
    page.click("button[name=index]")
    expect(page.locator("#content")).to_contain_text("alice from 203.0.113.7")
    page.click("input[type=submit][value='Yes, unlock']")
    expect(page.locator(".messagelist")).to_contain_text("Unlock accounts: 1 unlocked.")
    assert not FailedSignIn.objects.exists()
