"""Portal Documents: the customer's own top-up invoices and payments, with status,
unallocated amounts and PDFs; nobody else's."""

import pytest
from playwright.sync_api import expect

from invoices.payments import allocate_payment, record_payment
from invoices.topups import create_top_up_invoice, send_top_up_invoice
from wallets.actors import Actor

T = Actor.system("tests")


def paid_top_up(customer, *, amount="100.00", paid="60.00", extra="25.00", key="k"):
    invoice = create_top_up_invoice(customer=customer, name="Q4 top-up", amount=amount, actor=T)
    invoice = send_top_up_invoice(invoice=invoice, actor=T, email=False)
    payment = record_payment(
        customer=customer, amount=paid, currency=customer.currency, method="bank_transfer",
        reference=f"BANK-{key}", actor=T, idempotency_key=f"{key}-1",
    )  # fmt: skip
    allocate_payment(payment=payment, invoice=invoice, actor=T, idempotency_key=f"{key}-a")
    spare = record_payment(
        customer=customer, amount=extra, currency=customer.currency, method="cash", actor=T,
        idempotency_key=f"{key}-2",
    )  # fmt: skip
    draft = create_top_up_invoice(customer=customer, name="Not sent yet", amount="9", actor=T)
    return invoice, payment, spare, draft


@pytest.mark.django_db
def test_customers_see_only_their_own_top_ups_and_payments(client, alice, bob):
    mine, my_payment, spare, draft = paid_top_up(alice, key="a")
    theirs, their_payment, _, _ = paid_top_up(bob, amount="77.00", key="b")
    client.force_login(alice.portal_users.get().user)

    page = client.get("/portal/documents/top-ups/").content.decode()
    assert mine.display_number in page and theirs.display_number not in page
    assert "Partially paid" in page and "40.00" in page  # open to pay
    assert draft.name not in page  # drafts are staff-only

    page = client.get("/portal/documents/payments/").content.decode()
    assert f"#{my_payment.pk}" in page and "BANK-a" in page and "BANK-b" not in page
    assert "Unallocated: <strong>25.00 USD</strong>" in page
    assert mine.display_number in page

    assert client.get(f"/portal/documents/{mine.pk}/pdf/").content.startswith(b"%PDF")
    receipt = client.get(f"/portal/documents/payments/{my_payment.pk}/receipt/")
    assert receipt.status_code == 200 and receipt.content.startswith(b"%PDF")
    for url in (
        f"/portal/documents/{theirs.pk}/pdf/",
        f"/portal/documents/{draft.pk}/pdf/",
        f"/portal/documents/payments/{their_payment.pk}/receipt/",
        "/portal/documents/payments/99999999999/receipt/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.get("/portal/documents/payments/?page=abc").status_code == 200
    assert client.get("/portal/documents/top-ups/?page=%00").status_code == 400  # NUL refused


@pytest.mark.django_db
def test_signed_out_visitors_are_sent_to_login(client, alice):
    invoice, payment, _, _ = paid_top_up(alice)
    for url in ("/portal/documents/top-ups/", f"/portal/documents/payments/{payment.pk}/receipt/"):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response["Location"]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_top_up_documents_in_the_browser(live_server, page, alice, artifacts_dir):
    invoice, payment, _, _ = paid_top_up(alice)
    page.goto(f"{live_server.url}/portal/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "s3cret-pass")
    page.click("main button[type=submit]")
    page.click("nav >> text=Documents")
    page.click("text=Top-up invoices")
    row = page.locator("table tr", has_text=invoice.display_number)
    expect(row).to_contain_text("Partially paid")
    expect(row).to_contain_text("100.00 USD")
    page.screenshot(path=f"{artifacts_dir}/portal-top-up-invoices.png", full_page=True)
    page.click("text=Payments")
    row = page.locator("table tr", has_text=f"#{payment.pk}")
    expect(row).to_contain_text(invoice.display_number)
    expect(page.locator("main")).to_contain_text("Unallocated: 25.00 USD")
    page.screenshot(path=f"{artifacts_dir}/portal-payments.png", full_page=True)
