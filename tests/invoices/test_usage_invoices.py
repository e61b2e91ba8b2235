"""Usage invoices: a line per product item, credits applied, amount due; PDF; void."""

import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from billing.models import Customer
from billing.periods import period_containing
from billing.usage.invoicing import close_due_periods, close_period, void_usage_invoice
from billing.usage.recording import UsageInput, record_usage
from invoices.models import Invoice
from invoices.pdf import render_invoice_pdf
from invoices.services import InvoiceError, allocate_cents
from wallets import services
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant

D = Decimal
JOB = Actor.job("close_billing_periods")
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
pytestmark = pytest.mark.django_db


@pytest.fixture
def sms(db):
    from billing.models import ProductItem

    return ProductItem.objects.create(code="sms", name="SMS", unit="message")


def use(customer, product, quantity, when, n=[0]):  # noqa: B006 - a counter for event ids
    n[0] += 1
    return record_usage(
        event=UsageInput(
            event_id=f"e{n[0]}",
            customer=customer,
            product=product,
            quantity=quantity,
            timestamp=when,
        ),
        actor=Actor.system("tests"),
    ).event


def last_period(customer):
    return period_containing(timezone.now() - timedelta(days=35), customer.billing_anchor_day)


def test_invoice_shows_lines_credits_applied_and_nothing_due(alice, calls, sms, price, credit):
    price(calls, "0.002", effective_from=LONG_AGO)
    price(sms, "0.05", effective_from=LONG_AGO)
    credit(alice, "100", effective_at=timezone.now() - timedelta(days=90))
    period = last_period(alice)
    at = period.starts_at + timedelta(days=2)
    use(alice, "api-calls", "1500", at)
    use(alice, "api-calls", "2500", at + timedelta(hours=1))
    use(alice, "sms", "7", at)

    (invoice,) = close_period(customer=alice, period=period, actor=JOB)
    lines = [
        (line.description, line.quantity, line.unit_price, line.amount)
        for line in invoice.lines.all()
    ]
    assert lines == [
        ("API calls (call)", D("4000"), D("0.002"), D("8.00")),
        ("SMS (message)", D("7"), D("0.05"), D("0.35")),
    ]
    assert (invoice.subtotal, invoice.credits_applied, invoice.amount_due) == (
        D("8.35"),
        D("8.35"),
        D("0"),
    )
    assert invoice.display_number == "USG-000001" and invoice.status == "issued"
    # running the close again issues nothing new
    assert close_period(customer=alice, period=period, actor=JOB) == [invoice]
    assert Invoice.objects.count() == 1
    assert find_problems() == []


def test_amount_due_appears_once_credits_are_exhausted(alice, calls, price, credit):
    price(calls, "0.10", effective_from=LONG_AGO)
    credit(alice, "5", effective_at=timezone.now() - timedelta(days=90))
    services.change_permanent_limit(
        wallet=services.open_wallet(customer=alice), limit=D("100"), actor=JOB, reason="test"
    )
    period = last_period(alice)
    use(alice, "api-calls", "80", period.starts_at + timedelta(days=1))  # 8.00: 5 credit, 3 debt
    (invoice,) = close_period(customer=alice, period=period, actor=JOB)
    assert (invoice.subtotal, invoice.credits_applied, invoice.amount_due) == (
        D("8.00"),
        D("5.00"),
        D("3.00"),
    )
    assert find_problems() == []


def test_sub_cent_debt_is_rounded_once_and_the_ledger_agrees(alice, calls, price):
    price(calls, "0.0001", effective_from=LONG_AGO)
    wallet = services.open_wallet(customer=alice)
    services.change_permanent_limit(wallet=wallet, limit=D("10"), actor=JOB, reason="test")
    period = last_period(alice)
    use(alice, "api-calls", "123", period.starts_at + timedelta(hours=5))  # 0.0123 of debt
    (invoice,) = close_period(customer=alice, period=period, actor=JOB)
    wallet.refresh_from_db()
    assert invoice.amount_due == D("0.01") and wallet.debt == D("0.01")  # rounding booked
    assert find_problems() == []


