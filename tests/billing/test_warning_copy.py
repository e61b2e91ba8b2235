"""Warning thresholds reach the wallets through an explicit service call, never
through `Customer.save()` / `CustomerClass.save()` (issue 12: a save that updated
wallet rows in arbitrary order could deadlock with the expiry sweep, which locks
wallets in id order). The copy locks the wallets in id order too."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import CustomerClass
from tests.factories import CustomerFactory
from wallets import services
from wallets.models import Wallet

D = Decimal
pytestmark = pytest.mark.django_db


def wallet_statements(queries):
    return [q["sql"] for q in queries if '"wallets_wallet"' in q["sql"]]


def test_saving_a_customer_or_a_class_touches_no_wallet_row():
    klass = CustomerClass.objects.create(name="Retail")
    customer = CustomerFactory(customer_class=klass)
    services.open_wallet(customer=customer)
    with CaptureQueriesContext(connection) as saves:
        customer.low_funds_thresholds = "10"
        customer.save()
        klass.credit_limit_warnings = "90"
        klass.save()
    assert wallet_statements(saves.captured_queries) == []
    assert Wallet.objects.get(customer=customer).low_funds_thresholds is None


def test_the_copy_locks_the_wallets_in_id_order_first():
    klass = CustomerClass.objects.create(name="Retail", low_funds_thresholds="10")
    customer = CustomerFactory(customer_class=klass)
    for currency in ("USD", "EUR", "GBP"):
        services.open_wallet(customer=customer, currency=currency)
    for copy, target, rows in (
        (services.copy_warning_thresholds, customer, 3),
        (services.copy_class_warning_thresholds, klass, 6),  # one update per list
    ):
        with CaptureQueriesContext(connection) as copied:
            assert copy(target) == rows
        first, *updates = wallet_statements(copied.captured_queries)
        assert first.startswith('SELECT "wallets_wallet"."id"'), first
        assert first.endswith('ORDER BY 1 ASC FOR UPDATE OF "wallets_wallet"'), first
        assert updates and all(sql.startswith("UPDATE") for sql in updates)
    thresholds = Wallet.objects.values_list("low_funds_thresholds", flat=True)
    assert list(thresholds) == [[D("10")]] * 3


def change_form_data(response) -> dict:
    """What the admin's change form would post back unchanged (fields and inlines)."""
    form = response.context["adminform"].form
    data = {}
    for name in form.fields:
        value = form.initial.get(name)
        if value is not None:
            data[name] = getattr(value, "pk", value)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{name}"] = value
    return data


def test_the_admin_copies_a_customers_thresholds_onto_its_wallets(admin_client):
    customer = CustomerFactory()
    wallet = services.open_wallet(customer=customer)
    url = f"/admin/billing/customer/{customer.pk}/change/"
    data = change_form_data(admin_client.get(url))
    response = admin_client.post(url, {**data, "low_funds_thresholds": "5, 50"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    wallet.refresh_from_db()
    assert wallet.low_funds_thresholds == [D("50"), D("5")]


def test_the_admin_copies_a_class_default_onto_its_customers_wallets(admin_client):
    klass = CustomerClass.objects.create(name="Retail")
    follows = services.open_wallet(customer=CustomerFactory(customer_class=klass))
    own = CustomerFactory(customer_class=klass, low_funds_thresholds="30")
    keeps = services.open_wallet(customer=own)
    url = f"/admin/billing/customerclass/{klass.pk}/change/"
    data = change_form_data(admin_client.get(url))
    response = admin_client.post(url, {**data, "low_funds_thresholds": "25"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    follows.refresh_from_db()
    keeps.refresh_from_db()
    assert follows.low_funds_thresholds == [D("25")]
    assert keeps.low_funds_thresholds == [D("30")]
