"""Balance & Credits in Chromium: staff create a postpaid customer with its limit,
grant a temporary increase from the panel (refused above the maximum, then
accepted) and see the history; a customer transfers in the portal and both
customers see it."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from billing.models import Customer, Partner
from tests.wallets.conftest import STAFF
from wallets import services
from wallets.models import CreditLimitChange, LedgerTransaction, Wallet

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff_page(live_server, page):
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    return page


def panel(page):
    return page.locator("fieldset").filter(has_text="Balance & Credits")


def test_staff_create_a_postpaid_customer_and_run_its_limits_from_the_panel(
    live_server, staff_page, artifacts_dir
):
    page = staff_page
    Partner.objects.create(name="Northwind")
    page.goto(f"{live_server.url}/admin/billing/customer/add/")
    page.fill("#id_name", "Yara Freight")
    page.click(".field-partner .select2-selection")  # an autocomplete field
    page.fill(".select2-search__field", "North")
    page.click(".select2-results__option:has-text('Northwind')")
    page.select_option("#id_balance_model", "postpaid")
    page.select_option("#id_currency", "EUR")
    page.fill("#id_permanent_credit_limit", "300")
    page.screenshot(path=f"{artifacts_dir}/admin-customer-add-limit.png", full_page=True)
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    wallet = Wallet.objects.get(customer__name="Yara Freight")
    assert (wallet.currency, wallet.credit_limit) == ("EUR", Decimal("300"))
    expect(panel(page).locator("[data-testid=permanent-limit]")).to_have_text("300.00 EUR")

    page.click("text=Grant temporary increase")
    hint = page.locator("[data-testid=hint]")
    expect(hint).to_contain_text("Maximum possible increase: 1000.00 EUR for at most 30 days")
    page.fill("#id_value", "1500")
    page.fill("#id_reason", "Peak season")
    page.click("input[value=Continue]")
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".errornote")).to_contain_text(
        "above the maximum possible increase: 1000.00 EUR for at most 30 days"
    )
    page.screenshot(path=f"{artifacts_dir}/admin-temporary-refused.png", full_page=True)
    assert not CreditLimitChange.objects.filter(kind="temporary").exists()

    page.check("input[name=increase_as][value=percent]")
    page.fill("#id_value", "50")
    page.click("input[value=Continue]")
    expect(page.locator("[data-testid=summary]")).to_contain_text("50")
    page.screenshot(path=f"{artifacts_dir}/admin-temporary-confirm.png", full_page=True)
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("Temporary increase of 150.00 EUR")
    expect(panel(page).locator("[data-testid=effective-limit]")).to_have_text("450.00 EUR")
    history = panel(page).locator("table.limit-history")
    expect(history).to_contain_text("Temporary increase granted")
    expect(history).to_contain_text("Peak season")
    page.screenshot(path=f"{artifacts_dir}/admin-balance-panel.png", full_page=True)

    services.draw_down(wallet=wallet, amount=Decimal("400"), actor=STAFF, idempotency_key="use")
    page.click("text=End temporary increase")
    page.fill("#id_reason", "Risk review")
    page.click("input[value=Continue]")
    expect(page.locator("[data-testid=summary]")).to_contain_text("above the permanent limit")
    page.click("input[type=submit][value^='Yes']")
    expect(panel(page).locator("[data-testid=over-limit]")).to_have_text("Over limit by 100.00 EUR")
    page.screenshot(path=f"{artifacts_dir}/admin-over-limit.png", full_page=True)
    assert list(
        CreditLimitChange.objects.filter(wallet=wallet)
        .order_by("id")
        .values_list("kind", flat=True)
    ) == ["permanent", "temporary", "ended"]


def login(page, live_server, username):
    page.goto(f"{live_server.url}/portal/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "s3cret-pass")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/portal/")


def test_a_customer_transfers_in_the_portal_and_both_see_it(
    live_server, page, browser, alice, bob, artifacts_dir
):
    for who in (alice, bob):
        who.transfer_policy = Customer.TransferPolicy.YES
        who.save()
    services.grant_credit(
        wallet=services.open_wallet(customer=alice), amount=Decimal("40"), kind="paid",
        name="Top-up", actor=STAFF, idempotency_key="g1",
    )  # fmt: skip
    services.open_wallet(customer=bob)
    login(page, live_server, "alice")
    page.click("nav >> text=Transfer")
    expect(page.locator("[data-testid=transferable]")).to_have_text("40.00 USD")
    page.fill("#id_receiver", bob.account_number)
    page.fill("#id_amount", "15")
    page.fill("#id_memo", "Team lunch")
    page.click("main button[type=submit]")
    expect(page.locator("main")).to_contain_text(
        f"transfer 15.00 USD to account {bob.account_number}"
    )
    page.screenshot(path=f"{artifacts_dir}/portal-transfer-confirm.png", full_page=True)
    page.click("main button[type=submit]")
    expect(page.locator(".messages")).to_contain_text(
        f"Transferred 15.00 USD to {bob.account_number}"
    )
    expect(page.locator("main table")).to_contain_text("Team lunch")
    page.screenshot(path=f"{artifacts_dir}/portal-transfer-sender.png", full_page=True)

    other = browser.new_page()
    login(other, live_server, "bob")
    other.click("nav >> text=Transactions")
    expect(other.locator("main table")).to_contain_text(f"Received from {alice.account_number}")
    expect(other.locator("main table")).to_contain_text("15.00")
    other.screenshot(path=f"{artifacts_dir}/portal-transfer-receiver.png", full_page=True)
    assert LedgerTransaction.objects.filter(kind="transfer").count() == 1
    assert Wallet.objects.get(customer=bob).credit_balance == Decimal("15")
