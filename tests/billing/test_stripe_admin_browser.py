"""Staff refund a partly used card top-up in the admin (issue 12, item 2), in a browser."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from billing.models import StripeCharge

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("stripe_settings"),
]


def test_refund_confirmation_shows_unused_used_and_the_debt(
    live_server, page, alice, artifacts_dir
):
    from tests.billing.test_stripe_effects import paid_then_used

    get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    grant, charge = paid_then_used(alice)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-for-tests")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/billing/stripecharge/")
    page.check("input.action-select")
    page.select_option("select[name=action]", "refund")
    page.click("button[name=index]")
    expect(page.locator("#content")).to_contain_text("5.00 USD unused, 20.00 USD used")
    expect(page.locator("#content")).to_contain_text("a full refund makes 20.00 USD of debt")
    page.screenshot(path=f"{artifacts_dir}/admin-stripe-refund-confirm.png", full_page=True)

    page.check("#id_turn_used_credit_into_debt")
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("Refund charges: 1 refunded.")
    charge.refresh_from_db()
    grant.wallet.refresh_from_db()
    assert charge.status == StripeCharge.Status.REFUNDED
    assert grant.wallet.debt == Decimal("20")
