"""Stripe flows: the customer link, saved cards, off-session charges and refunds.

Rules every function here follows:

- Never hold a transaction or a row lock across a call to Stripe. Our record is
  committed first, Stripe is called, and the answer is recorded in a second
  short transaction that locks the row again.
- Every Stripe write carries an idempotency key derived from our own record, so
  a retry after a timeout or a 5xx cannot charge, refund or create twice.
- A charge's money effect (a grant activated or voided) is applied after its
  new status is committed, by ``apply_charge_effects``, until it goes through once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from billing.errors import (
    ChargeNotRefundable,
    ChargeNotRetryable,
    NoPaymentMethod,
    StripeCardDeclined,
    StripeMismatch,
    StripeNotConfigured,
    StripeRequestRejected,
    StripeUnavailable,
)
from billing.models import Customer, PaymentIntentState, StripeCharge, StripePaymentMethod
from billing.money import amount_text, from_stripe_amount, to_stripe_amount
from billing.stripe import effects as stripe_effects
from billing.stripe import gateway as stripe_gateway
from billing.stripe.gateway import stripe_enabled

logger = logging.getLogger(__name__)

# Our charge id travels in the PaymentIntent's metadata, so a webhook that
# overtakes our own bookkeeping still finds its record.
CHARGE_METADATA_KEY = "stripe_charge_id"
# Stripe keeps an idempotency key for at least 24 hours; past that, a retry could
# charge again, so we stop retrying a little before.
IDEMPOTENCY_WINDOW = timedelta(hours=23)
MAX_AUTOMATIC_ATTEMPTS = 10
MAX_EFFECT_ATTEMPTS = 10

Status = StripeCharge.Status


def require_stripe() -> None:
    if not stripe_enabled():
        raise StripeNotConfigured()


# --- the customer link and saved cards -------------------------------------------


def sync_stripe_customer(*, customer: Customer) -> Customer:
    """Create the customer at Stripe (once: the key is our id), or update its name
    and email; a customer deleted at Stripe is created again. Then mirror the cards."""
    require_stripe()
    old_id = customer.stripe_customer_id
    metadata = {"customer_id": str(customer.pk), "account_number": customer.account_number}
    if old_id and stripe_gateway.customer_exists(stripe_customer_id=old_id):
        stripe_gateway.update_customer(
            stripe_customer_id=old_id, name=customer.name, email=customer.email, metadata=metadata
        )
        new_id = old_id
    else:
        key = f"customer-{customer.pk}" + (f"-replaces-{old_id}" if old_id else "")
        new_id = stripe_gateway.create_customer(
            name=customer.name, email=customer.email, metadata=metadata, idempotency_key=key
        )
    with transaction.atomic(durable=True):
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        if locked.stripe_customer_id == old_id and new_id != old_id:
            locked.stripe_customer_id = new_id
            locked.save(update_fields=["stripe_customer_id", "updated_at"])
            locked.stripe_payment_methods.all().delete()  # they belonged to the old one
    customer.stripe_customer_id = locked.stripe_customer_id
    sync_payment_methods(customer=customer)
    return customer


def sync_payment_methods(*, customer: Customer) -> list[StripePaymentMethod]:
    """Make our copy of the customer's cards (and which one is the default) match Stripe."""
    if not customer.stripe_customer_id:
        customer.stripe_payment_methods.all().delete()
        return []
    require_stripe()
    methods = stripe_gateway.list_payment_methods(stripe_customer_id=customer.stripe_customer_id)
    default_id = stripe_gateway.default_payment_method_id(
        stripe_customer_id=customer.stripe_customer_id
    )
    with transaction.atomic(durable=True):
        Customer.objects.select_for_update().filter(pk=customer.pk).get()
        ours = customer.stripe_payment_methods
        ours.exclude(stripe_payment_method_id__in=[m.id for m in methods]).delete()
        ours.update(is_default=False)
        for method in methods:
            StripePaymentMethod.follow(
                customer=customer, details=method, is_default=method.id == default_id
            )
        return list(customer.stripe_payment_methods.all())


