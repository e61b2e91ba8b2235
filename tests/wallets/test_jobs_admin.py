"""Admin pages of the scheduled-job models: settings, recurring rules, notifications."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from wallets import services
from wallets.models import Notification, PrepaidCreditSettings, RecurringGrantRule
from wallets.notifications import enqueue_notification

pytestmark = pytest.mark.django_db


def test_prepaid_credit_settings_is_one_page_staff_edit(admin_client):
    listing = admin_client.get(reverse("admin:wallets_prepaidcreditsettings_changelist"))
    assert listing.status_code == 302
    page = admin_client.get(listing.url)
    assert page.status_code == 200 and "Default expiry period" in page.content.decode()
    response = admin_client.post(
        listing.url, {"default_expiry_count": "90", "default_expiry_unit": "days"}
    )
    assert response.status_code == 302
    current = PrepaidCreditSettings.load()
    assert (current.default_expiry_count, current.default_expiry_unit) == (90, "days")
    assert str(current) == "Prepaid credit settings (credit expires after 90 days)"
    assert (
        admin_client.post(
            listing.url, {"default_expiry_count": "0", "default_expiry_unit": "days"}
        ).status_code
        == 200
    )
    assert PrepaidCreditSettings.objects.count() == 1
    assert admin_client.get(reverse("admin:wallets_prepaidcreditsettings_add")).status_code == 403


def test_staff_add_a_recurring_rule_and_pause_and_resume_it(admin_client, alice):
    wallet = services.open_wallet(customer=alice)
    response = admin_client.post(
        reverse("admin:wallets_recurringgrantrule_add"),
        {
            "wallet": wallet.pk, "name": "Monthly bonus", "amount": "25", "kind": "free",
            "condition_dimensions": "{}", "priority": "100", "active": "on",
            "starts_on": "2026-01-01", "expiry_unit": "",
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()
    rule = RecurringGrantRule.objects.get()
    assert (rule.amount, rule.active, rule.starts_on) == (Decimal("25"), True, date(2026, 1, 1))

    listing = admin_client.get(reverse("admin:wallets_recurringgrantrule_changelist"))
    assert (
        "Monthly bonus" in listing.content.decode()
        and "Grants of this rule" in listing.content.decode()
    )
    change = admin_client.get(reverse("admin:wallets_recurringgrantrule_change", args=[rule.pk]))
    assert change.status_code == 200

    url = reverse("admin:wallets_recurringgrantrule_changelist")
    admin_client.post(url, {"action": "pause_rules", "_selected_action": [rule.pk]})
    rule.refresh_from_db()
    assert not rule.active
    admin_client.post(url, {"action": "resume_rules", "_selected_action": [rule.pk]})
    rule.refresh_from_db()
    assert rule.active and rule.next_period_start is not None

    bad = admin_client.post(
        reverse("admin:wallets_recurringgrantrule_add"),
        {
            "wallet": wallet.pk, "name": "Free but pending", "amount": "5", "kind": "free",
            "pending": "on", "condition_dimensions": "{}", "priority": "100",
            "starts_on": "2026-01-01", "expiry_count": "3", "expiry_unit": "",
        },
    )  # fmt: skip
    assert bad.status_code == 200
    assert "Only paid credit waits for a payment" in bad.content.decode()
    assert "Give both the expiry period and its unit" in bad.content.decode()


def test_notifications_are_listed_read_only_and_failed_ones_can_be_retried(admin_client, alice):
    note = enqueue_notification(
        customer=alice, kind="low_balance", subject="Low balance", body="…", dedupe_key="k"
    )
    Notification.objects.filter(pk=note.pk).update(status="failed", attempts=8, last_error="bye")
    url = reverse("admin:wallets_notification_changelist")
    page = admin_client.get(url)
    assert page.status_code == 200 and "Low balance" in page.content.decode()
    change = reverse("admin:wallets_notification_change", args=[note.pk])
    assert admin_client.post(change, {"subject": "edited"}).status_code == 403
    admin_client.post(url, {"action": "retry", "_selected_action": [note.pk]})
    note.refresh_from_db()
    assert (note.status, note.attempts) == ("queued", 0)
