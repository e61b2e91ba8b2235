"""Paying a top-up invoice by card in the portal (billing/stripe/invoices.py, issue 16):
against localstripe; the payment is recorded and provisioned once, however it arrives."""

import threading
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections
from django.test import Client

from billing.models import StripeCharge, StripeEvent
from billing.stripe import services as stripe_services
from invoices.models import Invoice, Payment, PaymentAllocation
from invoices.topups import create_top_up_invoice, send_top_up_invoice
from tests.billing.stripe_fakes import intent_payload, post_event, stripe_event
from wallets.actors import Actor
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant

T = Actor.system("tests")
PAY = "/portal/documents/top-ups/{}/pay/"

pytestmark = pytest.mark.usefixtures("stripe_settings")


def sent_invoice(customer, amount="100.00", name="Q4 top-up"):
    invoice = create_top_up_invoice(customer=customer, name=name, amount=amount, actor=T)
    return send_top_up_invoice(invoice=invoice, actor=T, email=False)


def balance(customer) -> Decimal:
    wallet = customer.wallets.filter(currency=customer.currency).first()
    return wallet.credit_balance if wallet else Decimal(0)


def assert_ledger_clean():
    assert find_problems() == []
    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ledger OK" in out.getvalue()


def assert_paid_once(invoice, charge):
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert invoice.amount_paid == invoice.amount_due
    payment = Payment.objects.get(customer=invoice.customer)
    assert (payment.method, payment.reference, payment.amount) == (
        Payment.Method.CARD,
        charge.payment_intent_id,
        invoice.amount_due,
    )
    assert payment.unallocated == 0
    allocation = PaymentAllocation.objects.get()
    assert (allocation.invoice_id, allocation.amount) == (invoice.pk, invoice.amount_due)
    grants = CreditGrant.objects.filter(
        kind=CreditGrant.Kind.TOP_UP, wallet__customer=invoice.customer
    )
    assert [g.amount for g in grants] == [invoice.amount_due]


@pytest.mark.django_db
def test_portal_pay_by_card_pays_and_provisions_the_invoice(
    client, alice, eager_celery, django_capture_on_commit_callbacks
):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    invoice = sent_invoice(alice)
    client.force_login(alice.portal_users.get().user)

    listing = client.get("/portal/documents/top-ups/").content.decode()
    assert f'href="{PAY.format(invoice.pk)}"' in listing and "Pay by card" in listing
    page = client.get(PAY.format(invoice.pk)).content.decode()
    assert "ending in 4242" in page and "Pay 100.00 USD now" in page
    assert not StripeCharge.objects.exists()  # looking charges nothing

    response = client.post(PAY.format(invoice.pk), follow=True)

    assert "Paid 100.00 USD for invoice" in response.content.decode()
    charge = StripeCharge.objects.get()
    assert (charge.status, charge.purpose, charge.invoice_id, charge.amount) == (
        StripeCharge.Status.SUCCEEDED,
        StripeCharge.Purpose.TOP_UP_INVOICE,
        invoice.pk,
        Decimal("100.00"),
    )
    assert charge.payment_intent_id.startswith("pi_") and charge.effects_applied_at
    assert_paid_once(invoice, charge)
    assert balance(alice) == Decimal("100.00")

    # Stripe's own webhook for it arrives afterwards, then the sweeps run: nothing more.
    with django_capture_on_commit_callbacks(execute=True):
        post_event(
            client,
            stripe_event(
                "payment_intent.succeeded",
                intent_payload(charge, intent_id=charge.payment_intent_id),
            ),
        )
    assert StripeEvent.objects.get().status == StripeEvent.Status.PROCESSED
    stripe_services.apply_charge_effects(charge_id=charge.pk, force=True)
    stripe_services.apply_due_effects()
    assert_paid_once(invoice, charge)
    assert balance(alice) == Decimal("100.00")

    # Paid: no button any more, and a second POST charges nothing.
    assert "Pay by card" not in client.get("/portal/documents/top-ups/").content.decode()
    again = client.post(PAY.format(invoice.pk), follow=True).content.decode()
    assert "there is nothing to pay" in again
    assert StripeCharge.objects.count() == 1
    assert "card" in client.get("/portal/documents/payments/").content.decode().lower()
    assert_ledger_clean()


