"""Top-up invoices (B3Networks) end to end in the services: create, send (number,
PDF, email), allocate payments (provisioned as top-up credit), void rules, removing
a payment while its credit is unspent; check_ledger clean after every flow."""

import subprocess
from decimal import Decimal

import pytest
from django.core import mail

from invoices.errors import CreditSpent, InvoiceError, InvoiceStateError
from invoices.models import Invoice, Payment, PaymentAllocation
from invoices.pdf import render_invoice_pdf, render_receipt_pdf
from invoices.services import allocate_payment, record_payment, remove_allocation, remove_payment
from invoices.topups import create_top_up_invoice, send_top_up_invoice, void_top_up_invoice
from tests.factories import customer_with_login
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, Wallet
from wallets.services import draw_down

D = Decimal
STAFF = Actor.system("tests")
pytestmark = pytest.mark.django_db


def balance(customer):
    return Wallet.objects.get(customer=customer, currency=customer.currency).credit_balance


def top_up(customer, amount="100.00", name="December top-up"):
    return create_top_up_invoice(customer=customer, name=name, amount=amount, actor=STAFF)


def pay(customer, amount="100.00", key="p1", **kwargs):
    kwargs.setdefault("method", Payment.Method.BANK_TRANSFER)
    return record_payment(
        customer=customer, amount=amount, currency=customer.currency, actor=STAFF,
        idempotency_key=key, **kwargs,
    )  # fmt: skip


def sent(customer, amount="100.00", **kwargs):
    return send_top_up_invoice(invoice=top_up(customer, amount, **kwargs), actor=STAFF)


def test_the_seed_flow_allocating_100_provisions_100_and_marks_paid(
    alice, django_capture_on_commit_callbacks
):
    invoice = top_up(alice, "100.00")
    assert invoice.status == Invoice.Status.DRAFT and invoice.number is None
    with django_capture_on_commit_callbacks(execute=True):
        invoice = send_top_up_invoice(invoice=invoice, actor=STAFF)
    assert invoice.status == Invoice.Status.SENT
    assert invoice.display_number == "TOP-000001"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [alice.email]
    assert "TOP-000001" in message.subject
    assert message.attachments[0][0] == "TOP-000001.pdf"
    assert message.attachments[0][1][:5] == b"%PDF-"
    invoice.refresh_from_db()
    assert invoice.emailed_at is not None

    payment = pay(alice, "100.00")
    allocation = allocate_payment(
        payment=payment, invoice=invoice, amount="100.00", actor=STAFF, idempotency_key="a1"
    )
    invoice.refresh_from_db()
    payment.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert invoice.amount_paid == D("100.00") and invoice.open_amount == 0
    assert payment.unallocated == 0 and payment.credit_grant is None
    grant = allocation.grant
    assert grant.kind == CreditGrant.Kind.TOP_UP and grant.amount == D("100")
    assert grant.name == "Top-up TOP-000001" and grant.expires_at is not None
    assert balance(alice) == D("100")  # once, not twice
    assert find_problems() == []
    # a retry with the same key is the same allocation
    again = allocate_payment(
        payment=payment, invoice=invoice, amount="100.00", actor=STAFF, idempotency_key="a1"
    )
    assert again.pk == allocation.pk
    assert balance(alice) == D("100")


def test_partial_payments_then_paid(alice):
    invoice = sent(alice, "100.00")
    first, second = pay(alice, "60.00", key="p1"), pay(alice, "70.00", key="p2")
    allocate_payment(payment=first, invoice=invoice, actor=STAFF, idempotency_key="a1")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PARTIALLY_PAID and invoice.open_amount == D("40")
    allocate_payment(payment=second, invoice=invoice, actor=STAFF, idempotency_key="a2")
    invoice.refresh_from_db()
    second.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert second.allocated == D("40") and second.unallocated == D("30")
    assert (
        second.credit_grant.amount == D("30") and second.credit_grant.kind == "payment_on_account"
    )
    assert balance(alice) == D("130")
    kinds = sorted(CreditGrant.objects.filter(status="active").values_list("kind", "amount"))
    assert kinds == [("payment_on_account", D("30")), ("top_up", D("40")), ("top_up", D("60"))]
    assert find_problems() == []


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("100.01", "open amount 100.00"),
        ("150.00", "unallocated 120.00"),
        ("-1", "greater than zero"),
    ],
)
def test_allocation_above_open_or_unallocated_is_refused(alice, amount, message):
    invoice = sent(alice, "100.00")
    payment = pay(alice, "120.00")
    with pytest.raises(InvoiceError, match=message):
        allocate_payment(
            payment=payment, invoice=invoice, amount=amount, actor=STAFF, idempotency_key="a1"
        )
    assert PaymentAllocation.objects.count() == 0
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT and balance(alice) == D("120")