def attach_payment_method(
    *, customer: Customer, payment_method_id: str, make_default: bool | None = None
) -> StripePaymentMethod:
    """Save a card (a Stripe PaymentMethod id) for later off-session charges.

    The first card becomes the default unless ``make_default`` says otherwise.
    """
    require_stripe()
    if not customer.stripe_customer_id:
        sync_stripe_customer(customer=customer)
    details = stripe_gateway.attach_payment_method(
        stripe_customer_id=customer.stripe_customer_id, payment_method_id=payment_method_id
    )
    if make_default is None:
        make_default = not customer.stripe_payment_methods.filter(is_default=True).exists()
    if make_default:
        stripe_gateway.set_default_payment_method(
            stripe_customer_id=customer.stripe_customer_id, payment_method_id=details.id
        )
    sync_payment_methods(customer=customer)
    return StripePaymentMethod.objects.get(stripe_payment_method_id=details.id)


def set_default_payment_method(*, payment_method: StripePaymentMethod) -> StripePaymentMethod:
    require_stripe()
    customer = payment_method.customer
    stripe_gateway.set_default_payment_method(
        stripe_customer_id=customer.stripe_customer_id,
        payment_method_id=payment_method.stripe_payment_method_id,
    )
    sync_payment_methods(customer=customer)
    return StripePaymentMethod.objects.get(pk=payment_method.pk)


def detach_payment_method(*, payment_method: StripePaymentMethod) -> None:
    require_stripe()
    stripe_gateway.detach_payment_method(payment_method_id=payment_method.stripe_payment_method_id)
    sync_payment_methods(customer=payment_method.customer)


# --- charges ----------------------------------------------------------------------


def charge_off_session(
    *,
    customer: Customer,
    amount: Decimal,
    purpose: str,
    initiated_by: str,
    grant_id: int | None = None,
    currency: str | None = None,
    payment_method: StripePaymentMethod | None = None,
    description: str = "",
) -> StripeCharge:
    """Charge a saved card now, the customer not present ("charge now", top-ups).

    Our pending record is committed before Stripe is called, so a crash or a
    timeout leaves a pending charge that a retry completes with the same
    idempotency key, never a payment we do not know about. Returns the charge in
    its new state: succeeded, failed (with Stripe's reason), or pending with the
    error of an attempt that got no definite answer. Must not run inside a
    transaction (the grant it pays for must already be committed).
    """
    require_stripe()
    currency = (currency or customer.currency).upper()
    if purpose not in StripeCharge.Purpose.values:
        raise ValueError(f"unknown charge purpose {purpose!r}")
    if purpose == StripeCharge.Purpose.GRANT and grant_id is None:
        raise ValueError("a charge for a grant needs the grant's id")
    if amount <= 0:
        raise ValueError(f"a charge must be positive, not {amount}")
    to_stripe_amount(amount, currency)  # refuses amounts that are not whole minor units
    if not customer.stripe_customer_id:
        raise NoPaymentMethod(
            f"{customer} is not linked to Stripe yet: create the Stripe customer and save a card first."
        )
    method = payment_method or customer.stripe_payment_methods.filter(is_default=True).first()
    if method is None:
        raise NoPaymentMethod(
            f"{customer} has no default card at Stripe: save or choose one first."
        )
    if method.customer_id != customer.pk:
        raise ValueError(f"{method} is not a card of {customer}")
    with transaction.atomic(durable=True):
        charge = StripeCharge.objects.create(
            customer=customer,
            amount=amount,
            currency=currency,
            purpose=purpose,
            grant_id=grant_id,
            description=description,
            stripe_customer_id=customer.stripe_customer_id,
            payment_method_id=method.stripe_payment_method_id,
            initiated_by=initiated_by,
        )
    return attempt_charge(charge_id=charge.pk)


