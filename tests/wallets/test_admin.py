import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from tests.factories import CustomerFactory
from wallets.models import CreditGrant, LedgerTransaction


@pytest.fixture
def staff_client(client, db):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def post_grant(client, customer, **fields):
    data = {"customer": customer.pk, "name": "Pack", "amount": "10", "kind": "paid", "payment": "paid", "frequency": "one_time",
            "priority": "100", **fields}  # fmt: skip
    return client.post("/admin/wallets/creditgrant/add/", data)


def test_negative_amount_is_refused_server_side(staff_client):
    customer = CustomerFactory()
    response = post_grant(staff_client, customer, amount="-5")
    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to" in response.content.decode()
    assert not CreditGrant.objects.exists()


def test_service_errors_show_on_the_form_and_change_nothing(staff_client):
    customer = CustomerFactory()
    response = post_grant(
        staff_client, customer, effective_at="2030-01-02 00:00", expires_at="2030-01-01 00:00"
    )
    assert "expires_at must be after" in response.content.decode()
    assert not CreditGrant.objects.exists() and not LedgerTransaction.objects.exists()


def test_free_credit_ignores_reconcile_later_and_is_active(staff_client):
    customer = CustomerFactory()
    response = post_grant(
        staff_client, customer, kind="free", payment="reconcile_later", amount="7.5"
    )
    assert response.status_code == 302
    grant = CreditGrant.objects.get()
    assert (
        grant.status == "active"
        and grant.funding_code == "promotions"
        and grant.amount == Decimal("7.5")
    )


def test_ledger_rows_cannot_be_edited_in_admin(staff_client):
    customer = CustomerFactory()
    post_grant(staff_client, customer)
    tx = LedgerTransaction.objects.get()
    response = staff_client.post(
        f"/admin/wallets/ledgertransaction/{tx.pk}/change/", {"amount": "999"}
    )
    assert response.status_code == 403
    assert staff_client.get(f"/admin/wallets/ledgertransaction/{tx.pk}/delete/").status_code == 403
    assert (
        staff_client.get("/admin/wallets/entry/").status_code == 404
    )  # entries only inline, read-only


def test_expiry_defaults_to_the_prepaid_credit_settings(staff_client):
    from wallets.models import PrepaidCreditSettings

    settings_row = PrepaidCreditSettings.load()
    settings_row.default_expiry_count, settings_row.default_expiry_unit = 2, "weeks"
    settings_row.save()
    post_grant(staff_client, CustomerFactory(), effective_at="2030-03-01 00:00")
    grant = CreditGrant.objects.get()
    assert (grant.expires_at - grant.effective_at).days == 14


def test_recurring_credit_creates_a_rule_and_this_periods_grant(staff_client):
    from wallets.models import RecurringGrantRule

    customer = CustomerFactory()
    response = post_grant(staff_client, customer, frequency="recurring", kind="free", amount="5")
    assert response.status_code == 302
    rule = RecurringGrantRule.objects.get()
    grant = CreditGrant.objects.get()
    assert rule.amount == Decimal("5") and grant.kind == "free" and grant.source_id == str(rule.pk)


def test_admin_shows_money_readably(admin_client, alice):
    """Ledger amounts keep 6 decimals; staff read 100.00 and 12.345, not 100.000000."""
    from decimal import Decimal

    from billing.admin.kit import amount_text
    from tests.wallets.conftest import STAFF
    from wallets import services

    assert [amount_text(Decimal(v)) for v in ("100.000000", "12.345000", "0.000100", "-3.5")] == [
        "100.00", "12.345", "0.0001", "-3.50",
    ]  # fmt: skip
    wallet = services.open_wallet(customer=alice)
    services.grant_credit(wallet=wallet, amount=Decimal("100"), kind="paid", name="Pack",
                          actor=STAFF, idempotency_key="g1")  # fmt: skip
    services.draw_down(wallet=wallet, amount=Decimal("12.345"), actor=STAFF, idempotency_key="u1")
    for url in (
        "/admin/wallets/wallet/",
        f"/admin/wallets/wallet/{wallet.pk}/change/",
        "/admin/wallets/creditgrant/",
        "/admin/wallets/ledgertransaction/",
    ):
        page = admin_client.get(url).content.decode()
        assert "87.655" in page, url
        assert ".000000" not in page and "87.655000" not in page, url


def test_only_destructive_confirmations_show_the_red_button(staff_client):
    customer = CustomerFactory()
    post_grant(staff_client, customer, payment="reconcile_later")
    grant = CreditGrant.objects.get()
    assert grant.status == CreditGrant.Status.PENDING
    url = "/admin/wallets/creditgrant/"
    activate = staff_client.post(url, {"action": "activate_grants", "_selected_action": [grant.pk]})
    void = staff_client.post(url, {"action": "void_grants", "_selected_action": [grant.pk]})
    assert activate.status_code == void.status_code == 200
    body_class = re.compile(r'<body class="([^"]*)"')
    activate_class = body_class.search(activate.content.decode()).group(1).split()
    void_class = body_class.search(void.content.decode()).group(1).split()
    assert "confirm-action" in activate_class and "delete-confirmation" not in activate_class
    assert "delete-confirmation" in void_class
    grant.refresh_from_db()
    assert grant.status == CreditGrant.Status.PENDING  # a confirmation page changes nothing


def test_reverse_action_refuses_a_pending_grants_issue_and_says_to_void_it(staff_client):
    """Issue 12, item 4, in the admin: the Reverse action shows the service's refusal."""
    customer = CustomerFactory()
    post_grant(staff_client, customer, payment="reconcile_later")
    grant = CreditGrant.objects.get()
    url = "/admin/wallets/ledgertransaction/"
    chosen = {"action": "reverse_transactions", "_selected_action": [grant.issued_by_id]}
    confirm = staff_client.post(url, chosen)
    assert confirm.status_code == 200
    done = staff_client.post(url, {**chosen, "post": "yes"}, follow=True)
    page = done.content.decode()
    assert "void the grant instead" in page
    grant.refresh_from_db()
    assert grant.status == CreditGrant.Status.PENDING
    assert not LedgerTransaction.objects.filter(kind="reversal").exists()