@pytest.mark.django_db
def test_a_partially_paid_invoice_is_charged_only_what_is_open(client, alice):
    from invoices.payments import allocate_payment, record_payment

    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    invoice = sent_invoice(alice)
    cash = record_payment(
        customer=alice, amount="30", currency="USD", method="cash", actor=T, idempotency_key="c1"
    )
    allocate_payment(payment=cash, invoice=invoice, actor=T, idempotency_key="c1-a")
    client.force_login(alice.portal_users.get().user)

    client.post(PAY.format(invoice.pk))

    charge = StripeCharge.objects.get()
    assert charge.amount == Decimal("70.00")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.PAID, Decimal("100.00"))
    assert balance(alice) == Decimal("100.00")
    assert_ledger_clean()


@pytest.mark.django_db
def test_a_declined_card_leaves_the_invoice_open_and_says_so(client, alice):
    stripe_services.attach_payment_method(
        customer=alice, payment_method_id="pm_card_chargeCustomerFail"
    )
    invoice = sent_invoice(alice)
    client.force_login(alice.portal_users.get().user)

    page = client.post(PAY.format(invoice.pk), follow=True).content.decode()

    assert "did not go through" in page and "the invoice is still open" in page
    charge = StripeCharge.objects.get()
    assert charge.status == StripeCharge.Status.FAILED and charge.failure_reason
    invoice.refresh_from_db()
    assert (invoice.status, invoice.amount_paid) == (Invoice.Status.SENT, Decimal("0"))
    assert not Payment.objects.exists()
    assert balance(alice) == Decimal("0")
    # The customer may try again (another card, once staff saved one).
    assert "Pay by card" in client.get("/portal/documents/top-ups/").content.decode()
    assert_ledger_clean()


@pytest.mark.django_db
def test_another_customers_invoice_a_draft_or_a_forged_id_is_404_and_charges_nothing(
    client, alice, bob
):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    theirs = sent_invoice(bob, amount="77.00")
    draft = create_top_up_invoice(customer=alice, name="Not sent", amount="9", actor=T)
    client.force_login(alice.portal_users.get().user)

    for pk in (theirs.pk, draft.pk, 99999999999, 10**30):
        url = PAY.format(pk)
        assert client.get(url).status_code == 404, url
        assert client.post(url).status_code == 404, url
    assert client.post("/portal/documents/top-ups/abc/pay/").status_code == 404
    assert client.put(PAY.format(theirs.pk)).status_code == 405
    assert not StripeCharge.objects.exists()
    theirs.refresh_from_db()
    assert theirs.status == Invoice.Status.SENT


@pytest.mark.django_db
def test_without_a_saved_card_the_page_says_what_to_do(client, alice):
    invoice = sent_invoice(alice)
    client.force_login(alice.portal_users.get().user)

    page = client.get(PAY.format(invoice.pk)).content.decode()
    assert "No card is saved for your account" in page and "Ask us to add a card" in page
    assert '<form method="post">' not in page
    posted = client.post(PAY.format(invoice.pk), follow=True).content.decode()
    assert "No card is saved for your account yet" in posted
    assert not StripeCharge.objects.exists()


@pytest.mark.django_db
def test_without_stripe_there_is_no_card_button(client, alice, settings):
    settings.STRIPE_API_KEY = ""
    invoice = sent_invoice(alice)
    client.force_login(alice.portal_users.get().user)
    assert "Pay by card" not in client.get("/portal/documents/top-ups/").content.decode()
    page = client.post(PAY.format(invoice.pk), follow=True).content.decode()
    assert "Card payments are not available" in page
    assert not StripeCharge.objects.exists()


@pytest.mark.django_db
def test_a_charge_in_flight_blocks_a_second_one(client, alice):
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    invoice = sent_invoice(alice)
    in_flight = pending_invoice_charge(alice, invoice)
    client.force_login(alice.portal_users.get().user)

    assert "already in progress" in client.get(PAY.format(invoice.pk)).content.decode()
    page = client.post(PAY.format(invoice.pk), follow=True).content.decode()
    assert "already in progress" in page
    assert list(StripeCharge.objects.all()) == [in_flight]


