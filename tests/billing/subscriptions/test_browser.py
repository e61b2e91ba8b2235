"""Real Chromium through Playwright: staff register a subscription, deactivate it
with a reason on the confirmation page and see the history; the customer sees it in
the portal and sets up automatic top-up."""

import shutil
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from billing.models.subscriptions import AutoTopUp, PrepaidSubscription, Service, ServiceRate
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.ledger_check import find_problems

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SHOTS = "/work/shots/subscriptions"


def shot(page, artifacts_dir, name):
    path = f"{artifacts_dir}/{name}.png"
    page.screenshot(path=path, full_page=True)
    try:
        shutil.copy(path, f"{SHOTS}/{name}.png")
    except OSError:
        pass  # only on the machine where someone looks at them


def test_staff_register_deactivate_with_reason_and_see_history(
    live_server, page, alice, artifacts_dir
):
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    tv = Service.objects.create(code="tv-basic", name="TV basic")
    ServiceRate.objects.create(service=tv, currency="USD", per_period=Decimal("30"))
    wallet = wallet_services.open_wallet(customer=alice)
    wallet_services.grant_credit(wallet=wallet, amount=Decimal("40"), kind="paid", name="Cash",
                                 actor=Actor.system("tests"), idempotency_key="b1")  # fmt: skip

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/billing/prepaidsubscription/add/")
    page.select_option("#id_customer", str(alice.pk))
    page.fill("#id_name", "TV at home")
    page.check("text=TV basic")
    shot(page, artifacts_dir, "admin-subscription-register")
    page.click("input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Registered TV at home")
    expect(page.locator("#charges-group")).to_contain_text("30.00")
    shot(page, artifacts_dir, "admin-subscription-registered")

    page.goto(f"{live_server.url}/admin/billing/prepaidsubscription/")
    page.check("#result_list tbody input[type=checkbox]")
    page.select_option("select[name=action]", "deactivate")
    page.click("button[name=index]")
    expect(page.locator("#content")).to_contain_text("Deactivate these subscriptions?")
    page.click("input[type=submit]")  # no reason: the browser asks for one, nothing changes
    expect(page.locator("#content")).to_contain_text("Deactivate these subscriptions?")
    assert PrepaidSubscription.objects.get().status == "active"
    page.fill("#id_reason", "Customer moves abroad for a month")
    shot(page, artifacts_dir, "admin-subscription-deactivate-confirm")
    page.click("input[type=submit]")
    expect(page.locator(".messagelist")).to_contain_text("Deactivate: 1 deactivated")
    page.click("#changelist-filter a:text-is('Deactivated')")  # the status filter
    page.wait_for_url("**/prepaidsubscription/?status__exact=deactivated")
    expect(page.locator("#result_list")).to_contain_text("TV at home")
    shot(page, artifacts_dir, "admin-subscriptions-deactivated")
    sub = PrepaidSubscription.objects.get()
    page.goto(f"{live_server.url}/admin/billing/prepaidsubscription/{sub.pk}/change/")
    expect(page.locator("#status_changes-group")).to_contain_text("Customer moves abroad")
    shot(page, artifacts_dir, "admin-subscription-history")
    assert (sub.status, sub.hold) == ("deactivated", "staff")
    assert find_problems() == []


def test_customer_sees_subscriptions_and_sets_auto_top_up(
    live_server, page, alice, bob, artifacts_dir
):
    from billing.subscriptions import services

    tv = Service.objects.create(code="tv-basic", name="TV basic")
    ServiceRate.objects.create(service=tv, currency="USD", per_period=Decimal("30"))
    wallet = wallet_services.open_wallet(customer=alice)
    wallet_services.grant_credit(wallet=wallet, amount=Decimal("40"), kind="paid", name="Cash",
                                 actor=Actor.system("tests"), idempotency_key="p1")  # fmt: skip
    services.register_subscription(customer=alice, name="TV at home", services=[tv],
                                   actor=Actor.system("tests"))  # fmt: skip
    services.register_subscription(
        customer=alice, name="Second box", services=[tv], actor=Actor.system("tests")
    )  # fmt: skip  (10 left: on hold)
    services.register_subscription(customer=bob, name="Bob line", services=[tv],
                                   actor=Actor.system("tests"))  # fmt: skip

    page.goto(f"{live_server.url}/portal/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "s3cret-pass")
    page.click("button[type=submit]")
    page.click("text=Subscriptions")
    rows = page.locator("#subscriptions tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#subscriptions")).to_contain_text("Deactivated")
    expect(page.locator("#subscriptions")).not_to_contain_text("Bob line")
    page.fill("#id_threshold", "15")
    page.fill("#id_amount", "0.10")
    page.fill("#id_daily_max_amount", "100")
    page.click("#auto-top-up button[type=submit]")
    expect(page.locator("#auto-top-up")).to_contain_text("at least 0.50")
    shot(page, artifacts_dir, "portal-subscriptions-error")
    page.fill("#id_amount", "25")
    page.click("#auto-top-up button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("automatic top-up settings are saved")
    shot(page, artifacts_dir, "portal-subscriptions")
    saved = AutoTopUp.objects.get(customer=alice)
    assert (saved.threshold, saved.amount) == (Decimal("15"), Decimal("25"))
