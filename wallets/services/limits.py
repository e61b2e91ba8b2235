"""The permanent credit limit."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from wallets import errors
from wallets.actors import Actor
from wallets.models import (
    CreditLimitChange,
    Wallet,
)
from wallets.services.inputs import (
    QUANTUM,
)
from wallets.services.posting import _lock_wallet, _set_clock

# --- credit limit -----------------------------------------------------------------


def set_credit_limit(
    *, wallet: Wallet | int, limit: Decimal | str | int, actor: Actor, reason: str = ""
) -> CreditLimitChange:
    """Change the permanent credit limit and record who, when, old, new and why.
    A limit below the current debt is refused: collect the debt first."""
    try:
        new = Decimal(limit)
    except (InvalidOperation, TypeError, ValueError):
        raise errors.InvalidAmount(f"limit must be a number, got {limit!r}.") from None
    if isinstance(limit, float) or not new.is_finite() or new < 0 or new != new.quantize(QUANTUM):
        raise errors.InvalidAmount(
            f"limit must be zero or a positive amount with at most 6 decimals, got {limit!r}."
        )
    wallet_id = wallet.pk if isinstance(wallet, Wallet) else wallet
    with transaction.atomic():
        locked = _lock_wallet(wallet_id)
        if new < locked.debt:
            raise errors.InvalidAmount(
                f"the new limit {new} is below the current debt {locked.debt}; collect the debt first."
            )
        change = CreditLimitChange.objects.create(
            wallet=locked, actor=actor.label, actor_user_id=actor.user_id, old_limit=locked.credit_limit,
            new_limit=new, old_temporary_increase=locked.temporary_credit_increase,
            new_temporary_increase=locked.temporary_credit_increase,
            valid_until=locked.temporary_increase_valid_until, reason=reason,
        )  # fmt: skip
        locked.credit_limit = new
        locked.updated_at = timezone.now()
        _set_clock(locked.updated_at)
        locked.save(update_fields=["credit_limit", "updated_at"])
        return change