def attempt_charge(*, charge_id: int) -> StripeCharge:
    """Ask Stripe for a pending charge's money, with the charge's idempotency key.

    Safe to repeat: Stripe answers a repeated key with the first attempt's result.
    A settled charge is returned as it is; one whose PaymentIntent we already know
    is refreshed from Stripe instead.
    """
    with transaction.atomic(durable=True):
        charge = StripeCharge.objects.select_for_update().get(pk=charge_id)
        if charge.is_settled:
            return charge
        if not charge.payment_intent_id:
            if timezone.now() - charge.created_at > IDEMPOTENCY_WINDOW:
                raise ChargeNotRetryable(
                    f"Stripe charge #{charge.pk} was first tried on {charge.created_at:%Y-%m-%d %H:%M}; "
                    "Stripe no longer remembers its idempotency key, so another attempt could "
                    "charge twice. Check the payment in the Stripe dashboard."
                )
            charge.attempts += 1
            charge.last_attempt_at = timezone.now()
            charge.save(update_fields=["attempts", "last_attempt_at", "updated_at"])
    if charge.payment_intent_id:
        return refresh_charge(charge_id=charge.pk)

    require_stripe()
    try:
        intent = stripe_gateway.charge_off_session(
            stripe_customer_id=charge.stripe_customer_id,
            payment_method_id=charge.payment_method_id,
            amount=to_stripe_amount(charge.amount, charge.currency),
            currency=charge.currency,
            metadata=_intent_metadata(charge),
            idempotency_key=charge.idempotency_key,
        )
    except StripeCardDeclined as declined:
        _record_decline(
            charge.pk,
            code=declined.code or "card_declined",
            reason=declined.reason,
            payment_intent_id=declined.payment_intent_id,
        )
    except StripeRequestRejected as rejected:
        _record_decline(charge.pk, code=rejected.code or "rejected", reason=rejected.reason)
    except StripeUnavailable as exc:
        _note_error(charge.pk, exc.reason)
    else:
        _record_intent(charge.pk, intent)
        if intent.status == "requires_action":
            _cancel_quietly(intent.id)
    apply_charge_effects(charge_id=charge.pk)
    return StripeCharge.objects.get(pk=charge.pk)


def refresh_charge(*, charge_id: int) -> StripeCharge:
    """Bring a charge whose PaymentIntent we know up to date with Stripe."""
    charge = StripeCharge.objects.get(pk=charge_id)
    if not charge.payment_intent_id:
        return charge
    require_stripe()
    try:
        intent = stripe_gateway.retrieve_payment_intent(payment_intent_id=charge.payment_intent_id)
    except (StripeUnavailable, StripeRequestRejected) as exc:
        _note_error(charge.pk, exc.reason)
    else:
        _record_intent(charge.pk, intent)
    apply_charge_effects(charge_id=charge.pk)
    return StripeCharge.objects.get(pk=charge.pk)


def retry_charge(*, charge: StripeCharge) -> StripeCharge:
    """Safe any number of times: a pending charge is attempted again with its own
    idempotency key; a settled one gets its due money effect applied. A declined
    charge stays declined: charge again to try another card."""
    if charge.status == Status.PENDING:
        return attempt_charge(charge_id=charge.pk)
    if charge.effects_applied_at is None:
        apply_charge_effects(charge_id=charge.pk, force=True)
        return StripeCharge.objects.get(pk=charge.pk)
    reason = f" ({charge.failure_reason})" if charge.failure_reason else ""
    raise ChargeNotRetryable(
        f"Stripe charge #{charge.pk} is {charge.get_status_display().lower()}{reason}; "
        "there is nothing to retry. Start a new charge instead."
    )


