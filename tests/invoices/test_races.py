"""Allocations and sends racing: real parallel clients (one thread and one
PostgreSQL connection each). Never over-allocated, never a shared or skipped number,
never a database error; check_ledger clean at the end."""

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from invoices.errors import InvoiceError
from invoices.models import Invoice, Payment, PaymentAllocation
from invoices.services import allocate_payment, record_payment
from invoices.topups import create_top_up_invoice, send_top_up_invoice
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import Wallet

D = Decimal
STAFF = Actor.system("tests")
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROUNDS = 5


def in_parallel(calls):
    """Run each call in its own thread (own connection), all released at once;
    returns each call's result or the InvoiceError it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        try:
            barrier.wait()
            return call()
        except InvoiceError as exc:
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def sent_top_up(customer, amount, name):
    invoice = create_top_up_invoice(customer=customer, name=name, amount=amount, actor=STAFF)
    return send_top_up_invoice(invoice=invoice, actor=STAFF, email=False, apply_unallocated=False)


def test_two_allocations_of_one_payment_at_once_never_over_allocate(alice):
    for n in range(ROUNDS):
        first = sent_top_up(alice, "100.00", f"first {n}")
        second = sent_top_up(alice, "100.00", f"second {n}")
        payment = record_payment(
            customer=alice, amount="100.00", currency="USD", method="cash", actor=STAFF,
            idempotency_key=f"pay{n}",
        )  # fmt: skip
        results = in_parallel(
            [
                lambda i=invoice, k=f"r{n}-{j}", p=payment: allocate_payment(
                    payment=p.pk,
                    invoice=i.pk,
                    amount="100.00",
                    actor=STAFF,
                    idempotency_key=k,
                )  # fmt: skip
                for j, invoice in enumerate((first, second))
            ]
        )
        booked = [r for r in results if isinstance(r, PaymentAllocation)]
        refused = [r for r in results if isinstance(r, InvoiceError)]
        assert len(booked) == 1 and len(refused) == 1, results
        assert "fully allocated" in str(refused[0])
        payment.refresh_from_db()
        assert payment.allocated == D("100") and payment.unallocated == 0
    assert Invoice.objects.filter(status="paid").count() == ROUNDS
    assert Wallet.objects.get(customer=alice).credit_balance == D("100") * ROUNDS
    assert find_problems() == []


def test_two_payments_for_one_invoice_at_once_never_overpay_it(alice):
    for n in range(ROUNDS):
        invoice = sent_top_up(alice, "100.00", f"invoice {n}")
        payments = [
            record_payment(
                customer=alice,
                amount="80.00",
                currency="USD",
                method="cash",
                actor=STAFF,
                idempotency_key=f"pay{n}-{j}",
            )  # fmt: skip
            for j in range(2)
        ]
        results = in_parallel(
            [
                lambda p=p, k=f"r{n}-{j}", i=invoice: allocate_payment(
                    payment=p.pk,
                    invoice=i.pk,
                    amount="80.00",
                    actor=STAFF,
                    idempotency_key=k,
                )  # fmt: skip
                for j, p in enumerate(payments)
            ]
        )
        assert sum(isinstance(r, PaymentAllocation) for r in results) == 1, results
        assert "open amount 20.00" in str(next(r for r in results if isinstance(r, InvoiceError)))
        invoice.refresh_from_db()
        assert invoice.amount_paid == D("80") and invoice.status == "partially_paid"
    assert find_problems() == []


def test_sends_at_once_never_share_or_skip_a_number(alice, bob):
    drafts = [
        create_top_up_invoice(customer=c, name=f"draft {i}", amount="10.00", actor=STAFF)
        for i in range(4)
        for c in (alice, bob)
    ]
    in_parallel(
        [
            lambda d=d: send_top_up_invoice(invoice=d.pk, actor=STAFF, email=False)
            for d in drafts + drafts[:3]  # three sent twice at once
        ]
    )
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(1, len(drafts) + 1))
    assert Payment.objects.count() == 0
    assert find_problems() == []


def test_sends_applying_unallocated_race_allocations_without_deadlock(alice):
    payments = [
        record_payment(
            customer=alice,
            amount="50.00",
            currency="USD",
            method="cash",
            actor=STAFF,
            idempotency_key=f"pay{j}",
        )  # fmt: skip
        for j in range(3)
    ]
    open_one = sent_top_up(alice, "200.00", "open")
    drafts = [
        create_top_up_invoice(customer=alice, name=f"d{i}", amount="40.00", actor=STAFF)
        for i in range(3)
    ]
    results = in_parallel(
        [lambda d=d: send_top_up_invoice(invoice=d.pk, actor=STAFF, email=False) for d in drafts]
        + [
            lambda p=p: allocate_payment(
                payment=p.pk,
                invoice=open_one.pk,
                amount="10.00",
                actor=STAFF,
                idempotency_key=f"manual{p.pk}",
            )  # fmt: skip
            for p in payments
        ]
    )
    assert all(isinstance(r, (Invoice, PaymentAllocation, InvoiceError)) for r in results)
    total = sum(p.amount for p in Payment.objects.all())
    allocated = sum(p.allocated for p in Payment.objects.all())
    paid = sum(i.amount_paid for i in Invoice.objects.all())
    assert allocated == paid <= total
    assert Wallet.objects.get(customer=alice).credit_balance == total
    assert find_problems() == []
