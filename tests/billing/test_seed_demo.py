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
