"""check_ledger proves payments and allocations (invoices/ledger_check.py): each
check catches the corruption it is about, and a healthy flow is clean."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from invoices.ledger_check import CHECKS
from invoices.models import Invoice, Payment, PaymentAllocation
from invoices.payments import allocate_payment, record_payment
from invoices.topups import create_top_up_invoice, send_top_up_invoice
from wallets.actors import Actor
from wallets.ledger_check import find_problems

pytestmark = pytest.mark.django_db
T = Actor.system("tests")


@pytest.fixture
def allocation(alice):
    invoice = create_top_up_invoice(customer=alice, name="A", amount="100", actor=T)
    invoice = send_top_up_invoice(invoice=invoice, actor=T, email=False)
    payment = record_payment(customer=alice, amount="150", currency="USD", method="cash",
                             actor=T, idempotency_key="p")  # fmt: skip
    return allocate_payment(payment=payment, invoice=invoice, actor=T, idempotency_key="a")


def broken(rule_start: str) -> list[str]:
    return [p for p in find_problems() if p.startswith(rule_start)]


def test_a_healthy_flow_is_clean_and_the_command_says_so(allocation):
    assert find_problems() == []
    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ledger OK" in out.getvalue()


def test_allocated_not_the_sum_of_allocations(allocation):
    Payment.objects.filter(pk=allocation.payment_id).update(allocated=120)
    assert broken("a payment's allocated amount")
    with pytest.raises(CommandError, match="FAILED"):
        call_command("check_ledger", stdout=StringIO(), stderr=StringIO())


def test_amount_paid_not_the_sum_of_allocations(allocation):
    Invoice.objects.filter(pk=allocation.invoice_id).update(amount_paid=90)
    assert broken("an invoice's paid amount")


def test_allocation_across_customers(allocation, bob):
    PaymentAllocation.objects.filter(pk=allocation.pk).update(customer=bob)
    assert broken("an allocation's payment and invoice")


def test_allocation_grant_not_a_top_up(allocation):
    on_account = Payment.objects.get(pk=allocation.payment_id).credit_grant_id
    PaymentAllocation.objects.filter(pk=allocation.pk).update(grant_id=on_account)
    assert broken("a live allocation's top-up grant")


def test_status_disagrees_with_paid_amount(allocation):
    Invoice.objects.filter(pk=allocation.invoice_id).update(status="sent")
    assert broken("a paid top-up invoice is paid in full")


def test_every_invoice_check_has_a_corruption_test():
    tested = ("a payment's allocated", "an invoice's paid", "an allocation's payment",
              "a live allocation's", "a paid top-up invoice")  # fmt: skip
    assert all(any(c.rule.startswith(t) for t in tested) for c in CHECKS)
    assert len(CHECKS) == len(tested)
