"""Every write to the ledger. Nothing else in the project inserts ledger rows or
changes a cached balance; `wallets.services` is the one public entry, and the
modules of this package are cut by operation:

- `posting`: system accounts, wallet locks (id order), `_post` (legs + cached balances);
- `inputs`: validation and idempotency (keys, request fingerprints, `_once`);
- `opening`, `thresholds`: a wallet and the warning thresholds copied onto it;
- `drawdown`: usage charged in real time (SQL functions in wallets/sql/), `draw_order`;
- `grants`, `debt`, `refunds`, `transfers`, `reversal`, `expiry`;
- `credit_limits`: Balance & Credits (permanent limit, temporary increases, reversion).

Rules every function here follows:
- keyword-only arguments, Decimal amounts (never floats), an `actor` and an
  `idempotency_key`; the same key again returns the first result and books
  nothing, the same key with other arguments raises `IdempotencyConflict`;
- one `transaction.atomic()` per call (a savepoint when an invoice or card service
  calls it inside its own transaction), holding the wallet row lock
  (`SELECT ... FOR UPDATE`; two wallets are locked in id order);
- the cached balances (`CreditGrant.remaining`, `Wallet.credit_balance`,
  `restricted_balance`, `debt`) change in the same database transaction as the
  entries that justify them;
- bad input raises a `wallets.errors.WalletError` whose message says what to fix,
  before anything is written.
"""

from wallets.services.credit_limits import (
    change_permanent_limit,
    end_temporary_increase,
    grant_temporary_increase,
    limit_state,
    maximum_increase,
    open_wallet_with_limit,
    record_class_maximum_change,
    revert_lapsed_increases,
)
from wallets.services.debt import (
    SETTLE_JOB_ACTOR,
    record_debt_payment,
    round_debt,
    settle_debt,
    settle_effective_credit,
    settle_effective_credit_batches,
)
from wallets.services.drawdown import (
    DrawDown,
    UsageCharge,
    draw_down,
    draw_down_batch,
    draw_order,
)
from wallets.services.expiry import (
    EXPIRY_JOB_ACTOR,
    ExpiryBatch,
    expire_due_grant_batches,
    expire_due_grants,
)
from wallets.services.grants import (
    activate_grant,
    default_expiry,
    expire_grant,
    grant_credit,
    void_grant,
)
from wallets.services.opening import open_wallet
from wallets.services.posting import DEFAULT_FUNDING, FUNDING_CODES, Leg, system_account
from wallets.services.refunds import RefundSplit, refund_grant, refund_split
from wallets.services.reversal import REVERSIBLE, reverse
from wallets.services.thresholds import copy_class_warning_thresholds, copy_warning_thresholds
from wallets.services.transfers import transfer

__all__ = [
    "revert_lapsed_increases",
    "record_class_maximum_change",
    "open_wallet_with_limit",
    "maximum_increase",
    "limit_state",
    "grant_temporary_increase",
    "end_temporary_increase",
    "change_permanent_limit",
    "DEFAULT_FUNDING",
    "EXPIRY_JOB_ACTOR",
    "FUNDING_CODES",
    "REVERSIBLE",
    "SETTLE_JOB_ACTOR",
    "DrawDown",
    "ExpiryBatch",
    "Leg",
    "RefundSplit",
    "UsageCharge",
    "activate_grant",
    "copy_class_warning_thresholds",
    "copy_warning_thresholds",
    "default_expiry",
    "draw_down",
    "draw_down_batch",
    "draw_order",
    "expire_due_grant_batches",
    "expire_due_grants",
    "expire_grant",
    "grant_credit",
    "open_wallet",
    "record_debt_payment",
    "refund_grant",
    "refund_split",
    "reverse",
    "round_debt",
    "settle_debt",
    "settle_effective_credit",
    "settle_effective_credit_batches",
    "system_account",
    "transfer",
    "void_grant",
]