def test_allocation_to_a_draft_is_refused_with_a_message(alice):
    invoice = top_up(alice)
    payment = pay(alice)
    with pytest.raises(InvoiceStateError, match="is a draft; send it"):
        allocate_payment(payment=payment, invoice=invoice, actor=STAFF, idempotency_key="a1")
    assert PaymentAllocation.objects.count() == 0


def test_wrong_currency_and_another_customers_payment_are_refused(alice, bob):
    wallet_services.open_wallet(customer=alice, currency="EUR")
    invoice = sent(alice)
    euros = record_payment(
        customer=alice, amount="100.00", currency="EUR", method="cash", actor=STAFF,
        idempotency_key="eur",
    )  # fmt: skip
    with pytest.raises(InvoiceError, match="in EUR and invoice TOP-000001 in USD"):
        allocate_payment(payment=euros, invoice=invoice, actor=STAFF, idempotency_key="a1")
    bobs = pay(bob, key="bob")
    with pytest.raises(InvoiceError, match="own customer's invoices"):
        allocate_payment(payment=bobs, invoice=invoice, actor=STAFF, idempotency_key="a2")
    assert PaymentAllocation.objects.count() == 0
    assert find_problems() == []


def test_void_only_a_draft_or_sent_invoice_with_nothing_allocated(alice):
    draft = top_up(alice)
    assert void_top_up_invoice(invoice=draft, reason="typo", actor=STAFF).status == "void"
    waiting = sent(alice)
    assert void_top_up_invoice(invoice=waiting, reason="not needed", actor=STAFF).status == "void"
    paid = sent(alice, name="Paid one")
    allocate_payment(payment=pay(alice), invoice=paid, actor=STAFF, idempotency_key="a1")
    with pytest.raises(InvoiceStateError, match="payments allocated"):
        void_top_up_invoice(invoice=paid, reason="try", actor=STAFF)
    with pytest.raises(InvoiceStateError, match="already void"):
        void_top_up_invoice(invoice=waiting, reason="again", actor=STAFF)
    with pytest.raises(InvoiceStateError, match="void; it cannot be sent"):
        send_top_up_invoice(invoice=waiting, actor=STAFF)
    with pytest.raises(InvoiceError, match="reason is required"):
        void_top_up_invoice(invoice=sent(alice, name="x"), reason="  ", actor=STAFF)
    paid.refresh_from_db()
    assert paid.status == Invoice.Status.PAID
    assert find_problems() == []


def test_removing_an_unspent_top_up_payment_returns_it_to_unallocated(alice):
    invoice = sent(alice)
    payment = pay(alice)
    allocation = allocate_payment(
        payment=payment, invoice=invoice, actor=STAFF, idempotency_key="a1"
    )
    remove_allocation(allocation=allocation, actor=STAFF)
    invoice.refresh_from_db()
    payment.refresh_from_db()
    assert invoice.status == Invoice.Status.SENT and invoice.amount_paid == 0
    assert payment.unallocated == D("100") and payment.credit_grant.kind == "payment_on_account"
    allocation.grant.refresh_from_db()
    assert allocation.grant.status == CreditGrant.Status.VOIDED
    assert balance(alice) == D("100")  # still the customer's money, unallocated
    remove_allocation(allocation=allocation, actor=STAFF)  # a retry changes nothing
    assert balance(alice) == D("100")
    # now the invoice can be voided, and the payment deleted
    void_top_up_invoice(invoice=invoice, reason="paid elsewhere", actor=STAFF)
    removed = remove_payment(payment=payment, actor=STAFF)
    assert removed.status == Payment.Status.REMOVED and removed.unallocated == 0
    assert balance(alice) == 0
    assert find_problems() == []


def test_removing_a_payment_whose_top_up_was_spent_is_refused_naming_it(alice):
    invoice = sent(alice)
    payment = pay(alice)
    allocation = allocate_payment(
        payment=payment, invoice=invoice, actor=STAFF, idempotency_key="a1"
    )
    wallet = Wallet.objects.get(customer=alice)
    draw_down(wallet=wallet, amount=D("12.50"), actor=STAFF, idempotency_key="use")
    with pytest.raises(
        CreditSpent, match=r"12\.50 USD of the 100\.00 USD credit .*Top-up TOP-000001"
    ):
        remove_allocation(allocation=allocation, actor=STAFF)
    with pytest.raises(CreditSpent, match="has been spent"):
        remove_payment(payment=payment, actor=STAFF)
    invoice.refresh_from_db()
    payment.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID and payment.status == Payment.Status.RECORDED
    assert balance(alice) == D("87.50")
    assert find_problems() == []