def pending_invoice_charge(customer, invoice) -> StripeCharge:
    """What a portal payment leaves when Stripe's answer was lost (timeout)."""
    return StripeCharge.objects.create(
        customer=customer,
        amount=invoice.open_amount,
        currency=invoice.currency,
        purpose=StripeCharge.Purpose.TOP_UP_INVOICE,
        invoice_id=invoice.pk,
        stripe_customer_id="cus_alice",
        payment_method_id="pm_alice",
        initiated_by="portal:alice",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("same_event", [True, False], ids=["one-event-5-times", "5-event-ids"])
def test_a_success_webhook_delivered_5_times_at_once_provisions_once(
    alice, eager_celery, same_event
):
    invoice = sent_invoice(alice)
    charge = pending_invoice_charge(alice, invoice)
    intent = intent_payload(charge, intent_id="pi_invoice_race")
    shared = stripe_event("payment_intent.succeeded", intent, event_id="evt_invoice_race")
    start = threading.Barrier(5)
    answers: list[int] = []
    errors: list[BaseException] = []

    def deliver(n: int) -> None:
        event = shared if same_event else {**shared, "id": f"evt_invoice_race_{n}"}
        try:
            start.wait(timeout=30)
            answers.append(post_event(Client(), event).status_code)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()  # each thread had its own connection

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == [] and answers == [200] * 5
    assert StripeEvent.objects.count() == (1 if same_event else 5)
    # Whatever a lost task left waiting, the sweeps finish; they add nothing.
    from billing.stripe import webhooks

    webhooks.retry_waiting_events(older_than=timedelta(0))
    stripe_services.apply_due_effects()
    charge.refresh_from_db()
    assert charge.status == StripeCharge.Status.SUCCEEDED and charge.effects_applied_at
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {
        StripeEvent.Status.PROCESSED
    }
    assert_paid_once(invoice, charge)
    assert balance(alice) == Decimal("100.00")
    assert_ledger_clean()


@pytest.mark.django_db(transaction=True)
def test_after_the_synchronous_answer_racing_effects_and_webhooks_add_nothing(alice, eager_celery):
    """Portal pay settles the charge; then the effect run again (as the sweep does)
    and five webhooks for the same PaymentIntent race each other."""
    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    invoice = sent_invoice(alice)
    client = Client()
    client.force_login(alice.portal_users.get().user)
    client.post(PAY.format(invoice.pk))
    charge = StripeCharge.objects.get()
    # As if the bookkeeping after the effect was lost: the effect is due again.
    StripeCharge.objects.filter(pk=charge.pk).update(effects_applied_at=None)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def effect() -> None:
        try:
            start.wait(timeout=30)
            stripe_services.apply_charge_effects(charge_id=charge.pk, force=True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def webhook(n: int) -> None:
        try:
            start.wait(timeout=30)
            event = stripe_event(
                "payment_intent.succeeded",
                intent_payload(charge, intent_id=charge.payment_intent_id),
                event_id=f"evt_sync_race_{n}",
            )
            assert post_event(Client(), event).status_code == 200
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=effect)] + [
        threading.Thread(target=webhook, args=(n,)) for n in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert_paid_once(invoice, charge)
    assert balance(alice) == Decimal("100.00")
    assert_ledger_clean()


@pytest.mark.django_db
def test_refunding_an_invoice_card_payment_is_refused_and_changes_nothing(client, alice):
    from billing.errors import ChargeNotRefundable

    stripe_services.attach_payment_method(customer=alice, payment_method_id="pm_card_visa")
    invoice = sent_invoice(alice)
    client.force_login(alice.portal_users.get().user)
    client.post(PAY.format(invoice.pk))
    charge = StripeCharge.objects.get()

    with pytest.raises(ChargeNotRefundable, match="refunds of invoice card payments"):
        stripe_services.refund_charge(charge=charge, initiated_by="staff")

    charge.refresh_from_db()
    assert (charge.status, charge.refunded_amount) == (StripeCharge.Status.SUCCEEDED, 0)
    assert_paid_once(invoice, charge)
    assert_ledger_clean()


@pytest.mark.django_db
def test_an_invoice_voided_while_its_card_payment_was_in_flight_leaves_an_unallocated_payment(
    client, alice, eager_celery, django_capture_on_commit_callbacks
):
    from invoices.topups import void_top_up_invoice

    invoice = sent_invoice(alice)
    charge = pending_invoice_charge(alice, invoice)
    void_top_up_invoice(invoice=invoice, reason="Sent by mistake", actor=T)

    with django_capture_on_commit_callbacks(execute=True):
        post_event(
            client,
            stripe_event(
                "payment_intent.succeeded", intent_payload(charge, intent_id="pi_after_void")
            ),
        )

    charge.refresh_from_db()
    assert charge.status == StripeCharge.Status.SUCCEEDED and charge.effects_applied_at
    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.VOID
    payment = Payment.objects.get()
    assert (payment.method, payment.reference, payment.unallocated) == (
        Payment.Method.CARD,
        "pi_after_void",
        Decimal("100.00"),
    )
    assert not PaymentAllocation.objects.exists()
    assert balance(alice) == Decimal("100.00")  # the money is on the balance all the same
    assert_ledger_clean()
