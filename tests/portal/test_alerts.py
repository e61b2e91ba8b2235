"""The customer's own balance warnings in the portal: edit, errors, what was sent."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing.models import Customer
from wallets import services
from wallets.actors import Actor
from wallets.models import Notification, Wallet

STAFF = Actor.system("tests")


@pytest.mark.django_db
def test_a_customer_sets_thresholds_and_they_reach_the_wallet(client, alice, bob):
    services.open_wallet(customer=alice)
    client.force_login(alice.portal_users.get().user)
    response = client.post("/portal/alerts/", {"low_funds_thresholds": "5, 25"})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.low_funds_thresholds == "25, 5"
    assert Wallet.objects.get(customer=alice).low_funds_thresholds == [Decimal(25), Decimal(5)]
    assert Customer.objects.get(pk=bob.pk).low_funds_thresholds == ""  # only one's own


@pytest.mark.django_db
def test_bad_input_is_explained_and_changes_nothing(client, alice):
    alice.low_funds_thresholds = "10"
    alice.save()
    client.force_login(alice.portal_users.get().user)
    response = client.post("/portal/alerts/", {"low_funds_thresholds": "10, ten"})
    assert response.status_code == 400
    assert "“ten” is not a number" in response.content.decode()
    alice.refresh_from_db()
    assert alice.low_funds_thresholds == "10"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_customer_manages_warnings_in_the_browser(live_server, page, alice, artifacts_dir):
    wallet = services.open_wallet(customer=alice)
    services.grant_credit(wallet=wallet, amount=Decimal("30"), kind="paid", name="Pack",
                          actor=STAFF, idempotency_key="g1")  # fmt: skip
    page.goto(f"{live_server.url}/portal/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "s3cret-pass")
    page.click("button[type=submit]")
    page.click("nav >> text=Balance warnings")
    expect(page.locator("h1")).to_have_text("Balance warnings")
    page.fill("#id_low_funds_thresholds", "20, -1")
    page.click("main button[type=submit]")
    expect(page.locator("main")).to_contain_text("must be more than zero")
    page.fill("#id_low_funds_thresholds", "20, 5")
    page.click("main button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("Your balance warnings are saved.")
    expect(page.locator("#id_low_funds_thresholds")).to_have_value("20, 5")

    services.draw_down(wallet=wallet, amount=Decimal("12"), actor=STAFF, idempotency_key="u1")
    page.reload()
    expect(page.locator("main")).to_contain_text("Low funds: less than 20.00 USD available")
    assert Notification.objects.get().customer == alice
    page.screenshot(path=f"{artifacts_dir}/portal-alerts.png", full_page=True)
