"""/stripe/webhook/: signatures, storing once, idempotent processing, out of order."""

import json
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connections, transaction

from billing.models import Customer, StripeCharge, StripeEvent, StripePaymentMethod
from billing.stripe import services as stripe_services
from billing.stripe import webhooks as stripe_webhooks
from tests.billing.stripe_fakes import (
    WEBHOOK_SECRET,
    intent_payload,
    pending_charge,
    post_event,
    sign,
    stripe_event,
)

pytestmark = pytest.mark.usefixtures("stripe_settings", "eager_celery")

Status = StripeCharge.Status


def deliver(client, django_capture_on_commit_callbacks, event, **sign_options):
    with django_capture_on_commit_callbacks(execute=True):
        return post_event(client, event, **sign_options)


# --- signatures -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_valid_event_is_stored_and_processed(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice)
    event = stripe_event("payment_intent.succeeded", intent_payload(charge))

    response = deliver(client, django_capture_on_commit_callbacks, event)

    assert response.status_code == 200
    assert response.json() == {"received": event["id"], "duplicate": False}
    stored = StripeEvent.objects.get()
    assert (stored.type, stored.object_id, stored.status) == (
        "payment_intent.succeeded",
        "pi_123",
        StripeEvent.Status.PROCESSED,
    )
    assert stored.payload == event
    assert stored.processed_at is not None and stored.attempts == 1
    charge.refresh_from_db()
    assert (charge.status, charge.payment_intent_id) == (Status.SUCCEEDED, "pi_123")
    assert effects == [("succeeded", charge.pk)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sign_options",
    [
        {"secret": "whsec_someone_else"},
        {"timestamp": int(time.time()) - 301},  # older than Stripe's 5-minute tolerance
    ],
    ids=["wrong-secret", "stale-timestamp"],
)
def test_a_bad_signature_is_refused_and_nothing_is_stored(client, alice, sign_options):
    charge = pending_charge(alice)
    response = post_event(
        client, stripe_event("payment_intent.succeeded", intent_payload(charge)), **sign_options
    )
    assert response.status_code == 400
    assert "signature" in response.json()["error"]
    assert not StripeEvent.objects.exists()
    charge.refresh_from_db()
    assert charge.status == Status.PENDING


@pytest.mark.django_db
def test_a_missing_or_tampered_signature_is_refused(client):
    payload = json.dumps(stripe_event("customer.deleted", {"id": "cus_1"})).encode()
    response = client.post("/stripe/webhook/", data=payload, content_type="application/json")
    assert response.status_code == 400
    tampered = payload.replace(b"cus_1", b"cus_2")
    response = client.post(
        "/stripe/webhook/",
        data=tampered,
        content_type="application/json",
        headers={"Stripe-Signature": sign(payload)},
    )
    assert response.status_code == 400
    not_json = b"<html>not an event</html>"
    response = client.post(
        "/stripe/webhook/",
        data=not_json,
        content_type="application/json",
        headers={"Stripe-Signature": sign(not_json)},
    )
    assert response.status_code == 400
    assert "not a Stripe event" in response.json()["error"]
    assert not StripeEvent.objects.exists()


