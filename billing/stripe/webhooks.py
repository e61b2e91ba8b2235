"""The Stripe webhook inbox: verify, store once, process idempotently.

``receive_stripe_event`` (called by the view) checks the signature and stores the
event once by its Stripe id; the view then enqueues ``billing.tasks.process_stripe_event``
for a new event (this module sits below the tasks and does not import them). ``process_stripe_event`` applies it under a row lock and records the
outcome on the event; running it again on a processed event does nothing.

Out of order: an event about a PaymentIntent whose metadata names one of our
charges that we cannot see yet stays ``received`` with a note; the sweep
(``retry_waiting_events``) processes it again later, up to MAX_EVENT_ATTEMPTS.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.errors import BillingError, StripeMismatch, WebhookRejected
from billing.models import (
    Customer,
    PaymentIntentState,
    PaymentMethodDetails,
    StripeCharge,
    StripeEvent,
    StripePaymentMethod,
)
from billing.money import from_stripe_amount
from billing.stripe.services import CHARGE_METADATA_KEY, apply_charge_effects

logger = logging.getLogger(__name__)

MAX_EVENT_ATTEMPTS = 10


class WaitingForOurRecord(BillingError):
    """The event is about a charge of ours that is not visible yet: try again later."""


@dataclass(frozen=True)
class Handled:
    note: str = ""
    ignored: bool = False
    charge_ids: tuple[int, ...] = ()


# --- receiving ------------------------------------------------------------------


def receive_stripe_event(*, payload: bytes, signature_header: str) -> tuple[StripeEvent, bool]:
    """Verify a webhook delivery and store its event once. Returns (event, created).

    Nothing is stored when the signature is missing, wrong or older than Stripe's
    default tolerance (5 minutes). A repeated delivery returns the stored event.
    """
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise WebhookRejected("Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET.")
    try:
        stripe.Webhook.construct_event(payload, signature_header, secret)
    except stripe.SignatureVerificationError as exc:
        raise WebhookRejected(f"Stripe signature check failed: {exc._message}") from exc
    except ValueError as exc:
        raise WebhookRejected(f"The webhook body is not a Stripe event: {exc}") from exc
    data = json.loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise WebhookRejected("The webhook body is not a Stripe event (no event id).")
    data_object = (data.get("data") or {}).get("object") or {}
    created_at = data.get("created")
    with transaction.atomic(durable=True):
        event, created = StripeEvent.objects.get_or_create(
            event_id=data["id"],
            defaults={
                "type": data.get("type", ""),
                "object_id": str(data_object.get("id") or ""),
                "livemode": bool(data.get("livemode")),
                "stripe_created_at": (
                    datetime.fromtimestamp(created_at, tz=UTC)
                    if isinstance(created_at, int)
                    else None
                ),
                "payload": data,
            },
        )
    return event, created


# --- processing -----------------------------------------------------------------


def process_stripe_event(*, event_id: str, force: bool = False) -> StripeEvent:
    """Apply one stored event, once. Processed and ignored events are left alone;
    ``force`` also takes failed ones (the admin's retry action)."""
    charge_ids: tuple[int, ...] = ()
    with transaction.atomic(durable=True):
        event = StripeEvent.objects.select_for_update().get(event_id=event_id)
        if event.status in (StripeEvent.Status.PROCESSED, StripeEvent.Status.IGNORED):
            return event
        if event.status == StripeEvent.Status.FAILED and not force:
            return event
        event.attempts += 1
        handler = HANDLERS.get(event.type)
        try:
            with transaction.atomic():  # a failing handler leaves no half-done writes
                handled = (
                    handler(event.data_object)
                    if handler
                    else Handled(ignored=True, note=f"No handler for {event.type} events.")
                )
        except WaitingForOurRecord as exc:
            if event.attempts < MAX_EVENT_ATTEMPTS:
                event.status = StripeEvent.Status.RECEIVED
                event.error = f"Attempt {event.attempts}: {exc}"
            else:
                event.status = StripeEvent.Status.FAILED
                event.error = f"Gave up after {event.attempts} attempts: {exc}"
        except Exception as exc:  # recorded on the event for staff; retried from the admin
            if not isinstance(exc, BillingError):
                logger.exception("Stripe event %s (%s) failed", event.event_id, event.type)
            event.status = StripeEvent.Status.FAILED
            event.error = f"{type(exc).__name__}: {exc}"
        else:
            event.status = (
                StripeEvent.Status.IGNORED if handled.ignored else StripeEvent.Status.PROCESSED
            )
            event.error = handled.note
            event.processed_at = timezone.now()
            charge_ids = handled.charge_ids
        event.save()
    for charge_id in charge_ids:
        apply_charge_effects(charge_id=charge_id)
    return event


def retry_stripe_event(*, event: StripeEvent) -> StripeEvent:
    """Staff's retry of a failed (or still waiting) event."""
    return process_stripe_event(event_id=event.event_id, force=True)


def retry_waiting_events(*, older_than: timedelta, limit: int = 100) -> int:
    """Process again the events still ``received`` (waiting for our record, or whose
    task was lost). Returns how many are processed or ignored now."""
    ids = (
        StripeEvent.objects.filter(
            status=StripeEvent.Status.RECEIVED, received_at__lt=timezone.now() - older_than
        )
        .order_by("received_at")
        .values_list("event_id", flat=True)[:limit]
    )
    done = 0
    for event_id in ids:
        if process_stripe_event(event_id=event_id).status != StripeEvent.Status.RECEIVED:
            done += 1
    return done


# --- handlers: each runs inside the event's transaction -----------------------------


def _charge_for_intent(intent_id: str, metadata: dict[str, Any]) -> StripeCharge | None:
    """Our charge for a PaymentIntent: by its id, else by the id in its metadata."""
    charge = StripeCharge.objects.select_for_update().filter(payment_intent_id=intent_id).first()
    if charge is not None:
        return charge
    our_id = str(metadata.get(CHARGE_METADATA_KEY) or "")
    if not our_id:
        return None
    if not our_id.isdigit():
        raise StripeMismatch(f"{intent_id} names Stripe charge {our_id!r}, not an id of ours.")
    charge = StripeCharge.objects.select_for_update().filter(pk=int(our_id)).first()
    if charge is None:
        raise WaitingForOurRecord(
            f"{intent_id} is for Stripe charge #{our_id}, which we cannot see yet; will retry."
        )
    return charge


def on_payment_intent(data: dict[str, Any]) -> Handled:
    """payment_intent.succeeded / payment_failed / canceled: the state is in the payload."""
    intent = PaymentIntentState.from_stripe(data)
    charge = _charge_for_intent(intent.id, intent.metadata)
    if charge is None:
        return Handled(ignored=True, note=f"{intent.id} is not one of our charges.")
    changed = charge.record_intent(intent)
    charge.save()
    note = "" if changed else f"Stripe charge #{charge.pk} was already {charge.status}."
    return Handled(note=note, charge_ids=(charge.pk,))


def on_charge_refunded(data: dict[str, Any]) -> Handled:
    intent_id = str(data.get("payment_intent") or "")
    charge = _charge_for_intent(intent_id, data.get("metadata") or {}) if intent_id else None
    if charge is None:
        return Handled(ignored=True, note=f"Charge {data.get('id')} is not one of our charges.")
    currency = str(data.get("currency", "")).upper()
    if currency != charge.currency:
        raise StripeMismatch(
            f"Charge {data.get('id')} is in {currency}, Stripe charge #{charge.pk} in {charge.currency}."
        )
    changed = charge.record_refunded_total(from_stripe_amount(data["amount_refunded"], currency))
    charge.save()
    note = "" if changed else f"Refunds of Stripe charge #{charge.pk} were already recorded."
    return Handled(note=note, charge_ids=(charge.pk,))


def on_customer_deleted(data: dict[str, Any]) -> Handled:
    customers = list(Customer.objects.select_for_update().filter(stripe_customer_id=data["id"]))
    if not customers:
        return Handled(ignored=True, note=f"No customer of ours is linked to {data['id']}.")
    for customer in customers:
        customer.stripe_customer_id = ""
        customer.save(update_fields=["stripe_customer_id", "updated_at"])
        customer.stripe_payment_methods.all().delete()
    return Handled(note=f"Unlinked {', '.join(c.account_number for c in customers)}.")


def on_payment_method_attached(data: dict[str, Any]) -> Handled:
    details = PaymentMethodDetails.from_stripe(data)
    customer = Customer.objects.filter(stripe_customer_id=details.customer_id).first()
    if not details.customer_id or customer is None:
        return Handled(
            ignored=True, note=f"No customer of ours is linked to {details.customer_id}."
        )
    StripePaymentMethod.follow(customer=customer, details=details)
    return Handled()


def on_payment_method_detached(data: dict[str, Any]) -> Handled:
    deleted, _ = StripePaymentMethod.objects.filter(stripe_payment_method_id=data["id"]).delete()
    if not deleted:
        return Handled(ignored=True, note=f"{data['id']} was not saved here.")
    return Handled()


HANDLERS: dict[str, Callable[[dict[str, Any]], Handled]] = {
    "payment_intent.succeeded": on_payment_intent,
    "payment_intent.payment_failed": on_payment_intent,
    "payment_intent.canceled": on_payment_intent,
    "charge.refunded": on_charge_refunded,
    "customer.deleted": on_customer_deleted,
    "payment_method.attached": on_payment_method_attached,
    "payment_method.detached": on_payment_method_detached,
}
