"""Real Chromium (Debian's) through Playwright against a live test server."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.factories import CustomerFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_logs_into_admin_and_finds_a_customer(live_server, page, artifacts_dir):
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    CustomerFactory(name="Zephyr Networks", account_number="ZEPH-1")

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    page.click("text=Customers")
    page.fill("#searchbar", "zephyr")
    page.press("#searchbar", "Enter")

    page.wait_for_url("**/billing/customer/?q=zephyr")
    row = page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("ZEPH-1")
    expect(row).to_contain_text("Zephyr Networks")
    page.screenshot(path=f"{artifacts_dir}/admin-customers.png", full_page=True)


def test_customer_signs_into_portal_and_sees_own_account(
    live_server, page, alice, bob, artifacts_dir
):
    from decimal import Decimal

    from wallets import services
    from wallets.actors import Actor

    actor = Actor.system("tests")
    wallet = services.open_wallet(customer=alice)
    services.grant_credit(
        wallet=wallet,
        amount=Decimal("100"),
        kind="paid",
        name="Starter",
        actor=actor,
        idempotency_key="a1",
    )
    services.grant_credit(wallet=wallet, amount=Decimal("40"), kind="paid", name="Bank transfer", actor=actor,
                          idempotency_key="a2", pending=True)  # fmt: skip
    services.draw_down(
        wallet=wallet, amount=Decimal("12.345"), actor=actor, idempotency_key="u1", memo="API calls"
    )
    bob_wallet = services.open_wallet(customer=bob)
    services.grant_credit(wallet=bob_wallet, amount=Decimal("7"), kind="paid", name="Bob secret pack", actor=actor,
                          idempotency_key="b1")  # fmt: skip
    page.goto(f"{live_server.url}/portal/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "s3cret-pass")
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text(alice.name)
    expect(page.locator("main")).to_contain_text(alice.account_number)
    assert bob.account_number not in page.inner_text("main")
    expect(page.locator("#available-USD")).to_have_text("87.66")  # 100 - 12.345, shown to the cent
    expect(page.locator("main")).to_contain_text("Awaiting payment")
    page.screenshot(path=f"{artifacts_dir}/portal-dashboard.png", full_page=True)
    page.click("text=All transactions")
    expect(page.locator("main")).to_contain_text("Usage drawn down — API calls")
    assert "Bob secret pack" not in page.inner_text("main")