def test_close_due_periods_catches_up_period_by_period(alice, calls, price, credit, settings):
    settings.USAGE_MAX_AGE_DAYS = 365  # a backfill of months-old usage
    price(calls, "1", effective_from=LONG_AGO)
    credit(alice, "100", effective_at=timezone.now() - timedelta(days=200))
    three_ago = period_containing(timezone.now() - timedelta(days=95), alice.billing_anchor_day)
    use(alice, "api-calls", "1", three_ago.starts_at + timedelta(days=1))
    use(
        alice,
        "api-calls",
        "2",
        three_ago.next(alice.billing_anchor_day).starts_at + timedelta(days=1),
    )
    use(alice, "api-calls", "4", timezone.now() - timedelta(minutes=1))  # current period: not yet
    assert close_due_periods(actor=JOB) == 2
    assert close_due_periods(actor=JOB) == 0
    assert sorted(Invoice.objects.values_list("subtotal", flat=True)) == [D("1.00"), D("2.00")]
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [1, 2]  # gapless


def test_period_boundaries_follow_the_anchor_day(alice, calls, price, credit):
    Customer.objects.filter(pk=alice.pk).update(billing_anchor_day=15)
    alice.refresh_from_db()
    price(calls, "1", effective_from=LONG_AGO)
    with time_machine.travel(datetime(2026, 3, 20, 12, tzinfo=UTC)):
        credit(alice, "100", effective_at=datetime(2026, 1, 1, tzinfo=UTC))
        use(alice, "api-calls", "1", datetime(2026, 3, 14, 23, 59, tzinfo=UTC))  # Feb 15 – Mar 14
        use(alice, "api-calls", "2", datetime(2026, 3, 15, 0, 0, tzinfo=UTC))  # Mar 15 – Apr 14
    with time_machine.travel(datetime(2026, 4, 15, 0, 1, tzinfo=UTC)):
        assert close_due_periods(actor=JOB) == 2
    first, second = Invoice.objects.order_by("period_start")
    assert (str(first.period_start), str(first.period_end), first.subtotal) == (
        "2026-02-15",
        "2026-03-15",
        D("1.00"),
    )
    assert (str(second.period_start), str(second.period_end), second.subtotal) == (
        "2026-03-15",
        "2026-04-15",
        D("2.00"),
    )


def test_void_returns_credits_to_their_grants_with_original_expiry(alice, calls, price, credit):
    price(calls, "0.5", effective_from=LONG_AGO)
    expires = timezone.now() + timedelta(days=60)
    grant = credit(
        alice, "10", effective_at=timezone.now() - timedelta(days=90), expires_at=expires
    )
    period = last_period(alice)
    use(alice, "api-calls", "6", period.starts_at + timedelta(days=1))
    (invoice,) = close_period(customer=alice, period=period, actor=JOB)
    grant.refresh_from_db()
    assert grant.remaining == D("7")
    with pytest.raises(InvoiceError, match="reason"):
        void_usage_invoice(invoice=invoice, reason=" ", actor=JOB)
    void_usage_invoice(invoice=invoice, reason="wrong price", actor=JOB)
    grant.refresh_from_db()
    invoice.refresh_from_db()
    assert grant.remaining == D("10") and grant.expires_at == expires
    assert invoice.status == "void" and all(
        e.status == "reversed" for e in invoice.usage_events.all()
    )
    with pytest.raises(InvoiceError, match="already void"):
        void_usage_invoice(invoice=invoice, reason="again", actor=JOB)
    assert CreditGrant.objects.get(pk=grant.pk).status == "active"
    assert find_problems() == []