def test_spent_unallocated_credit_still_pays_but_only_what_is_left_is_provisioned(alice):
    payment = pay(alice, "100.00")
    wallet = Wallet.objects.get(customer=alice)
    draw_down(wallet=wallet, amount=D("30"), actor=STAFF, idempotency_key="use")
    invoice = send_top_up_invoice(invoice=top_up(alice), actor=STAFF, apply_unallocated=False)
    allocation = allocate_payment(
        payment=payment, invoice=invoice, actor=STAFF, idempotency_key="a1"
    )
    assert allocation.grant.amount == D("70")
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert balance(alice) == D("70")
    assert find_problems() == []


def test_unallocated_payments_pay_later_invoices_oldest_first_at_send(alice):
    older, newer = pay(alice, "30.00", key="p1"), pay(alice, "100.00", key="p2")
    invoice = sent(alice, "50.00")
    older.refresh_from_db()
    newer.refresh_from_db()
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert older.unallocated == 0 and newer.unallocated == D("80")
    assert list(invoice.allocations.values_list("payment_id", "amount")) == [
        (older.pk, D("30")), (newer.pk, D("20")),
    ]  # fmt: skip
    assert balance(alice) == D("130")
    assert find_problems() == []


def test_sending_twice_keeps_one_number_and_one_email(alice, django_capture_on_commit_callbacks):
    invoice = top_up(alice)
    with django_capture_on_commit_callbacks(execute=True):
        send_top_up_invoice(invoice=invoice, actor=STAFF)
        send_top_up_invoice(invoice=invoice, actor=STAFF)
    assert len(mail.outbox) == 1
    second = sent(alice, name="second")
    assert second.display_number == "TOP-000002"


def test_a_customer_without_email_is_sent_but_not_emailed(django_capture_on_commit_callbacks):
    nomail = customer_with_login("dora", email="")
    with django_capture_on_commit_callbacks(execute=True):
        invoice = sent(nomail)
    assert invoice.status == Invoice.Status.SENT and mail.outbox == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "", "name is required"),
        ("name", "a\x00", "NUL"),
        ("amount", "0", "greater than zero"),
        ("amount", "1e20", "too large"),
    ],
)
def test_create_refuses_bad_input(alice, field, value, message):
    kwargs = {"name": "ok", "amount": "10.00", field: value}
    with pytest.raises(InvoiceError, match=message):
        create_top_up_invoice(customer=alice, actor=STAFF, **kwargs)
    assert Invoice.objects.count() == 0


def test_top_up_invoice_and_receipt_pdfs(alice, tmp_path):
    invoice = sent(alice, "100.00", name="Q4 prepaid top-up")
    payment = pay(alice, "150.00", reference="BANK-7781", comment="Thank you")
    allocate_payment(payment=payment, invoice=invoice, actor=STAFF, idempotency_key="a1")
    invoice.refresh_from_db()
    payment.refresh_from_db()
    for name, pdf in (
        ("invoice", render_invoice_pdf(invoice)),
        ("receipt", render_receipt_pdf(payment)),
    ):
        path = tmp_path / f"{name}.pdf"
        path.write_bytes(pdf)
        text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True).stdout
        assert "TOP-000001" in text
        assert "BANK-7781" in text
        assert "100.00" in text
    invoice_text = subprocess.run(
        ["pdftotext", str(tmp_path / "invoice.pdf"), "-"], capture_output=True, text=True
    ).stdout
    assert "Top-up invoice TOP-000001" in invoice_text and "PAID" in invoice_text
    receipt_text = subprocess.run(
        ["pdftotext", str(tmp_path / "receipt.pdf"), "-"], capture_output=True, text=True
    ).stdout
    assert "Payment receipt" in receipt_text and "50.00" in receipt_text


def test_a_refill_card_payment_pays_a_top_up_invoice_from_the_cards_credit(alice):
    wallet = wallet_services.open_wallet(customer=alice)
    card = wallet_services.grant_credit(
        wallet=wallet, amount=D("50"), kind="refill_card", name="Refill card 0001", actor=STAFF,
        idempotency_key="card-1",
    )  # fmt: skip
    payment = pay(alice, "50.00", method=Payment.Method.REFILL_CARD, credit_grant=card)
    invoice = send_top_up_invoice(invoice=top_up(alice, "30.00"), actor=STAFF)
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID  # applied at send, oldest first
    top = invoice.allocations.get().grant
    assert top.kind == "top_up" and top.funding_code == "refill_cards" and top.amount == D("30")
    assert (
        payment.credit_grant.amount == D("20")
        and payment.credit_grant.funding_code == "refill_cards"
    )
    assert balance(alice) == D("50")
    with pytest.raises(InvoiceStateError, match="refill card"):
        remove_payment(payment=payment, actor=STAFF)
    assert find_problems() == []
