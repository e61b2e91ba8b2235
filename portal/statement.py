"""The customer's statement: its own transactions and the transfers it received.
A transfer is one ledger transaction booked on the sender's wallet; the receiver
sees it too, read from the receiver's side."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet

from billing.models import Customer
from wallets.models import LedgerTransaction


def customer_transactions(customer: Customer) -> QuerySet[LedgerTransaction]:
    """The customer's own transactions, and the transfers other customers sent it
    (a transfer is booked on the sender's wallet; the receiver sees it too)."""
    own = list(customer.wallets.values_list("pk", flat=True))
    return LedgerTransaction.objects.filter(
        Q(wallet_id__in=own)
        | Q(kind=LedgerTransaction.Kind.TRANSFER, metadata__target_wallet__in=own)
    )


def show_received(rows: Any, customer: Customer) -> None:
    """A received transfer reads from the receiver's side: who sent it, and the
    receiver's balance and debt after it."""
    for tx in rows:
        tx.received = tx.wallet.customer_id != customer.pk
        if tx.received:
            tx.memo = f"Received from {tx.wallet.customer.account_number}"
            tx.balance_after = Decimal(tx.metadata.get("target_balance_after", "0"))
            tx.debt_after = Decimal(tx.metadata.get("target_debt_after", "0"))