def test_pdf_shows_the_invoice(alice, calls, price, credit, tmp_path, artifacts_dir):
    price(calls, "0.002", effective_from=LONG_AGO)
    credit(alice, "100", effective_at=timezone.now() - timedelta(days=90))
    period = last_period(alice)
    use(alice, "api-calls", "4000", period.starts_at + timedelta(days=3))
    (invoice,) = close_period(customer=alice, period=period, actor=JOB)
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(render_invoice_pdf(invoice))
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Invoice USG-000001" in text and alice.name in text
    assert "API calls (call)" in text and "8.00" in text
    assert "Prepaid credits applied" in text and "Amount due" in text
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-singlefile", str(pdf), f"{artifacts_dir}/usage-invoice"],
        check=True,
    )


def test_cents_are_allocated_without_losing_one():
    parts = allocate_cents([D("0.333333"), D("0.333333"), D("0.333334")])
    assert sum(parts) == D("1.00") and sorted(parts) == [D("0.33"), D("0.33"), D("0.34")]


def test_the_close_job_runs_through_the_job_platform(alice, calls, price, credit):
    from billing.tasks import close_billing_periods
    from jobs.models import JobRun

    price(calls, "1", effective_from=LONG_AGO)
    credit(alice, "100", effective_at=timezone.now() - timedelta(days=200))
    use(alice, "api-calls", "3", last_period(alice).starts_at + timedelta(days=1))
    close_billing_periods(batch_size=1)
    close_billing_periods(batch_size=1)
    assert Invoice.objects.count() == 1
    runs = JobRun.objects.filter(job_name="close_billing_periods").order_by("id")
    assert [r.items_processed for r in runs] == [1, 0]


# --- issue 12, item 1: rounding after the debt was paid; one failure stops nobody ---


def debt_then_top_up(customer, calls, quantity, top_up="50"):
    """Usage of `quantity` × 0.001 in the last period goes to debt (limit 100), then a
    top-up pays that debt off before the period is closed."""
    wallet = services.open_wallet(customer=customer)
    services.change_permanent_limit(wallet=wallet, limit=D("100"), actor=JOB, reason="test")
    use(customer, "api-calls", quantity, last_period(customer).starts_at + timedelta(days=1))
    wallet.refresh_from_db()
    assert wallet.debt == D(quantity) / 1000
    services.grant_credit(
        wallet=wallet, amount=D(top_up), kind="paid", name="Top-up", actor=JOB,
        idempotency_key=f"top-up-{customer.pk}",
    )  # fmt: skip
    wallet.refresh_from_db()
    assert wallet.debt == 0
    return wallet


def test_a_debt_paid_off_before_the_close_is_invoiced_and_nobody_after_is_skipped(
    alice, bob, calls, price, credit
):
    price(calls, "0.001", effective_from=LONG_AGO)
    wallet = debt_then_top_up(alice, calls, "10004")  # 10.004 owed, then paid off exactly
    credit(bob, "100", effective_at=timezone.now() - timedelta(days=90))
    use(bob, "api-calls", "3000", last_period(bob).starts_at + timedelta(days=2))
    assert alice.pk < bob.pk

    assert close_due_periods(actor=JOB) == 2
    mine = Invoice.objects.get(customer=alice)
    assert (mine.subtotal, mine.credits_applied, mine.amount_due) == (D("10.00"), 0, D("10.00"))
    assert mine.rounding_transaction_id is None  # nothing owed now: nothing to round
    assert Invoice.objects.get(customer=bob).subtotal == D("3.00")
    wallet.refresh_from_db()
    assert (wallet.debt, wallet.credit_balance) == (0, D("39.996"))
    assert find_problems() == []


def test_rounding_up_never_books_new_debt_on_a_paid_invoice(alice, calls, price):
    price(calls, "0.001", effective_from=LONG_AGO)
    wallet = debt_then_top_up(alice, calls, "10006")  # 10.006 billed as 10.01, already paid
    (invoice,) = close_period(customer=alice, period=last_period(alice), actor=JOB)
    assert invoice.amount_due == D("10.01") and invoice.rounding_transaction_id is None
    wallet.refresh_from_db()
    assert wallet.debt == 0
    assert find_problems() == []