def refund_charge(
    *,
    charge: StripeCharge,
    initiated_by: str,
    amount: Decimal | None = None,
    allow_debt: bool = False,
) -> StripeCharge:
    """Give money back to the card. Defaults to everything not yet refunded.

    A charge that paid for a grant gets its money back from that grant's credit
    (``refund_preview``): the unused part first; a refund above what is unused turns
    the used part into debt the customer owes, and is refused unless staff confirm it
    (``allow_debt``). The ledger books exactly that once Stripe has refunded.
    """
    require_stripe()
    charge = StripeCharge.objects.get(pk=charge.pk)
    if charge.invoice_id is not None:
        # Its money is a Payment allocated to the invoice; a refund here would not
        # take that top-up credit back, so the ledger and Stripe would disagree.
        raise ChargeNotRefundable(
            f"Stripe charge #{charge.pk} paid top-up invoice #{charge.invoice_id}; refunds of "
            "invoice card payments are not built yet. Remove the payment from the invoice "
            "(Payments admin), then refund it in the Stripe dashboard."
        )
    refundable = charge.refundable_amount
    if refundable <= 0:
        raise ChargeNotRefundable(
            f"Stripe charge #{charge.pk} is {charge.get_status_display().lower()}: "
            "nothing to refund."
        )
    amount = refundable if amount is None else amount
    if not Decimal("0") < amount <= refundable:
        raise ChargeNotRefundable(
            f"Refund {amount} {charge.currency}? Stripe charge #{charge.pk} has "
            f"{refundable} {charge.currency} left to refund."
        )
    preview = refund_preview(charge=charge, amount=amount)
    if preview is not None and preview.debt and not allow_debt:
        unused, debt = amount_text(preview.without_debt), amount_text(preview.debt)
        raise ChargeNotRefundable(
            f"Refund {amount} {charge.currency}? Grant #{charge.grant_id} paid by Stripe charge "
            f"#{charge.pk} has {unused} {charge.currency} unused; the other {debt} "
            f"{charge.currency} of this refund was used and would become debt the customer "
            f"owes. Confirm turning the used part into debt, or refund at most {unused} "
            f"{charge.currency}."
        )
    before = to_stripe_amount(charge.refunded_amount, charge.currency)
    minor = to_stripe_amount(amount, charge.currency)
    # Derived from the state we refund from: a retry of this refund reuses the key,
    # a later second refund (new refunded total) gets its own.
    stripe_gateway.refund(
        payment_intent_id=charge.payment_intent_id,
        amount=minor,
        idempotency_key=f"refund-{charge.pk}-from-{before}-of-{minor}",
    )
    total = from_stripe_amount(before + minor, charge.currency)
    try:
        intent = stripe_gateway.retrieve_payment_intent(payment_intent_id=charge.payment_intent_id)
    except StripeUnavailable:
        intent = None  # the refund went through; its webhook confirms the total later
    if intent is not None and intent.amount_refunded is not None:
        total = max(total, from_stripe_amount(intent.amount_refunded, charge.currency))

    def record(c: StripeCharge) -> bool:
        c.refunded_by = initiated_by
        return c.record_refunded_total(total)

    _record(charge.pk, record)
    apply_charge_effects(charge_id=charge.pk)
    return StripeCharge.objects.get(pk=charge.pk)


def refund_preview(*, charge: StripeCharge, amount: Decimal | None = None) -> Any:
    """For a charge that paid for a grant: how a refund of ``amount`` (default: all
    that is left) would be booked (a ``wallets.services.RefundSplit``: unused, expired,
    debt). None for a charge without a grant."""
    if charge.grant_id is None:
        return None
    amount = charge.refundable_amount if amount is None else amount
    return stripe_effects.refund_split(charge, charge.refunded_amount + amount)


def apply_charge_effects(*, charge_id: int, force: bool = False) -> bool:
    """Do, once, what the charge's settled status means for the money.

    Succeeded activates the grant it pays for, failed or canceled voids it, a full
    refund voids it again (see ``billing.stripe.effects``). The effects are
    idempotent, so a crash between the effect and our bookkeeping is repaired by
    running this again (the sweep does, up to MAX_EFFECT_ATTEMPTS; ``force`` goes
    past that). Returns True when the effects are now done.
    """
    charge = StripeCharge.objects.get(pk=charge_id)
    if not charge.is_settled or charge.effects_applied_at is not None:
        return False
    if charge.effects_attempts >= MAX_EFFECT_ATTEMPTS and not force:
        return False
    StripeCharge.objects.filter(pk=charge.pk).update(effects_attempts=F("effects_attempts") + 1)
    try:
        if charge.status in (Status.SUCCEEDED, Status.PARTIALLY_REFUNDED, Status.REFUNDED):
            stripe_effects.on_charge_succeeded(charge)
        if charge.status in (Status.PARTIALLY_REFUNDED, Status.REFUNDED):
            stripe_effects.on_charge_refunded(charge, charge.refunded_amount)
        if charge.status in (Status.FAILED, Status.CANCELED):
            stripe_effects.on_charge_failed(charge)
    except Exception as exc:  # anything: recorded on the charge, retried by the sweep
        logger.exception("Stripe charge #%s: effect of %s failed", charge.pk, charge.status)
        StripeCharge.objects.filter(pk=charge.pk, effects_applied_at__isnull=True).update(
            effects_error=f"{type(exc).__name__}: {exc}"
        )
        return False
    # Only if nothing moved on meanwhile; otherwise the new state's effect is still due.
    done = StripeCharge.objects.filter(
        pk=charge.pk,
        status=charge.status,
        refunded_amount=charge.refunded_amount,
        effects_applied_at__isnull=True,
    ).update(effects_applied_at=timezone.now(), effects_error="")
    return bool(done)


