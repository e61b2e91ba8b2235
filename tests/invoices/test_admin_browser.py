"""The B3Networks seed in the admin, in a browser: create a top-up invoice → send →
record a payment → allocate → paid and provisioned, balance up; then the void and
remove-payment rules. check_ledger clean at the end."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from playwright.sync_api import expect

from invoices.models import Invoice, Payment
from tests.factories import CustomerFactory
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import Wallet
from wallets.services import draw_down

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


def run_action(page, url, action, *, select=None):
    page.goto(url)
    if select is None:
        page.check("#action-toggle")
    else:
        page.check(f"input.action-select[value='{select}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_top_up_invoice_end_to_end_in_the_admin(live_server, staff_page, artifacts_dir):
    page, base = staff_page, live_server.url
    customer = CustomerFactory(name="Acme Telecom", email="billing@acme.example")
    invoices_url = f"{base}/admin/invoices/invoice/"

    # create: from the customer's Balance & Credits panel
    page.goto(f"{base}/admin/billing/customer/{customer.pk}/change/")
    page.click("text=Create top-up invoice")
    page.fill("#id_name", "December top-up")
    page.fill("#id_amount", "100")
    page.screenshot(path=f"{artifacts_dir}/admin-topup-create.png", full_page=True)
    page.click("input[value='Create invoice']")
    expect(page.locator(".messagelist")).to_contain_text("Created draft top-up invoice")
    invoice = Invoice.objects.get()
    assert invoice.status == "draft" and invoice.amount_due == Decimal("100.00")

    # allocating to a draft is refused with a message
    run_action(page, invoices_url, "allocate_payment")
    expect(page.locator(".messagelist")).to_contain_text("a draft cannot take a payment")

    # send
    run_action(page, invoices_url, "send_invoices")
    page.screenshot(path=f"{artifacts_dir}/admin-topup-send-confirm.png", full_page=True)
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("sent as TOP-000001")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["billing@acme.example"]
    run_action(page, invoices_url, "resend_email")
    page.click("input[type=submit][value='Yes, email']")
    expect(page.locator(".messagelist")).to_contain_text("Email invoices: 1 emailed")
    assert len(mail.outbox) == 2

    # record a payment (Finance app), on the customer's balance, unallocated
    page.goto(f"{base}/admin/billing/customer/{customer.pk}/change/")
    page.click("text=Record payment")
    page.fill("#id_amount", "100")
    page.fill("#id_reference", "BANK-2026-1202")
    page.screenshot(path=f"{artifacts_dir}/admin-payment-record.png", full_page=True)
    page.click("input[value='Record payment']")
    expect(page.locator(".messagelist")).to_contain_text("unallocated")
    payment = Payment.objects.get()
    page.goto(f"{base}/admin/billing/customer/{customer.pk}/change/")
    expect(page.locator("fieldset").filter(has_text="Balance & Credits")).to_contain_text(
        "Unallocated payments: 100.00 USD"
    )
    page.screenshot(path=f"{artifacts_dir}/admin-customer-unallocated.png", full_page=True)

    # over-allocation is refused and says why
    run_action(page, invoices_url, "allocate_payment")
    page.fill("#id_payment", str(payment.pk))
    page.fill("#id_amount", "150")
    page.click("input[type=submit][value='Allocate']")
    expect(page.locator(".messagelist")).to_contain_text("more than payment")

    # allocate from the invoice (the 3-dots "Payment" of B3)
    run_action(page, invoices_url, "allocate_payment")
    expect(page.locator("#content")).to_contain_text(f"#{payment.pk}: 100.00 USD unallocated")
    page.fill("#id_payment", str(payment.pk))
    page.screenshot(path=f"{artifacts_dir}/admin-topup-allocate.png", full_page=True)
    page.click("input[type=submit][value='Allocate']")
    expect(page.locator(".messagelist")).to_contain_text(
        f"allocated 100.00 of payment #{payment.pk}"
    )
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    assert Wallet.objects.get(customer=customer).credit_balance == Decimal("100")
    page.goto(f"{base}/admin/invoices/invoice/{invoice.pk}/change/")
    expect(page.locator("#content")).to_contain_text("Paid and provisioned")
    page.screenshot(path=f"{artifacts_dir}/admin-topup-paid.png", full_page=True)
    page.goto(invoices_url + "?status__exact=paid")
    page.screenshot(path=f"{artifacts_dir}/admin-invoice-list.png", full_page=True)
    page.goto(f"{base}/admin/invoices/payment/{payment.pk}/change/")
    page.screenshot(path=f"{artifacts_dir}/admin-payment.png", full_page=True)

    # void is refused while a payment is allocated
    run_action(page, invoices_url, "void_invoices")
    page.fill("#id_reason", "customer cancelled")
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("remove those payments first")

    # remove the payment while its credit is unspent: back to unallocated
    run_action(page, invoices_url, "remove_payments")
    page.screenshot(path=f"{artifacts_dir}/admin-topup-remove-payment.png", full_page=True)
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("payments back to unallocated")
    invoice.refresh_from_db()
    payment.refresh_from_db()
    assert invoice.status == "sent" and payment.unallocated == Decimal("100")

    # allocate again from the payment, spend some, and removal is refused naming it
    run_action(page, f"{base}/admin/invoices/payment/", "allocate_to_invoice")
    page.fill("#id_invoice", "top-000001")
    page.click("input[type=submit][value='Allocate']")
    expect(page.locator(".messagelist")).to_contain_text("allocated 100.00 to TOP-000001")
    wallet = Wallet.objects.get(customer=customer)
    draw_down(wallet=wallet, amount=Decimal("5"), actor=Actor.system("calls"), idempotency_key="u1")
    run_action(page, invoices_url, "remove_payments")
    page.click("input[type=submit][value^='Yes']")
    expect(page.locator(".messagelist")).to_contain_text("5.00 USD of the 100.00 USD credit")
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    assert find_problems() == []


def test_forged_ids_and_bad_amounts_in_admin_forms_say_what_to_fix(live_server, staff_page):
    page, base = staff_page, live_server.url
    customer = CustomerFactory(name="Beta Ltd")
    page.goto(f"{base}/admin/invoices/payment/add/?customer={customer.pk}")
    # what the browser's own checks would stop, the server refuses too
    page.eval_on_selector("#service-form", "form => form.noValidate = true")
    page.fill("#id_amount", "-5")
    page.click("input[value='Record payment']")
    expect(page.locator(".errorlist").first).to_be_visible()
    page.eval_on_selector("#service-form", "form => form.noValidate = true")
    page.fill("#id_amount", "12.345")
    page.click("input[value='Record payment']")
    expect(page.locator(".errorlist").first).to_contain_text("2 decimal places")
    page.select_option("#id_currency", "EUR")
    page.fill("#id_amount", "10")
    page.click("input[value='Record payment']")
    expect(page.locator(".errornote")).to_contain_text("not one of")
    assert not Payment.objects.exists()
    response = page.request.get(f"{base}/admin/invoices/invoice/add/?customer=abc")
    assert response.status == 200
    assert find_problems() == []