@pytest.mark.django_db
def test_without_a_webhook_secret_nothing_is_accepted(client, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = post_event(client, stripe_event("customer.deleted", {"id": "cus_1"}))
    assert response.status_code == 400
    assert "STRIPE_WEBHOOK_SECRET" in response.json()["error"]
    assert not StripeEvent.objects.exists()


@pytest.mark.django_db
def test_only_post_is_allowed(client):
    assert client.get("/stripe/webhook/").status_code == 405


# --- once -------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_same_event_three_times_is_stored_once_with_one_effect(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice)
    event = stripe_event("payment_intent.succeeded", intent_payload(charge))

    responses = [deliver(client, django_capture_on_commit_callbacks, event) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.json()["duplicate"] for r in responses] == [False, True, True]
    assert StripeEvent.objects.count() == 1
    assert StripeEvent.objects.get().attempts == 1
    assert effects == [("succeeded", charge.pk)]


@pytest.mark.django_db
def test_processing_again_does_nothing(client, django_capture_on_commit_callbacks, alice, effects):
    charge = pending_charge(alice)
    event = stripe_event("payment_intent.succeeded", intent_payload(charge))
    deliver(client, django_capture_on_commit_callbacks, event)

    again = stripe_webhooks.process_stripe_event(event_id=event["id"])
    forced = stripe_webhooks.process_stripe_event(event_id=event["id"], force=True)

    assert again.status == forced.status == StripeEvent.Status.PROCESSED
    assert again.attempts == 1
    assert effects == [("succeeded", charge.pk)]


@pytest.mark.django_db
def test_a_second_event_for_a_settled_charge_has_no_second_effect(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice)
    for _ in range(2):  # two distinct events saying the same thing
        deliver(
            client,
            django_capture_on_commit_callbacks,
            stripe_event("payment_intent.succeeded", intent_payload(charge)),
        )
    assert StripeEvent.objects.count() == 2
    assert "already succeeded" in StripeEvent.objects.order_by("received_at").last().error
    assert effects == [("succeeded", charge.pk)]


# --- out of order -----------------------------------------------------------------


@pytest.mark.django_db
def test_an_event_for_a_charge_we_cannot_see_yet_waits_then_applies_once(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice)
    payload = intent_payload(charge)
    payload["metadata"]["stripe_charge_id"] = str(charge.pk + 1000)  # not (yet) there
    event = stripe_event("payment_intent.succeeded", payload)

    deliver(client, django_capture_on_commit_callbacks, event)
    waiting = StripeEvent.objects.get()
    assert waiting.status == StripeEvent.Status.RECEIVED
    assert "cannot see yet" in waiting.error
    assert effects == []

    StripeCharge.objects.filter(pk=charge.pk).update(id=charge.pk + 1000)
    assert stripe_webhooks.retry_waiting_events(older_than=timedelta(0)) == 1
    assert stripe_webhooks.retry_waiting_events(older_than=timedelta(0)) == 0
    late = StripeCharge.objects.get(pk=charge.pk + 1000)
    assert late.status == Status.SUCCEEDED
    assert effects == [("succeeded", late.pk)]


@pytest.mark.django_db(transaction=True)
def test_succeeded_before_our_charge_row_is_committed(client, alice, effects):
    """The real race: Stripe's webhook is handled while the transaction that writes
    our charge row is still open in another connection."""
    row_written, event_handled = threading.Event(), threading.Event()
    holder: dict = {}

    def write_charge_slowly():
        try:
            with transaction.atomic():
                holder["charge"] = pending_charge(alice)
                row_written.set()
                event_handled.wait(timeout=30)
        finally:
            connections.close_all()

    writer = threading.Thread(target=write_charge_slowly)
    writer.start()
    assert row_written.wait(timeout=30)
    charge = holder["charge"]
    event = stripe_event("payment_intent.succeeded", intent_payload(charge))

    response = post_event(client, event)  # eager task: processed right here, on commit
    event_handled.set()
    writer.join(timeout=30)

    assert response.status_code == 200
    waiting = StripeEvent.objects.get()
    assert waiting.status == StripeEvent.Status.RECEIVED
    assert f"Stripe charge #{charge.pk}" in waiting.error
    assert effects == []

    assert stripe_webhooks.retry_waiting_events(older_than=timedelta(0)) == 1
    stripe_webhooks.process_stripe_event(event_id=event["id"])  # a re-run changes nothing
    charge.refresh_from_db()
    assert charge.status == Status.SUCCEEDED
    assert StripeEvent.objects.get().status == StripeEvent.Status.PROCESSED
    assert effects == [("succeeded", charge.pk)]


@pytest.mark.django_db
def test_waiting_gives_up_after_the_attempt_limit(
    client, django_capture_on_commit_callbacks, alice
):
    charge = pending_charge(alice)
    payload = intent_payload(charge)
    payload["metadata"]["stripe_charge_id"] = "999999"
    event = stripe_event("payment_intent.succeeded", payload)
    deliver(client, django_capture_on_commit_callbacks, event)

    for _ in range(stripe_webhooks.MAX_EVENT_ATTEMPTS):
        stripe_webhooks.process_stripe_event(event_id=event["id"])

    stored = StripeEvent.objects.get()
    assert stored.status == StripeEvent.Status.FAILED
    assert stored.error.startswith(f"Gave up after {stripe_webhooks.MAX_EVENT_ATTEMPTS} attempts")


# --- each event type --------------------------------------------------------------


@pytest.mark.django_db
def test_payment_failed_records_stripes_reason(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice)
    payload = intent_payload(
        charge,
        status="requires_payment_method",
        last_payment_error={
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    )
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event("payment_intent.payment_failed", payload),
    )

    charge.refresh_from_db()
    assert charge.status == Status.FAILED
    assert (charge.failure_code, charge.failure_reason) == (
        "insufficient_funds",
        "Your card has insufficient funds.",
    )
    assert effects == [("failed", charge.pk)]


@pytest.mark.django_db
def test_a_late_failure_never_undoes_a_success(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice)
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event("payment_intent.succeeded", intent_payload(charge)),
    )
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event(
            "payment_intent.payment_failed",
            intent_payload(charge, status="requires_payment_method"),
        ),
    )
    charge.refresh_from_db()
    assert charge.status == Status.SUCCEEDED
    assert effects == [("succeeded", charge.pk)]


