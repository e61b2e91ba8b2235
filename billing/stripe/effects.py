"""What a settled Stripe charge means for the money: the glue to ``wallets.services``.

The only module of the Stripe flow that moves money, and only through the wallets
services (which own the ledger). ``billing.stripe.services.apply_charge_effects``
calls these after the charge's new status is committed, outside any transaction
of ours (the wallets services open their own), and again after a failure until
one call goes through. So each function must be idempotent: every ledger
call carries a key derived from the PaymentIntent or our charge id, and the
wallets services turn a repeated key into "already done".

A charge funds a credit grant when it carries ``grant_id`` (always for
purpose ``grant``): the grant was created pending ("Requires Action") and
waits for the money. Without a grant id there is nothing to do here.

``wallets`` is imported inside each function: billing's models sit below the
ledger and must not import it at load time.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billing.models import StripeCharge

ACTOR_NAME = "stripe"
FUNDING_ACCOUNT = "psp_clearing"


# Imported when called: the ledger app must not be loaded by billing's models.
# The wallets services take a grant or its id; we pass the id we hold.
def _services() -> Any:
    from wallets import services

    return services


def _system_actor() -> Any:
    from wallets.actors import Actor

    return Actor.system(ACTOR_NAME)


def on_charge_succeeded(charge: StripeCharge) -> None:
    """The money is in: activate the pending grant, booked psp_clearing → grant; or,
    for a top-up invoice paid by card, record the card payment and allocate it."""
    if charge.invoice_id is not None:
        pay_invoice(charge)
        return
    if charge.grant_id is None:
        return
    _services().activate_grant(
        grant=charge.grant_id,
        external_transaction_id=charge.payment_intent_id,
        actor=_system_actor(),
        idempotency_key=f"stripe:{charge.payment_intent_id}:activate",
        funding=FUNDING_ACCOUNT,
    )


def pay_invoice(charge: StripeCharge) -> None:
    """A card ``Payment`` (reference: the PaymentIntent) recorded and allocated to the
    charge's top-up invoice, which books its top-up grant. Both keys come from the
    PaymentIntent, so any number of calls (answer, webhook, sweep) record it once.
    An invoice that is no longer open (staff recorded another payment, or voided
    it) gets what it still takes; the rest stays on the balance as an unallocated
    payment, visible to staff and in the customer's Documents → Payments."""
    from invoices import services as invoice_services
    from invoices.models import Invoice

    if charge.invoice_id is None:
        return
    payment = invoice_services.record_payment(
        customer=charge.customer,
        amount=charge.amount,
        currency=charge.currency,
        method="card",
        reference=charge.payment_intent_id,
        comment=f"Stripe charge #{charge.pk} for a top-up invoice (portal)",
        actor=_system_actor(),
        idempotency_key=f"stripe:{charge.payment_intent_id}:payment",
    )
    invoice = Invoice.objects.get(pk=charge.invoice_id)
    key = f"stripe:{charge.payment_intent_id}:allocation"
    already = payment.allocations.filter(idempotency_key=key).exists()
    if already or invoice.status not in ("sent", "partially_paid") or payment.unallocated <= 0:
        return
    amount = min(payment.unallocated, invoice.open_amount)
    if amount <= 0:
        return
    invoice_services.allocate_payment(
        payment=payment, invoice=invoice, amount=amount, actor=_system_actor(),
        idempotency_key=key,
    )  # fmt: skip


def on_charge_failed(charge: StripeCharge) -> None:
    """No money came (declined, refused, canceled): the waiting grant is voided."""
    if charge.grant_id is None:
        return
    _services().void_grant(
        grant=charge.grant_id,
        actor=_system_actor(),
        idempotency_key=f"stripe:charge-{charge.pk}:void",
        reason=f"Card payment {charge.status}: {charge.failure_reason or 'no reason given'}",
    )


def refund_split(charge: StripeCharge, total: Decimal) -> Any:
    """Where a refund of the charge up to ``total`` comes back from (unused, expired, debt)."""
    return _services().refund_split(grant=charge.grant_id, refunded_total=total)


def on_charge_refunded(charge: StripeCharge, amount: Decimal) -> None:
    """``amount`` is the total refunded so far; each new total books what it adds.

    The money has left Stripe (our refund service, or staff in the Stripe dashboard,
    which arrives as a ``charge.refunded`` webhook), so psp_clearing must take it
    back exactly: from the grant's unused credit first, then what expired, and the
    rest, credit already used, as debt the customer owes. A refund of the whole
    charge voids the grant. Our refund service asks staff to confirm the debt before
    it calls Stripe; here it is a fact, booked and named in the transaction's memo.
    """
    if charge.grant_id is None:
        return
    total = str(amount)
    _services().refund_grant(
        grant=charge.grant_id,
        refunded_total=amount,
        actor=_system_actor(),
        idempotency_key=f"stripe:{charge.payment_intent_id}:refunded-total:{total}",
        allow_debt=True,
        reference=charge.payment_intent_id,
    )
