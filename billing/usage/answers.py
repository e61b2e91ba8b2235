"""What a usage answer says about the wallet: credit balance, debt and available
funds right after each event (read only; the booking is in `recording`)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from django.utils import timezone

from billing.money import decimal_text
from billing.usage.rating import prepared_cursor
from wallets import services
from wallets.models import LedgerTransaction

# The wallet as it is now (locked by the draw-down in this transaction, when there
# was one), its available funds at `now` (`wallets_available_funds`, wallets 0010:
# the one definition) and which of the given grants were spendable credit then
# (unrestricted, in force at `now`). A read only.
WALLET_NOW_SQL = """
SELECT credit_balance, debt, wallets_available_funds(id, %(now)s),
       ARRAY(SELECT g.id FROM wallets_creditgrant g
             WHERE g.id = ANY(%(grant_ids)s) AND NOT g.restricted
               AND wallets_grant_in_force(g.effective_at, g.expires_at, %(now)s))
FROM wallets_wallet WHERE id = %(wallet_id)s
"""


def figures_after_each(
    wallet_id: int | None, changes: Sequence[services.DrawDown | None]
) -> list[dict[str, str]]:
    """Credit balance, debt and available funds right after each event of one
    wallet's batch, in order (None: an event that moved nothing). When every event
    drew down, the draw-downs carry them; otherwise they are worked back from the
    wallet as it is at the end of the batch: nothing else changed it meanwhile,
    since the batch holds the wallet lock until the commit."""
    if changes and all(c is not None and c.available_after is not None for c in changes):
        return [
            {
                "credit_balance": decimal_text(c.balance_after),
                "debt": decimal_text(c.debt_after),
                "available_funds": decimal_text(c.available_after),
            }
            for c in changes
            if c is not None and c.available_after is not None
        ]
    if wallet_id is None:
        return [{"credit_balance": "0", "debt": "0", "available_funds": "0"} for _ in changes]
    grant_ids = sorted({grant_id for d in changes if d for grant_id, _ in d.lots})
    with prepared_cursor() as cursor:
        cursor.execute(
            WALLET_NOW_SQL,
            {"wallet_id": wallet_id, "grant_ids": grant_ids, "now": timezone.now()},
            prepare=True,
        )
        row = cursor.fetchone()
    assert row is not None, f"wallet {wallet_id} vanished"
    balance, debt, available, spendable_grants = row
    figures: list[dict[str, str]] = []
    for change in reversed(changes):
        figures.append(
            {
                "credit_balance": decimal_text(balance),
                "debt": decimal_text(debt),
                "available_funds": decimal_text(available),
            }
        )
        if change is not None:  # the wallet before this event
            balance += change.from_credits
            debt -= change.to_debt
            available += change.to_debt + sum(
                (a for g, a in change.lots if g in spendable_grants), Decimal(0)
            )
    figures.reverse()
    return figures


def reversal_lots(tx: LedgerTransaction) -> list[tuple[int, Decimal]]:
    """The (grant, amount) lots of a ledger transaction, in order."""
    return list(tx.lots.order_by("id").values_list("grant_id", "amount"))
