"""Opening a wallet: its receivable account and the system accounts of its currency."""

from __future__ import annotations

from billing.models import Customer
from wallets.models import (
    Account,
    Wallet,
)
from wallets.services.posting import Code, system_account
from wallets.services.thresholds import _warning_arrays


def open_wallet(*, customer: Customer, currency: str | None = None) -> Wallet:
    """The customer's wallet in `currency` (default: the customer's), created once."""
    currency = currency or customer.currency
    existing = Wallet.objects.filter(customer=customer, currency=currency).first()
    if existing is not None:
        return existing
    for code in Code.values:
        system_account(code, currency)
    receivable = Account.objects.create(kind=Account.Kind.RECEIVABLE, currency=currency)
    wallet, created = Wallet.objects.get_or_create(
        customer=customer,
        currency=currency,
        defaults={"receivable_account": receivable, **_warning_arrays(customer)},
    )
    if created:
        receivable.wallet = wallet
        receivable.save(update_fields=["wallet"])
    return wallet