@pytest.mark.django_db
def test_canceled(client, django_capture_on_commit_callbacks, alice, effects):
    charge = pending_charge(alice)
    payload = intent_payload(charge, status="canceled", cancellation_reason="abandoned")
    deliver(
        client, django_capture_on_commit_callbacks, stripe_event("payment_intent.canceled", payload)
    )
    charge.refresh_from_db()
    assert charge.status == Status.CANCELED
    assert charge.failure_reason == "Canceled at Stripe (abandoned)."
    assert effects == [("failed", charge.pk)]


@pytest.mark.django_db
def test_charge_refunded_follows_stripes_running_total(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice, intent_id="pi_123")
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event("payment_intent.succeeded", intent_payload(charge)),
    )

    def refunded(total: int):
        data = {
            "id": "ch_1",
            "object": "charge",
            "payment_intent": "pi_123",
            "amount": 1234,
            "amount_refunded": total,
            "currency": "usd",
            "refunded": total == 1234,
        }
        deliver(client, django_capture_on_commit_callbacks, stripe_event("charge.refunded", data))
        charge.refresh_from_db()

    refunded(234)
    assert (charge.status, charge.refunded_amount) == (Status.PARTIALLY_REFUNDED, Decimal("2.34"))
    refunded(234)  # another delivery with the same total: nothing new
    refunded(1234)
    assert (charge.status, charge.refunded_amount) == (Status.REFUNDED, Decimal("12.34"))
    assert effects == [
        ("succeeded", charge.pk),
        ("succeeded", charge.pk),  # the glue is idempotent; it is called for each new state
        ("refunded", charge.pk),
        ("succeeded", charge.pk),
        ("refunded", charge.pk),
    ]


@pytest.mark.django_db
def test_an_amount_that_does_not_match_ours_fails_the_event(
    client, django_capture_on_commit_callbacks, alice, effects
):
    charge = pending_charge(alice)
    payload = {**intent_payload(charge), "amount": 99999}
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event("payment_intent.succeeded", payload),
    )

    stored = StripeEvent.objects.get()
    assert stored.status == StripeEvent.Status.FAILED
    assert "StripeMismatch" in stored.error and "99999" in stored.error
    charge.refresh_from_db()
    assert charge.status == Status.PENDING
    assert effects == []


@pytest.mark.django_db
def test_intents_that_are_not_ours_and_unknown_types_are_ignored(
    client, django_capture_on_commit_callbacks, alice
):
    charge = pending_charge(alice)
    foreign = {**intent_payload(charge, intent_id="pi_foreign"), "metadata": {}}
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event("payment_intent.succeeded", foreign),
    )
    deliver(
        client, django_capture_on_commit_callbacks, stripe_event("invoice.paid", {"id": "in_1"})
    )

    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"ignored"}
    charge.refresh_from_db()
    assert charge.status == Status.PENDING


@pytest.mark.django_db
def test_customer_deleted_unlinks_the_customer(client, django_capture_on_commit_callbacks, alice):
    Customer.objects.filter(pk=alice.pk).update(stripe_customer_id="cus_alice")
    StripePaymentMethod.objects.create(
        customer=alice, stripe_payment_method_id="pm_1", brand="visa", last4="4242", is_default=True
    )
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event(
            "customer.deleted", {"id": "cus_alice", "object": "customer", "deleted": True}
        ),
    )
    alice.refresh_from_db()
    assert alice.stripe_customer_id == ""
    assert not alice.stripe_payment_methods.exists()
    assert StripeEvent.objects.get().status == StripeEvent.Status.PROCESSED


@pytest.mark.django_db
def test_payment_method_attached_then_detached(client, django_capture_on_commit_callbacks, alice):
    Customer.objects.filter(pk=alice.pk).update(stripe_customer_id="cus_alice")
    card = {
        "id": "pm_1",
        "object": "payment_method",
        "type": "card",
        "customer": "cus_alice",
        "card": {"brand": "mastercard", "last4": "4444", "exp_month": 3, "exp_year": 2031},
    }
    deliver(
        client, django_capture_on_commit_callbacks, stripe_event("payment_method.attached", card)
    )
    (saved,) = alice.stripe_payment_methods.all()
    assert (saved.brand, saved.last4, saved.exp_month, saved.exp_year) == (
        "mastercard",
        "4444",
        3,
        2031,
    )

    detached = {**card, "customer": None}
    deliver(
        client,
        django_capture_on_commit_callbacks,
        stripe_event("payment_method.detached", detached),
    )
    assert not alice.stripe_payment_methods.exists()
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"processed"}


