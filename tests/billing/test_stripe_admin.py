"""Staff's view of Stripe: the event inbox, charges, and a customer's link state."""

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission

from billing.models import StripeCharge, StripeEvent
from billing.stripe import services as stripe_services
from tests.billing.stripe_fakes import intent_payload, pending_charge
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("stripe_settings")]

EVENTS = "/admin/billing/stripeevent/"
CHARGES = "/admin/billing/stripecharge/"


def gave_up_event(charge: StripeCharge) -> StripeEvent:
    return StripeEvent.objects.create(
        event_id="evt_late",
        type="payment_intent.succeeded",
        object_id="pi_123",
        payload={"id": "evt_late", "data": {"object": intent_payload(charge)}},
        status=StripeEvent.Status.FAILED,
        error="Gave up after 10 attempts: pi_123 is for Stripe charge #1, which we cannot see yet",
        attempts=10,
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_event_list_and_read_only_page_with_the_payload(admin_client, alice):
    event = gave_up_event(pending_charge(alice))

    listing = admin_client.get(EVENTS, {"status__exact": "failed"})
    assert listing.status_code == 200
    assert b"evt_late" in listing.content

    page = admin_client.get(f"{EVENTS}{event.pk}/change/")
    assert page.status_code == 200
    assert b"<pre>" in page.content and b"pi_123" in page.content
    assert b'name="_save"' not in page.content  # read-only
    assert admin_client.get(f"{EVENTS}add/").status_code == 403


def test_retry_action_confirms_then_processes_and_logs(admin_client, alice):
    charge = pending_charge(alice)
    event = gave_up_event(charge)
    form = {"action": "retry_processing", "_selected_action": [event.pk]}

    confirm = admin_client.post(EVENTS, form)
    assert confirm.status_code == 200
    assert b"Process these Stripe events again?" in confirm.content
    event.refresh_from_db()
    assert event.status == StripeEvent.Status.FAILED  # nothing happens before "yes"

    done = admin_client.post(EVENTS, {**form, "post": "yes"}, follow=True)
    assert "Retry processing: 1 processed." in messages_of(done)
    event.refresh_from_db()
    assert event.status == StripeEvent.Status.PROCESSED
    charge.refresh_from_db()
    assert charge.status == StripeCharge.Status.SUCCEEDED
    assert LogEntry.objects.filter(object_id=str(event.pk)).exists()


def test_retry_leaves_processed_events_alone(admin_client, alice):
    event = gave_up_event(pending_charge(alice))
    StripeEvent.objects.filter(pk=event.pk).update(status=StripeEvent.Status.PROCESSED)

    response = admin_client.post(
        EVENTS, {"action": "retry_processing", "_selected_action": [event.pk]}, follow=True
    )
    assert "already processed or ignored are left alone" in " ".join(messages_of(response))


def test_staff_without_change_permission_see_events_but_cannot_retry(client):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_stripeevent"))
    client.force_login(viewer)
    response = client.get(EVENTS)
    assert response.status_code == 200
    assert b"retry_processing" not in response.content


def test_charge_list_filters_and_read_only_page(admin_client, alice):
    charge = pending_charge(alice)
    for query in (
        {},
        {"status__exact": "pending"},
        {"purpose__exact": "top_up"},
        {"effects": "due"},
        {"effects": "error"},
        {"effects": "done"},
        {"q": alice.account_number},
    ):
        assert admin_client.get(CHARGES, query).status_code == 200, query
    page = admin_client.get(f"{CHARGES}{charge.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content


def test_retry_a_pending_charge_from_the_admin(admin_client, alice, fake_stripe):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    alice.refresh_from_db()
    fake_stripe.fail_next("/v1/payment_intents", "error_before")
    charge = stripe_services.charge_off_session(
        customer=alice, amount=Decimal("3.00"), purpose="top_up", initiated_by="test"
    )
    assert charge.status == StripeCharge.Status.PENDING
    form = {"action": "retry", "_selected_action": [charge.pk], "post": "yes"}

    response = admin_client.post(CHARGES, form, follow=True)

    assert "Retry charges: 1 succeeded." in messages_of(response)
    charge.refresh_from_db()
    assert charge.status == StripeCharge.Status.SUCCEEDED
    assert len(fake_stripe.payment_intents_for(charge.pk)) == 1


def test_customer_page_shows_the_stripe_link_and_the_action_links_it(admin_client, alice):
    page = admin_client.get(f"/admin/billing/customer/{alice.pk}/change/")
    assert b"Not linked to Stripe" in page.content

    response = admin_client.post(
        "/admin/billing/customer/",
        {"action": "sync_stripe_customer", "_selected_action": [alice.pk]},
        follow=True,
    )
    assert "1 customer(s) created or synced at Stripe." in messages_of(response)
    alice.refresh_from_db()
    assert alice.stripe_customer_id.startswith("cus_")
    page = admin_client.get(f"/admin/billing/customer/{alice.pk}/change/")
    assert b"no default card" in page.content

    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    page = admin_client.get(f"/admin/billing/customer/{alice.pk}/change/")
    assert "default card visa •••• 4242 exp 12/2030" in page.content.decode()


def test_without_stripe_the_action_is_not_offered(admin_client, alice, settings):
    settings.STRIPE_API_KEY = ""
    page = admin_client.get("/admin/billing/customer/")
    assert b"sync_stripe_customer" not in page.content
    detail = admin_client.get(f"/admin/billing/customer/{alice.pk}/change/")
    assert b"Stripe is not configured" in detail.content


# --- issue 12, item 2: the Refund action ---------------------------------------------


def test_refund_action_shows_unused_and_used_and_asks_before_making_debt(admin_client, alice):
    from tests.billing.test_stripe_effects import paid_then_used, psp_clearing_net
    from wallets.ledger_check import find_problems

    grant, charge = paid_then_used(alice)
    chosen = {"action": "refund", "_selected_action": [charge.pk]}

    page = admin_client.post(CHARGES, chosen)
    html = page.content.decode()
    assert page.status_code == 200
    assert "25.00 USD left to refund" in html
    assert "5.00 USD unused, 20.00 USD used" in html
    assert "a full refund makes 20.00 USD of debt" in html
    assert "Turn used credit into debt" in html

    refused = admin_client.post(CHARGES, {**chosen, "post": "yes"}, follow=True)
    assert any("would become debt" in m for m in messages_of(refused))
    charge.refresh_from_db()
    assert charge.status == StripeCharge.Status.SUCCEEDED and charge.refunded_amount == 0

    done = admin_client.post(
        CHARGES, {**chosen, "post": "yes", "turn_used_credit_into_debt": "on"}, follow=True
    )
    assert "Refund charges: 1 refunded." in messages_of(done)
    charge.refresh_from_db()
    grant.wallet.refresh_from_db()
    assert charge.status == StripeCharge.Status.REFUNDED and charge.refunded_by == "admin"
    assert grant.wallet.debt == Decimal("20") and psp_clearing_net() == 0
    assert LogEntry.objects.filter(object_id=str(charge.pk)).exists()
    assert find_problems() == []


def test_refund_action_within_the_unused_credit_needs_no_tick(admin_client, alice):
    from tests.billing.test_stripe_effects import paid_then_used

    grant, charge = paid_then_used(alice)
    form = {"action": "refund", "_selected_action": [charge.pk], "post": "yes", "amount": "5.00"}
    done = admin_client.post(CHARGES, form, follow=True)
    assert "Refund charges: 1 partially refunded." in messages_of(done)
    grant.refresh_from_db()
    assert (grant.remaining, grant.wallet.debt) == (0, 0)
