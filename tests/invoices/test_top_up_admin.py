"""Top-up admin actions with hostile values: forged ids (another customer's payment,
an unknown invoice number), huge and negative amounts, NUL bytes. Each answers a
page that says what is wrong, never a 500, and changes nothing."""

import html

import pytest
from django.contrib.auth import get_user_model

from invoices.models import Invoice, Payment, PaymentAllocation
from invoices.payments import record_payment
from invoices.topups import create_top_up_invoice, send_top_up_invoice
from wallets.actors import Actor
from wallets.ledger_check import find_problems

pytestmark = pytest.mark.django_db
T = Actor.system("tests")


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    client.raise_request_exception = False
    return client


@pytest.fixture
def setup(alice, bob):
    invoice = send_top_up_invoice(
        invoice=create_top_up_invoice(customer=alice, name="A", amount="100", actor=T), actor=T,
        email=False,
    )  # fmt: skip
    bobs = record_payment(customer=bob, amount="50", currency="USD", method="cash", actor=T,
                          idempotency_key="bob")  # fmt: skip
    return invoice, bobs


def act(staff, url, action, pk, **data):
    return staff.post(
        url, {"action": action, "_selected_action": [pk], "post": "yes", **data}, follow=True
    )


@pytest.mark.parametrize(
    ("payment", "amount", "says"),
    [
        ("bob", "", "is not one of A"),
        ("99999999", "", "is not one of A"),
        ("1" * 30, "", "Ensure this value is less than or equal to"),
        ("-1", "", "greater than or equal to 1"),
        ("x\x00", "", "Enter a whole number"),
        ("bob", "1e30", "Ensure that there are no more than"),
        ("bob", "-5", "greater than or equal to 0.01"),
    ],
)
def test_allocate_action_refuses_forged_and_bad_values(staff, setup, payment, amount, says):
    invoice, bobs = setup
    value = str(bobs.pk) if payment == "bob" else payment
    page = act(staff, "/admin/invoices/invoice/", "allocate_payment", invoice.pk,
               payment=value, amount=amount)  # fmt: skip
    assert page.status_code == 200
    assert says in html.unescape(page.content.decode())
    assert not PaymentAllocation.objects.exists()
    invoice.refresh_from_db()
    assert invoice.status == "sent"


@pytest.mark.parametrize(
    "number", ["TOP-999999", "TOP-", "", "x" * 31, "TOP-1\x00", "TOP-99999999999999"]
)
def test_allocate_from_payment_refuses_unknown_invoice_numbers(staff, setup, number):
    invoice, bobs = setup
    page = act(staff, "/admin/invoices/payment/", "allocate_to_invoice", bobs.pk, invoice=number)
    assert page.status_code == 200
    assert not PaymentAllocation.objects.exists()


def test_another_customers_invoice_number_is_not_found(staff, setup):
    invoice, bobs = setup
    page = act(staff, "/admin/invoices/payment/", "allocate_to_invoice", bobs.pk,
               invoice=invoice.display_number)  # fmt: skip
    text = html.unescape(page.content.decode())
    assert "no invoice 'TOP-000001' for this payment's customer" in text
    assert not PaymentAllocation.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", "-1"), ("amount", "1e30"), ("amount", "NaN"), ("reference", "a\x00b"),
     ("received_on", "2999-01-01"), ("received_on", "not a date"), ("customer", "999999"),
     ("currency", "XXX"), ("method", "cheque")],
)  # fmt: skip
def test_record_payment_form_refuses_bad_values(staff, alice, field, value):
    data = {"customer": alice.pk, "amount": "10", "currency": "", "method": "cash",
            "received_on": "2026-12-01", "reference": "", "comment": "", field: value}  # fmt: skip
    page = staff.post("/admin/invoices/payment/add/", data)
    assert page.status_code == 200, page.status_code
    assert "errorlist" in page.content.decode() or "errornote" in page.content.decode()
    assert not Payment.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", "0"), ("amount", "99999999999999999"), ("name", "\x00"), ("name", "")],
)
def test_create_top_up_form_refuses_bad_values(staff, alice, field, value):
    data = {"customer": alice.pk, "amount": "10", "name": "ok", "currency": "", field: value}
    page = staff.post("/admin/invoices/invoice/add/", data)
    assert page.status_code == 200
    assert Invoice.objects.count() == 0
    assert find_problems() == []