def test_debt_of_later_usage_is_left_to_its_own_invoice(alice, calls, price):
    """Payments reach the oldest debt first: with last period's debt paid off, the debt
    of this period's usage is not this invoice's to round."""
    price(calls, "0.001", effective_from=LONG_AGO)
    wallet = debt_then_top_up(alice, calls, "10004", top_up="10.004")
    use(alice, "api-calls", "503.7", timezone.now() - timedelta(minutes=5))  # 0.5037 of debt
    (invoice,) = close_period(customer=alice, period=last_period(alice), actor=JOB)
    wallet.refresh_from_db()
    assert invoice.rounding_transaction_id is None and wallet.debt == D("0.5037")
    assert find_problems() == []


def test_rounding_takes_only_what_is_still_owed(alice, calls, price):
    """10.004 of debt, 5 paid by a top-up: 5.004 is still owed and is rounded to 5.00."""
    price(calls, "0.001", effective_from=LONG_AGO)
    wallet = services.open_wallet(customer=alice)
    services.change_permanent_limit(wallet=wallet, limit=D("100"), actor=JOB, reason="test")
    use(alice, "api-calls", "10004", last_period(alice).starts_at + timedelta(days=1))
    services.grant_credit(
        wallet=wallet, amount=D("5"), kind="paid", name="Top-up", actor=JOB,
        idempotency_key="partial-top-up",
    )  # fmt: skip
    (invoice,) = close_period(customer=alice, period=last_period(alice), actor=JOB)
    wallet.refresh_from_db()
    assert invoice.amount_due == D("10.00") and wallet.debt == D("5.00")
    assert invoice.rounding_transaction_id is not None
    # voiding the invoice undoes the usage and the rounding: nothing is owed
    void_usage_invoice(invoice=invoice, reason="test", actor=JOB)
    wallet.refresh_from_db()
    assert wallet.debt == 0
    assert find_problems() == []


@pytest.fixture
def invoice_refused_for(django_db_blocker):
    """A real failure for one customer: the database refuses that customer's invoice rows
    (a trigger, rolled back with the test's transaction)."""

    def refuse(customer):
        from django.db import connection

        with connection.cursor() as db:
            db.execute(
                f"""
                CREATE FUNCTION test_refuse_invoice() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'test: invoices of customer % are refused', NEW.customer_id;
                END $$;
                CREATE TRIGGER test_refuse_invoice BEFORE INSERT ON invoices_invoice
                FOR EACH ROW WHEN (NEW.customer_id = {int(customer.pk)})
                EXECUTE FUNCTION test_refuse_invoice();
                """
            )

    return refuse


def test_one_customers_failure_is_recorded_and_the_others_are_invoiced(
    alice, bob, charlie, calls, price, credit, admin_client, invoice_refused_for
):
    from django.urls import reverse

    from billing.tasks import close_billing_periods
    from jobs.models import JobRun

    price(calls, "1", effective_from=LONG_AGO)
    price(calls, "1", effective_from=LONG_AGO, currency="EUR")
    for customer in (alice, bob, charlie):
        credit(customer, "100", effective_at=timezone.now() - timedelta(days=200))
        use(customer, "api-calls", "3", last_period(customer).starts_at + timedelta(days=1))
    invoice_refused_for(alice)  # the first customer of the run

    result = close_billing_periods(batch_size=200)

    assert set(Invoice.objects.values_list("customer__name", flat=True)) == {"Bob", "Charlie"}
    run = JobRun.objects.get(job_name="close_billing_periods")
    assert (run.status, run.items_processed, run.items_failed) == ("succeeded", 2, 1)
    assert result["failed"] == 1
    assert alice.account_number in run.error_summary
    assert "invoices of customer" in run.error_summary
    page = admin_client.get(reverse("admin:jobs_jobrun_change", args=[run.pk]))
    assert page.status_code == 200 and alice.account_number in page.content.decode()
    listing = admin_client.get(reverse("admin:jobs_jobrun_changelist")).content.decode()
    assert alice.account_number in listing
    health = admin_client.get(reverse("admin:jobs_jobhealth_changelist")).content.decode()
    assert "2 / 1" in health and "1 item(s) failed in the last run" in health
    assert find_problems() == []
