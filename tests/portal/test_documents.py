"""The portal's Documents page: the customer's own invoices, with credits applied and
what is left to pay, and each one's PDF; nobody else's."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.periods import period_containing
from billing.usage.invoicing import close_period
from billing.usage.recording import UsageInput, record_usage
from wallets import services
from wallets.actors import Actor

T = Actor.system("tests")


@pytest.fixture
def priced(calls, price):
    price(calls, "0.25", effective_from=datetime(2020, 1, 1, tzinfo=UTC))


def invoice_for(customer, credit, *, quantity, credit_amount):
    credit(customer, credit_amount, effective_at=timezone.now() - timedelta(days=90))
    wallet = services.open_wallet(customer=customer)
    services.change_permanent_limit(
        wallet=wallet, limit="100", actor=T, reason="test"
    )  # usage beyond credit is owed
    period = period_containing(timezone.now() - timedelta(days=35), customer.billing_anchor_day)
    record_usage(event=UsageInput(event_id=f"{customer.pk}-1", customer=customer, product="api-calls",
                                  quantity=quantity, timestamp=period.starts_at + timedelta(hours=1)),
                 actor=T)  # fmt: skip
    (invoice,) = close_period(customer=customer, period=period, actor=T)
    return invoice


@pytest.mark.django_db
def test_customers_see_and_download_only_their_own_invoices(client, alice, bob, priced, credit):
    mine = invoice_for(alice, credit, quantity="80", credit_amount="15")
    theirs = invoice_for(bob, credit, quantity="4", credit_amount="10")
    client.force_login(alice.portal_users.get().user)

    page = client.get("/portal/documents/").content.decode()
    assert mine.display_number in page and theirs.display_number not in page
    assert "20.00 USD" in page and "15.00" in page and "5.00" in page  # usage, credits, to pay

    pdf = client.get(f"/portal/documents/{mine.pk}/pdf/")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert client.get(f"/portal/documents/{theirs.pk}/pdf/").status_code == 404


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_documents_page_in_the_browser(live_server, page, alice, priced, credit, artifacts_dir):
    invoice = invoice_for(alice, credit, quantity="80", credit_amount="15")
    page.goto(f"{live_server.url}/portal/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "s3cret-pass")
    page.click("main button[type=submit]")
    page.click("nav >> text=Documents")
    row = page.locator("table tr", has_text=invoice.display_number)
    expect(row).to_contain_text("20.00 USD")
    expect(row).to_contain_text("Issued")
    expect(row.locator("a", has_text="PDF")).to_have_attribute(
        "href", f"/portal/documents/{invoice.pk}/pdf/"
    )
    page.screenshot(path=f"{artifacts_dir}/portal-documents.png", full_page=True)