# --- end to end with localstripe's own webhook ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_localstripe_signs_and_delivers_a_webhook_we_accept(
    live_server, fake_stripe, alice, effects
):
    """localstripe signs with the secret we register; our endpoint verifies it,
    and its payment_intent.succeeded finds the charge already settled: one effect."""
    fake_stripe.send_webhooks_to(
        f"{live_server.url}/stripe/webhook/", WEBHOOK_SECRET, events=["payment_intent.succeeded"]
    )
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    alice.refresh_from_db()
    charge = stripe_services.charge_off_session(
        customer=alice, amount=Decimal("7.50"), purpose="top_up", initiated_by="test"
    )
    assert charge.status == Status.SUCCEEDED

    deadline = time.monotonic() + 15
    while not StripeEvent.objects.filter(
        type="payment_intent.succeeded",
        object_id=charge.payment_intent_id,
        status=StripeEvent.Status.PROCESSED,  # stored, then processed on commit
    ).exists():
        assert time.monotonic() < deadline, "localstripe's webhook never arrived"
        time.sleep(0.2)
    # this charge's event (localstripe may also deliver events of other tests' charges)
    event = StripeEvent.objects.get(
        type="payment_intent.succeeded", object_id=charge.payment_intent_id
    )
    assert "already succeeded" in event.error
    assert effects == [("succeeded", charge.pk)]


# --- issue 12, item 2: a refund made in the Stripe dashboard -------------------------


@pytest.mark.django_db
def test_a_dashboard_refund_of_used_credit_arrives_by_webhook_and_balances(
    client, django_capture_on_commit_callbacks, alice
):
    """Staff refund a partly used 25.00 top-up in the Stripe dashboard, first 10.00 then
    the rest. The money is gone: each charge.refunded webhook books its part, the unused
    credit back from the grant, the rest as debt; psp_clearing nets to exactly zero."""
    from billing.stripe import gateway as stripe_gateway
    from tests.billing.test_stripe_effects import paid_then_used, psp_clearing_net
    from wallets.ledger_check import find_problems
    from wallets.models import LedgerTransaction

    grant, charge = paid_then_used(alice)
    intent = stripe_gateway.retrieve_payment_intent(payment_intent_id=charge.payment_intent_id)

    def refund_in_dashboard(minor: int, key: str) -> None:
        # straight to Stripe (localstripe), not through our refund service
        stripe_gateway.refund(payment_intent_id=intent.id, amount=minor, idempotency_key=key)
        stripe_charge = stripe_gateway._client().v1.charges.retrieve(intent.latest_charge_id)
        data = stripe_charge.to_dict(recursive=True)
        assert data["payment_intent"] == intent.id
        deliver(client, django_capture_on_commit_callbacks, stripe_event("charge.refunded", data))

    refund_in_dashboard(1000, "dashboard-1")
    grant.refresh_from_db()
    charge.refresh_from_db()
    assert (charge.status, charge.refunded_amount) == (Status.PARTIALLY_REFUNDED, Decimal("10"))
    assert (grant.remaining, grant.wallet.debt) == (0, Decimal("5"))  # 5 unused back, 5 owed
    assert psp_clearing_net() == Decimal("-15")

    refund_in_dashboard(1500, "dashboard-2")
    grant.refresh_from_db()
    charge.refresh_from_db()
    assert (charge.status, charge.effects_applied_at is not None) == (Status.REFUNDED, True)
    assert grant.status == "voided" and grant.wallet.debt == Decimal("20")
    assert psp_clearing_net() == 0
    refunds = LedgerTransaction.objects.filter(kind="refund").order_by("pk")
    assert [r.amount for r in refunds] == [Decimal("10"), Decimal("15")]
    assert "debt" in refunds[1].memo
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert find_problems() == []


@pytest.mark.django_db
def test_an_event_whose_task_cannot_be_enqueued_is_stored_for_the_sweep(
    client, alice, effects, monkeypatch, caplog
):
    """The view enqueues the task after the event is committed; a broker that is
    down is logged, not a 500: Stripe would only send the event again, and the
    sweep (test_stripe_tasks) processes the stored one."""
    from kombu.exceptions import OperationalError

    from billing import tasks

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to redis: Connection refused.")

    monkeypatch.setattr(tasks.process_stripe_event, "delay", broker_down)
    charge = pending_charge(alice)
    event = stripe_event("payment_intent.succeeded", intent_payload(charge))

    response = post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"received": event["id"], "duplicate": False}
    assert StripeEvent.objects.get().status == StripeEvent.Status.RECEIVED
    assert effects == []
    assert f"Could not enqueue Stripe event {event['id']}" in caplog.text
