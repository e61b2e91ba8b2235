"""Staff add credit (Reconcile Later), see Requires Action, activate it, reverse usage."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.factories import CustomerFactory
from tests.wallets.conftest import STAFF
from wallets import services
from wallets.models import CreditGrant, LedgerTransaction

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


def test_reconcile_later_then_activate_with_transaction_id(live_server, staff_page, artifacts_dir):
    page = staff_page
    customer = CustomerFactory(name="Zephyr Networks")
    page.goto(f"{live_server.url}/admin/billing/customer/{customer.pk}/change/")
    page.click("text=Add prepaid credits")
    page.fill("#id_name", "Q1 bundle")
    page.fill("#id_amount", "250")
    page.check("input[name=payment][value=reconcile_later]")
    page.screenshot(path=f"{artifacts_dir}/admin-add-credit.png", full_page=True)
    page.click("input[value='Add credit']")
    expect(page.locator(".messagelist")).to_contain_text("pending (Requires Action)")

    page.goto(f"{live_server.url}/admin/billing/customer/{customer.pk}/change/")
    expect(page.locator("text=1 Requires Action")).to_be_visible()
    page.screenshot(path=f"{artifacts_dir}/admin-customer-requires-action.png", full_page=True)
    page.click("text=1 Requires Action")
    page.check("input.action-select")
    page.select_option("select[name=action]", "activate_grants")
    page.click("button[name=index]")
    page.fill("#id_external_transaction_id", "BANK-2024-0042")
    page.screenshot(path=f"{artifacts_dir}/admin-activate.png", full_page=True)
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("Activate credit: 1 activated.")

    grant = CreditGrant.objects.get()
    assert grant.status == "active" and grant.external_transaction_id == "BANK-2024-0042"
    assert grant.wallet.credit_balance == Decimal("250")
    page.goto(f"{live_server.url}/admin/billing/customer/{customer.pk}/change/")
    expect(page.locator("fieldset").filter(has_text="Balance & Credits")).to_contain_text("250.00")


def test_bad_input_in_the_credit_form_says_what_to_fix(live_server, staff_page):
    page = staff_page
    customer = CustomerFactory()
    page.goto(f"{live_server.url}/admin/wallets/creditgrant/add/?customer={customer.pk}")
    page.fill("#id_amount", "5")
    page.fill("#id_condition_dimensions", "region")
    page.click("input[value='Add credit']")
    expect(page.locator(".errorlist").first).to_be_visible()
    expect(page.locator("body")).to_contain_text("'region' is not name=value")
    assert not CreditGrant.objects.exists()


def test_staff_reverse_a_usage_transaction(live_server, staff_page, artifacts_dir):
    page = staff_page
    wallet = services.open_wallet(customer=CustomerFactory(name="Yotta Labs"))
    services.grant_credit(
        wallet=wallet,
        amount=Decimal("10"),
        kind="paid",
        name="Pack",
        actor=STAFF,
        idempotency_key="g",
    )
    usage = services.draw_down(wallet=wallet, amount=Decimal("3"), actor=STAFF, idempotency_key="u")
    page.goto(f"{live_server.url}/admin/wallets/ledgertransaction/{usage.transaction_id}/change/")
    expect(page.locator("body")).to_contain_text("Credit drawn from grants")
    page.screenshot(path=f"{artifacts_dir}/admin-transaction.png", full_page=True)
    page.goto(f"{live_server.url}/admin/wallets/ledgertransaction/?kind__exact=usage")
    page.check("input.action-select")
    page.select_option("select[name=action]", "reverse_transactions")
    page.click("button[name=index]")
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text(
        "Reverse transactions: 1 reversed (by transaction"
    )
    wallet.refresh_from_db()
    assert wallet.credit_balance == Decimal("10")
    assert LedgerTransaction.objects.filter(
        kind="reversal", reverses_id=usage.transaction_id
    ).exists()
    page.goto(f"{live_server.url}/admin/wallets/wallet/{wallet.pk}/change/")
    page.screenshot(path=f"{artifacts_dir}/admin-wallet.png", full_page=True)
