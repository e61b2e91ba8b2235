"""What a settled Stripe charge means for the money: the glue to ``wallets.services``.

The only module of the Stripe flow that moves money, and only through the wallets
services (which own the ledger). ``billing.stripe_services.apply_charge_effects``
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

from billing.errors import StripeMismatch

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
    """The money is in: activate the pending grant, booked psp_clearing → grant."""
    if charge.grant_id is None:
        return
    _services().activate_grant(
        grant=charge.grant_id,
        external_transaction_id=charge.payment_intent_id,
        actor=_system_actor(),
        idempotency_key=f"stripe:{charge.payment_intent_id}:activate",
        funding=FUNDING_ACCOUNT,
    )


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


def on_charge_refunded(charge: StripeCharge, amount: Decimal) -> None:
    """``amount`` is the total refunded so far. A full refund voids the grant.

    A partial refund cannot be mirrored by voiding; our refund service refuses it
    for grants, so it can only come from the Stripe dashboard. It is reported as
    an effect error on the charge for staff to settle by hand.
    """
    if charge.grant_id is None:
        return
    if amount != charge.amount:
        raise StripeMismatch(
            f"{amount} of {charge.amount} {charge.currency} was refunded at Stripe for grant "
            f"#{charge.grant_id}; a partial refund does not change the grant. Adjust it by hand."
        )
    _services().void_grant(
        grant=charge.grant_id,
        actor=_system_actor(),
        idempotency_key=f"stripe:{charge.payment_intent_id}:refund-void",
        reason=f"Card payment {charge.payment_intent_id} refunded in full",
    )
