"""Warning thresholds copied from a customer (or its class) onto its wallets, where
the `wallets_balance_warnings` trigger (wallets/sql/) reads them."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from billing.models import Customer, CustomerClass
from billing.thresholds import parse_amounts, parse_percents
from wallets.models import (
    Wallet,
)
from wallets.services.posting import _lock_wallet_ids


def _warning_arrays(customer: Customer) -> dict[str, list[Decimal] | None]:
    """The customer's own thresholds, else its class's defaults, field by field."""
    klass = customer.customer_class
    amounts = customer.low_funds_thresholds or (klass.low_funds_thresholds if klass else "")
    percents = customer.credit_limit_warnings or (klass.credit_limit_warnings if klass else "")
    return {
        "low_funds_thresholds": parse_amounts(amounts) or None,
        "credit_limit_warnings": parse_percents(percents) or None,
    }


def copy_warning_thresholds(customer: Customer) -> int:
    """Copy the customer's low-funds and credit-limit warning thresholds (or its
    class's defaults where its own are empty) onto its wallets, where the
    `wallets_balance_warnings` trigger reads them on every change of the cached
    balances (wallets/sql/wallets_balance_warnings.sql). Called explicitly by whatever changed the customer
    (admin, portal alerts page), never by `Customer.save`; the wallets are locked
    in id order first, like every other multi-wallet write, so it cannot deadlock
    with the expiry sweep or a transfer. Returns the number of wallets updated.
    Touches no ledger row and no balance."""
    with transaction.atomic():
        ids = _lock_wallet_ids(Wallet.objects.filter(customer=customer))
        return Wallet.objects.filter(pk__in=ids).update(**_warning_arrays(customer))


def copy_class_warning_thresholds(klass: CustomerClass) -> int:
    """A class's default thresholds changed: copy them onto the wallets of its
    customers whose own lists are empty (two set-based updates, one per list), after
    locking those wallets in id order. Called explicitly by the admin that changed
    the class, never by `CustomerClass.save`; returns the number of wallet rows
    updated."""
    with transaction.atomic():
        members = Wallet.objects.filter(pk__in=_lock_wallet_ids(
            Wallet.objects.filter(customer__customer_class=klass)
        ))  # fmt: skip
        return members.filter(customer__low_funds_thresholds="").update(
            low_funds_thresholds=parse_amounts(klass.low_funds_thresholds) or None
        ) + members.filter(customer__credit_limit_warnings="").update(
            credit_limit_warnings=parse_percents(klass.credit_limit_warnings) or None
        )
