"""The ledger: accounts, transactions, entries; wallets and credit grants.

Only `wallets.services` writes these rows. Entries are immutable (a PostgreSQL
trigger refuses UPDATE and DELETE); cached balances on wallets and grants are
kept in step with the entries inside the same database transaction, under the
wallet's row lock, and `manage.py check_ledger` proves they agree.

Modules by concept: `ledger` (Account, LedgerTransaction, Entry, money fields),
`wallet`, `grants` (CreditGrant, GrantConsumption), `limits`, `settings`
(PrepaidCreditSettings, RecurringGrantRule), `outbox` (Notification).
"""

from wallets.models.grants import CreditGrant, CreditGrantQuerySet, GrantConsumption
from wallets.models.ledger import (
    MONEY_DIGITS,
    MONEY_PLACES,
    ZERO,
    Account,
    Entry,
    LedgerTransaction,
    money_field,
)
from wallets.models.limits import CreditLimitChange
from wallets.models.outbox import Notification
from wallets.models.settings import PrepaidCreditSettings, RecurringGrantRule
from wallets.models.wallet import Wallet

__all__ = [
    "MONEY_DIGITS",
    "MONEY_PLACES",
    "ZERO",
    "Account",
    "CreditGrant",
    "CreditGrantQuerySet",
    "CreditLimitChange",
    "Entry",
    "GrantConsumption",
    "LedgerTransaction",
    "Notification",
    "PrepaidCreditSettings",
    "RecurringGrantRule",
    "Wallet",
    "money_field",
]
