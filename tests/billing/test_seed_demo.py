import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from billing.models import Customer, PortalUser


@pytest.mark.django_db
def test_seed_demo_is_idempotent_and_gives_every_customer_a_login():
    call_command("seed_demo")
    counts = (
        Customer.objects.count(),
        PortalUser.objects.count(),
        get_user_model().objects.count(),
    )
    call_command("seed_demo")
    assert (
        Customer.objects.count(),
        PortalUser.objects.count(),
        get_user_model().objects.count(),
    ) == counts
    assert counts[0] >= 4
    assert set(Customer.objects.values_list("balance_model", flat=True)) == {"prepaid", "postpaid"}
    assert get_user_model().objects.get(username="admin").is_superuser
    assert all(c.portal_users.exists() for c in Customer.objects.all())
    # some history, booked through the ledger, provable from its entries
    from wallets.ledger_check import find_problems
    from wallets.models import CreditGrant, LedgerTransaction, Wallet

    assert LedgerTransaction.objects.filter(kind="usage").count() >= 10
    assert CreditGrant.objects.filter(status="pending").exists()
    assert (
        Wallet.objects.filter(debt__gt=0).exists()
        and Wallet.objects.filter(credit_balance__gt=0).exists()
    )
    assert find_problems() == []


@pytest.mark.django_db
def test_the_demo_key_books_usage_at_the_demo_prices(client):
    """`make run` prints the demo key: with it, usage for a demo customer is rated
    by the demo prices (the EU one for region=eu) and drawn down from the demo credit."""
    from decimal import Decimal

    from billing.management.commands.seed_demo import DEMO_API_TOKEN
    from billing.models import Price, UsageEvent

    call_command("seed_demo")
    call_command("seed_demo")  # idempotent: no second price or key
    assert Price.objects.filter(product_item__code="api-calls", currency="USD").count() == 2
    alice = Customer.objects.get(name="Alice Telecom Ltd")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {DEMO_API_TOKEN}"
    response = client.post(
        "/api/v1/usage",
        {"event_id": "demo-1", "customer": alice.account_number, "product": "api-calls",
         "quantity": "100", "dimensions": {"region": "eu"}},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["unit_price"], answer["amount"]) == ("0.0015", "0.15")
    assert answer["grants"] and answer["to_debt"] == "0"
    assert UsageEvent.objects.get(event_id="demo-1").amount == Decimal("0.15")
