from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from billing.periods import period_containing
from billing.usage.invoicing import close_period
from billing.usage.recording import UsageInput, record_usage
from wallets.actors import Actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def invoice(alice, calls, price, credit):
    price(calls, "0.25", effective_from=datetime(2020, 1, 1, tzinfo=UTC))
    credit(alice, "10", effective_at=timezone.now() - timedelta(days=90))
    period = period_containing(timezone.now() - timedelta(days=35), alice.billing_anchor_day)
    record_usage(event=UsageInput(event_id="x1", customer=alice, product="api-calls", quantity="8",
                                  timestamp=period.starts_at + timedelta(hours=1)), actor=Actor.system("t"))  # fmt: skip
    (invoice,) = close_period(customer=alice, period=period, actor=Actor.system("t"))
    return invoice


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_staff_download_the_pdf(staff, invoice):
    response = staff.get(f"/admin/invoices/invoice/{invoice.pk}/pdf/")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")


def test_void_action_asks_for_a_reason_then_returns_the_credit(staff, invoice):
    url = "/admin/invoices/invoice/"
    page = staff.post(url, {"action": "void_invoices", "_selected_action": [invoice.pk]})
    assert "Void invoices" in page.content.decode() and "reason" in page.content.decode()
    again = staff.post(
        url,
        {
            "action": "void_invoices",
            "_selected_action": [invoice.pk],
            "post": "yes",
            "reason": "",
        },
    )
    assert "This field is required" in again.content.decode()
    invoice.refresh_from_db()
    assert invoice.status == "issued"
    done = staff.post(url, {"action": "void_invoices", "_selected_action": [invoice.pk], "post": "yes",
                            "reason": "duplicate"}, follow=True)  # fmt: skip
    assert "Void invoices: 1 voided." in done.content.decode()
    invoice.refresh_from_db()
    assert invoice.status == "void" and invoice.customer.wallets.get().credit_balance == Decimal(
        "10"
    )