# --- the sweep (beat) -------------------------------------------------------------


def retry_pending_charges(*, older_than: timedelta, limit: int = 50) -> int:
    """Attempt again the pending charges that got no definite answer, while the
    idempotency key is still valid. Returns how many were attempted."""
    if not stripe_enabled():
        return 0
    now = timezone.now()
    due = (
        StripeCharge.objects.filter(
            status=Status.PENDING,
            created_at__gt=now - IDEMPOTENCY_WINDOW,
            updated_at__lt=now - older_than,
            attempts__lt=MAX_AUTOMATIC_ATTEMPTS,
        )
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    count = 0
    for charge_id in due:
        try:
            attempt_charge(charge_id=charge_id)
        except ChargeNotRetryable:
            continue
        count += 1
    return count


def apply_due_effects(*, limit: int = 100) -> int:
    """Apply the money effects that a crash or an error left undone."""
    due = (
        StripeCharge.objects.effects_due()
        .filter(effects_attempts__lt=MAX_EFFECT_ATTEMPTS)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(apply_charge_effects(charge_id=charge_id) for charge_id in due)


# --- helpers ----------------------------------------------------------------------


def _intent_metadata(charge: StripeCharge) -> dict[str, str]:
    metadata = {
        CHARGE_METADATA_KEY: str(charge.pk),
        "purpose": charge.purpose,
        "account_number": charge.customer.account_number,
    }
    if charge.grant_id is not None:
        metadata["grant_id"] = str(charge.grant_id)
    if charge.invoice_id is not None:
        metadata["invoice_id"] = str(charge.invoice_id)
    return metadata


def _record(charge_id: int, change: Callable[[StripeCharge], bool]) -> StripeCharge:
    """Apply ``change`` to the locked charge row and save it, in one short transaction."""
    try:
        with transaction.atomic(durable=True):
            charge = StripeCharge.objects.select_for_update().get(pk=charge_id)
            change(charge)
            charge.save()
            return charge
    except StripeMismatch as exc:
        _note_error(charge_id, str(exc))
        raise


def _record_intent(charge_id: int, intent: PaymentIntentState) -> StripeCharge:
    def change(charge: StripeCharge) -> bool:
        changed = charge.record_intent(intent)
        if intent.amount_refunded:
            changed |= charge.record_refunded_total(
                from_stripe_amount(intent.amount_refunded, charge.currency)
            )
        if not charge.is_settled:
            charge.last_error = f"Stripe says the payment is {intent.status}; waiting for it."
        return changed

    return _record(charge_id, change)


def _record_decline(charge_id: int, *, code: str, reason: str, payment_intent_id: str = "") -> None:
    _record(
        charge_id,
        lambda charge: charge.record_decline(
            code=code, reason=reason, payment_intent_id=payment_intent_id
        ),
    )


def _note_error(charge_id: int, error: str) -> None:
    StripeCharge.objects.filter(pk=charge_id).update(last_error=error, updated_at=timezone.now())


def _cancel_quietly(payment_intent_id: str) -> None:
    """Best effort, so an intent we gave up on cannot take money later."""
    try:
        stripe_gateway.cancel_payment_intent(payment_intent_id=payment_intent_id)
    except (StripeUnavailable, StripeRequestRejected) as exc:
        logger.warning("Could not cancel %s: %s", payment_intent_id, exc)
