"""Right after a credit to a wallet, look at its subscriptions on hold for funds.

A `post_save` receiver on ledger transactions (connected by name, so this module
imports nothing of the ledger at load time): when a transaction that adds money to a
wallet commits and that wallet has a subscription deactivated for lack of funds, a
task (`reactivate_wallet`) is enqueued on commit. This is a side effect that may be
lost (a broker outage): the `bill_subscriptions` job reactivates the same
subscriptions on its next run, so no money depends on it.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save

logger = logging.getLogger(__name__)

# Ledger transaction kinds that add money a wallet can spend.
CREDIT_KINDS = frozenset({"grant", "activation", "debt_payment", "reversal", "transfer"})


def _enqueue(wallet_id: int) -> None:
    from billing.subscriptions import tasks

    tasks.reactivate_wallet.delay(wallet_id)


def after_ledger_transaction(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created or instance.kind not in CREDIT_KINDS or instance.wallet_id is None:
        return
    from billing.models.subscriptions import PrepaidSubscription

    # (A transfer is booked on the sender's wallet; the receiver's subscriptions are
    # reactivated by the job.)
    wallet_ids = [instance.wallet_id]
    held = set(
        PrepaidSubscription.objects.filter(
            wallet_id__in=wallet_ids, status="deactivated", hold="funds"
        ).values_list("wallet_id", flat=True)
    )
    for wallet_id in sorted(held):
        transaction.on_commit(partial(_enqueue, wallet_id), robust=True)


post_save.connect(
    after_ledger_transaction,
    sender="wallets.LedgerTransaction",
    dispatch_uid="subscriptions-reactivate-after-credit",
)
