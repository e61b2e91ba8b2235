"""'Add prepaid credits' with 'Now': the default card is charged through Stripe."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from billing.stripe import services as stripe_services
from wallets.models import CreditGrant

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def add_credit(staff, customer, **fields):
    data = {"customer": customer.pk, "name": "Card top-up", "amount": "30", "kind": "paid", "payment": "now", "frequency": "one_time",
            "priority": "100", **fields}  # fmt: skip
    return staff.post("/admin/wallets/creditgrant/add/", data, follow=True)


@pytest.mark.usefixtures("stripe_settings")
def test_now_charges_the_default_card_and_activates_the_credit(staff, alice):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    response = add_credit(staff, alice)
    grant = CreditGrant.objects.get()
    assert grant.status == "active" and grant.remaining == Decimal("30")
    assert grant.external_transaction_id.startswith("pi_")
    assert "— active" in response.content.decode()


@pytest.mark.usefixtures("stripe_settings")
def test_now_with_a_declining_card_voids_the_credit(staff, alice):
    stripe_services.attach_payment_method(
        customer=alice, payment_method_id="pm_card_chargeCustomerFail"
    )
    response = add_credit(staff, alice)
    assert CreditGrant.objects.get().status == "voided"
    assert "the card payment failed" in response.content.decode()


@pytest.mark.usefixtures("stripe_settings")
def test_now_without_a_card_says_what_to_do_and_books_nothing(staff, alice):
    response = add_credit(staff, alice)
    assert "has no default card at Stripe" in response.content.decode()
    assert not CreditGrant.objects.exists()


def test_now_without_stripe_configured_is_refused(staff, alice, settings):
    settings.STRIPE_API_KEY = ""
    response = add_credit(staff, alice)
    assert "needs Stripe" in response.content.decode()
    assert not CreditGrant.objects.exists()
