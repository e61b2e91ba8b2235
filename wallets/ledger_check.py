"""Prove every cached balance from the entries, and every ledger invariant.

Each check is one set-based query that returns the rows that break it, so the
check costs a few scans however large the ledger is. `manage.py check_ledger`
prints the findings; tests call `find_problems()` after every scenario.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import connection
from django.utils import timezone

from wallets.models import Wallet

ACCOUNT_BALANCES = """
    SELECT account_id, SUM(amount) AS credit_minus_debit FROM (
        SELECT credit_account_id AS account_id, amount FROM wallets_entry
        UNION ALL
        SELECT debit_account_id, -amount FROM wallets_entry
    ) moves GROUP BY account_id
"""

CHECKS: list[tuple[str, str]] = [
    (
        "every transaction balances per currency (sum of debits = sum of credits)",
        f"""
        SELECT 'currency ' || a.currency, SUM(b.credit_minus_debit)::text, '0'
        FROM ({ACCOUNT_BALANCES}) b JOIN wallets_account a ON a.id = b.account_id
        GROUP BY a.currency HAVING SUM(b.credit_minus_debit) <> 0
        """,
    ),
    (
        "an entry moves a positive amount between two accounts of its own currency",
        """
        SELECT 'entry ' || e.id, e.amount::text || ' ' || e.currency, d.currency || '/' || c.currency
        FROM wallets_entry e
        JOIN wallets_account d ON d.id = e.debit_account_id
        JOIN wallets_account c ON c.id = e.credit_account_id
        WHERE e.amount <= 0 OR e.debit_account_id = e.credit_account_id
           OR e.currency <> d.currency OR e.currency <> c.currency
        """,
    ),
    (
        "grant.remaining equals its account's entries, within 0..amount",
        f"""
        SELECT 'grant ' || g.id, g.remaining::text, COALESCE(b.credit_minus_debit, 0)::text
        FROM wallets_creditgrant g LEFT JOIN ({ACCOUNT_BALANCES}) b ON b.account_id = g.account_id
        WHERE g.remaining <> COALESCE(b.credit_minus_debit, 0)
           OR g.remaining < 0 OR g.remaining > g.amount
        """,
    ),
    (
        "only active or exhausted grants hold credit; exhausted ones hold none",
        """
        SELECT 'grant ' || id, status, remaining::text FROM wallets_creditgrant
        WHERE (status NOT IN ('active', 'exhausted') AND remaining <> 0)
           OR (status = 'exhausted' AND remaining <> 0)
        """,
    ),
    (
        "wallet.credit_balance and restricted_balance equal the remaining of its live grants",
        """
        SELECT 'wallet ' || w.id,
               w.credit_balance::text || ' / ' || w.restricted_balance::text,
               COALESCE(SUM(g.remaining), 0)::text || ' / ' ||
               COALESCE(SUM(g.remaining) FILTER (WHERE g.restricted), 0)::text
        FROM wallets_wallet w
        LEFT JOIN wallets_creditgrant g ON g.wallet_id = w.id AND g.status IN ('active', 'exhausted')
        GROUP BY w.id
        HAVING w.credit_balance <> COALESCE(SUM(g.remaining), 0)
            OR w.restricted_balance <> COALESCE(SUM(g.remaining) FILTER (WHERE g.restricted), 0)
        """,
    ),
    (
        "wallet.debt equals its receivable account (debits minus credits)",
        f"""
        SELECT 'wallet ' || w.id, w.debt::text, (-COALESCE(b.credit_minus_debit, 0))::text
        FROM wallets_wallet w LEFT JOIN ({ACCOUNT_BALANCES}) b ON b.account_id = w.receivable_account_id
        WHERE w.debt <> -COALESCE(b.credit_minus_debit, 0)
        """,
    ),
    (
        "each usage draw-down's lots equal what it took from each grant",
        """
        WITH taken AS (
            SELECT e.transaction_id, g.id AS grant_id, SUM(e.amount) AS amount
            FROM wallets_entry e
            JOIN wallets_ledgertransaction t ON t.id = e.transaction_id AND t.kind = 'usage'
            JOIN wallets_creditgrant g ON g.account_id = e.debit_account_id
            GROUP BY 1, 2
        ), lots AS (
            SELECT l.transaction_id, l.grant_id, SUM(l.amount) AS amount
            FROM wallets_grantconsumption l
            JOIN wallets_ledgertransaction t ON t.id = l.transaction_id AND t.kind = 'usage'
            GROUP BY 1, 2
        )
        SELECT 'transaction ' || COALESCE(taken.transaction_id, lots.transaction_id)
                   || ' grant ' || COALESCE(taken.grant_id, lots.grant_id),
               COALESCE(lots.amount, 0)::text, COALESCE(taken.amount, 0)::text
        FROM taken FULL JOIN lots USING (transaction_id, grant_id)
        WHERE COALESCE(taken.amount, 0) <> COALESCE(lots.amount, 0)
        """,
    ),
    (
        "an idempotency key was used once",
        """
        SELECT 'key ' || idempotency_key, COUNT(*)::text, '1'
        FROM wallets_ledgertransaction GROUP BY idempotency_key HAVING COUNT(*) > 1
        """,
    ),
]


def find_problems() -> list[str]:
    """Every broken invariant, one line each: what, the cached value, the ledger's."""
    problems: list[str] = []
    with connection.cursor() as cursor:
        for rule, sql in CHECKS:
            cursor.execute(sql)
            for subject, cached, expected in cursor.fetchall():
                problems.append(f"{rule}: {subject}: recorded {cached}, ledger says {expected}")
    return problems


def wallets_over_limit() -> list[str]:
    """Wallets owing more than their limit allows *now*. Not a ledger error: debt is
    only ever taken on within the limit (draw_down refuses the rest), but a
    temporary increase that lapsed, or a limit change, can leave debt above the
    current limit; such a wallet can draw nothing more until it pays. Reported so
    finance sees them."""
    now = timezone.now()
    over = []
    for wallet in (
        Wallet.objects.filter(debt__gt=0).select_related("customer").iterator(chunk_size=1000)
    ):
        limit = wallet.effective_credit_limit(now)
        if wallet.debt > limit:
            over.append(
                f"wallet {wallet.pk} ({wallet.customer}): debt {wallet.debt}, limit now {limit}"
            )
    return over


def ledger_totals() -> dict[str, Decimal | int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT (SELECT COUNT(*) FROM wallets_ledgertransaction),
                      (SELECT COUNT(*) FROM wallets_entry),
                      (SELECT COUNT(*) FROM wallets_wallet),
                      (SELECT COUNT(*) FROM wallets_creditgrant)"""
        )
        transactions, entries, wallets, grants = cursor.fetchone()
    return {"transactions": transactions, "entries": entries, "wallets": wallets, "grants": grants}
