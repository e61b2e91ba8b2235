"""A customer pays a top-up invoice by card in the portal (issue 16), in a browser."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing.models import StripeCharge
from billing.stripe import services as stripe_services
from invoices.models import Invoice, Payment
from tests.billing.test_stripe_invoices import assert_ledger_clean, sent_invoice

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("stripe_settings"),
]


def test_pay_by_card_button_pays_the_invoice(live_server, page, alice, artifacts_dir):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    invoice = sent_invoice(alice, amount="250.00", name="December top-up")
    page.goto(f"{live_server.url}/portal/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "s3cret-pass")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/portal/documents/top-ups/")
    row = page.locator("tr", has_text=invoice.display_number)
    expect(row).to_contain_text("Sent")
    shot = f"{artifacts_dir}/portal-top-up-pay-before.png"
    page.screenshot(path=shot, full_page=True)

    row.get_by_role("link", name="Pay by card").click()
    expect(page.locator("main")).to_contain_text("Visa ending in 4242")
    page.screenshot(path=f"{artifacts_dir}/portal-top-up-pay-confirm.png", full_page=True)
    page.get_by_role("button", name="Pay 250.00 USD now").click()

    expect(page.locator(".messages")).to_contain_text(
        f"Paid 250.00 USD for invoice {invoice.display_number} by card"
    )
    expect(page.locator("tr", has_text=invoice.display_number)).to_contain_text(
        "Paid and provisioned"
    )
    expect(page.get_by_role("link", name="Pay by card")).to_have_count(0)
    page.screenshot(path=f"{artifacts_dir}/portal-top-up-pay-after.png", full_page=True)
    page.goto(f"{live_server.url}/portal/documents/payments/")
    expect(page.locator("main")).to_contain_text("Card")
    page.screenshot(path=f"{artifacts_dir}/portal-top-up-pay-payments.png", full_page=True)

    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    charge = StripeCharge.objects.get()
    payment = Payment.objects.get()
    assert (payment.method, payment.reference) == ("card", charge.payment_intent_id)
    assert alice.wallets.get().credit_balance == Decimal("250.00")
    assert_ledger_clean()
