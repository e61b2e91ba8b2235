"""The checks: one SQL statement per invariant, each returning the rows that break
it (`wallets.ledger_check` runs them in one snapshot)."""

from __future__ import annotations

from dataclasses import dataclass

# How many offending rows each check prints (it says when there are more).
SHOWN_PER_CHECK = 50

FUNDING = ("cash", "psp_clearing", "promotions", "refill_cards")

# Which flows (debit account → credit account) each kind of transaction books:
# ARCHITECTURE.md "Money flows", as `wallets.services` books them. An account is
# named by its kind (grant, receivable) or, for a system account, by its code.
FLOWS: dict[str, set[tuple[str, str]]] = {
    # issued or activated: funder → grant, and the new credit pays debt first
    "grant": {(f, "grant") for f in FUNDING} | {("grant", "receivable")},
    "activation": {(f, "grant") for f in FUNDING} | {("grant", "receivable")},
    "usage": {("grant", "usage_revenue"), ("receivable", "usage_revenue")},
    "expiry": {("grant", "breakage")},
    # back to its funder; transferred credit back to the sender's grant, and on to
    # breakage (or its funder) when that grant has ended since
    "void": {("grant", f) for f in FUNDING} | {("grant", "grant"), ("grant", "breakage")},
    # sender's grants → the receiver's new grant, which pays the receiver's debt first
    "transfer": {("grant", "grant"), ("grant", "receivable")},
    "debt_payment": {("cash", "receivable"), ("psp_clearing", "receivable")},
    "debt_settlement": {("grant", "receivable")},
    "rounding": {("receivable", "rounding"), ("rounding", "receivable")},
    # a refunded payment leaves its funder: from the unused credit, from breakage for
    # what expired unused, and from the receivable for used credit that becomes debt
    "refund": {(src, f) for f in FUNDING for src in ("grant", "breakage", "receivable")},
}


def _reversal_flows(kind: str) -> set[tuple[str, str]]:
    """A reversal swaps every entry of the original; credit returned to a grant that
    has ended goes on to breakage or its funder; debt it would re-open beyond what
    is still owed becomes a new grant (a credit on account) instead."""
    original = FLOWS[kind]
    return (
        {(credit, debit) for debit, credit in original}
        | {("grant", "breakage")}
        | {("grant", f) for f in FUNDING}
        | {(credit, "grant") for debit, credit in original if debit == "receivable"}
    )


def _flows_values() -> str:
    rows = sorted(
        [(kind, d, c) for kind, flows in FLOWS.items() for d, c in flows]
        + [(f"reversal:{kind}", d, c) for kind in FLOWS for d, c in _reversal_flows(kind)]
    )
    return ",\n".join(f"('{kind}', '{debit}', '{credit}')" for kind, debit, credit in rows)


def _sides(entries: str = "wallets_entry") -> str:
    """Every entry twice: once on its debit side (sign -1), once on its credit side
    (+1), with the account on the other side. A grant or system account's balance
    is credits minus debits; a receivable's (what the customer owes) the opposite.
    `entries`: the table, or a subquery of some of its rows."""
    return f"""
    SELECT id AS entry_id, transaction_id, credit_account_id AS account_id,
           debit_account_id AS other_account_id, amount, 1 AS sign
    FROM {entries} e
    UNION ALL
    SELECT id, transaction_id, debit_account_id, credit_account_id, amount, -1
    FROM {entries} e
"""


SIDES = _sides()

ACCOUNT_BALANCES = f"""
    SELECT account_id, SUM(sign * amount) AS credit_minus_debit
    FROM ({SIDES}) sides GROUP BY account_id
"""


def _grant_moves(entries: str = "wallets_entry") -> str:
    """Per transaction and grant: what the transaction moved out of the grant's
    account, into it, and (of what it moved out) on to breakage or a funder."""
    return f"""
    SELECT s.transaction_id, g.id AS grant_id,
           COALESCE(SUM(s.amount) FILTER (WHERE s.sign < 0), 0) AS moved_out,
           COALESCE(SUM(s.amount) FILTER (WHERE s.sign > 0), 0) AS moved_in,
           COALESCE(SUM(s.amount) FILTER (
               WHERE s.sign < 0 AND o.kind = 'system'
                 AND o.code IN ('breakage', {", ".join(f"'{f}'" for f in FUNDING)})), 0)
               AS passed_on
    FROM ({_sides(entries)}) s
    JOIN wallets_creditgrant g ON g.account_id = s.account_id
    JOIN wallets_account o ON o.id = s.other_account_id
    GROUP BY s.transaction_id, g.id
"""


GRANT_MOVES = _grant_moves()
# Only the entries of transactions that have lots (a few of the ledger's).
LOT_TRANSACTION_MOVES = _grant_moves(
    "(SELECT * FROM wallets_entry WHERE transaction_id IN "
    "(SELECT transaction_id FROM wallets_grantconsumption))"
)

# The entries of the transactions in the `crossing` CTE of the currency check.
CROSSING_SIDES = _sides(
    "(SELECT * FROM wallets_entry WHERE transaction_id IN (SELECT transaction_id FROM crossing))"
)

LOTS = """
    SELECT transaction_id, grant_id, SUM(amount) AS amount
    FROM wallets_grantconsumption GROUP BY transaction_id, grant_id
"""

ACCOUNT_NAME = "CASE a.kind WHEN 'system' THEN a.code ELSE a.kind END"


@dataclass(frozen=True)
class Check:
    rule: str
    sql: str  # the rows breaking the rule: (subject, recorded, what the ledger says)

    @property
    def query(self) -> str:
        return f"SELECT * FROM ({self.sql}) found LIMIT {SHOWN_PER_CHECK + 1}"


CHECKS: list[Check] = [
    Check(
        "every transaction balances per currency (Σ debited = Σ credited, by the accounts' "
        "currency)",
        f"""
        WITH crossing AS (
            -- a transaction can only be off in some currency if one of its entries
            -- joins two currencies: aggregate those transactions alone
            SELECT DISTINCT e.transaction_id FROM wallets_entry e
            JOIN wallets_account d ON d.id = e.debit_account_id
            JOIN wallets_account c ON c.id = e.credit_account_id
            WHERE d.currency <> c.currency
        )
        SELECT 'transaction ' || transaction_id || ' in ' || currency,
               'debited ' || COALESCE(SUM(amount) FILTER (WHERE sign < 0), 0),
               'credited ' || COALESCE(SUM(amount) FILTER (WHERE sign > 0), 0)
        FROM (SELECT s.transaction_id, a.currency, s.amount, s.sign
              FROM ({CROSSING_SIDES}) s
              JOIN wallets_account a ON a.id = s.account_id) per_side
        GROUP BY transaction_id, currency
        HAVING SUM(sign * amount) <> 0
        """,
    ),
    Check(
        "an entry's currency is its two accounts', its transaction's and its wallet's",
        """
        SELECT 'entry ' || e.id || ' of transaction ' || t.id, e.currency,
               'debit account ' || d.id || ' ' || d.currency || ', credit account ' || c.id
               || ' ' || c.currency || ', transaction ' || t.currency || ', wallet '
               || COALESCE(w.id || ' ' || w.currency, 'none')
        FROM wallets_entry e
        JOIN wallets_account d ON d.id = e.debit_account_id
        JOIN wallets_account c ON c.id = e.credit_account_id
        JOIN wallets_ledgertransaction t ON t.id = e.transaction_id
        LEFT JOIN wallets_wallet w ON w.id = t.wallet_id
        WHERE e.currency <> d.currency OR e.currency <> c.currency OR e.currency <> t.currency
           OR e.currency <> w.currency
        """,
    ),
    Check(
        "a transaction books only the flows of its kind (ARCHITECTURE.md money flows)",
        f"""
        SELECT 'entry ' || e.id || ' of transaction ' || t.id,
               {ACCOUNT_NAME.replace("a.", "d.")} || ' → '
                   || {ACCOUNT_NAME.replace("a.", "c.")},
               'no such flow in a ' || t.kind
                   || COALESCE(' of a ' || r.kind, '') || ' transaction'
        FROM wallets_entry e
        JOIN wallets_account d ON d.id = e.debit_account_id
        JOIN wallets_account c ON c.id = e.credit_account_id
        JOIN wallets_ledgertransaction t ON t.id = e.transaction_id
        LEFT JOIN wallets_ledgertransaction r ON r.id = t.reverses_id
        LEFT JOIN (VALUES {_flows_values()}) AS flow (kind, debit, credit)
          ON flow.kind = CASE WHEN t.kind = 'reversal' THEN 'reversal:' || r.kind ELSE t.kind END
         AND flow.debit = {ACCOUNT_NAME.replace("a.", "d.")}
         AND flow.credit = {ACCOUNT_NAME.replace("a.", "c.")}
        WHERE flow.kind IS NULL
        """,
    ),
    Check(
        "a transaction moves only its own wallet's accounts (a transfer: also the "
        "receiver's; a void of transferred credit: also the sender's) and system accounts",
        f"""
        SELECT 'entry ' || s.entry_id || ' of transaction ' || t.id,
               'account ' || a.id || ' of wallet ' || COALESCE(a.wallet_id::text, 'none'),
               'wallet ' || COALESCE(t.wallet_id::text, 'none')
               || COALESCE(' or ' || (t.metadata ->> 'target_wallet'), '')
               || COALESCE(' or ' || (r.metadata ->> 'target_wallet'), '')
               || COALESCE(' or ' || (t.metadata ->> 'returned_to_wallet'), '')
        FROM ({SIDES}) s
        JOIN wallets_account a ON a.id = s.account_id AND a.kind <> 'system'
        JOIN wallets_ledgertransaction t ON t.id = s.transaction_id
        LEFT JOIN wallets_ledgertransaction r ON r.id = t.reverses_id AND r.kind = 'transfer'
        WHERE a.wallet_id IS DISTINCT FROM t.wallet_id
          AND (t.kind <> 'transfer'
               OR a.wallet_id::text IS DISTINCT FROM t.metadata ->> 'target_wallet')
          AND (r.id IS NULL OR a.wallet_id::text IS DISTINCT FROM r.metadata ->> 'target_wallet')
          AND (t.kind <> 'void'
               OR a.wallet_id::text IS DISTINCT FROM t.metadata ->> 'returned_to_wallet')
        """,
    ),
    Check(
        "a grant, its account and its wallet agree (kind, wallet, currency); so do a wallet "
        "and its receivable; no account holds money without an owner",
        f"""
        SELECT 'grant ' || g.id,
               'account ' || a.id || ' (' || a.kind || ', wallet '
               || COALESCE(a.wallet_id::text, 'none') || ', ' || a.currency || '), grant in '
               || g.currency,
               'a grant account of wallet ' || w.id || ' in ' || w.currency
        FROM wallets_creditgrant g
        JOIN wallets_account a ON a.id = g.account_id
        JOIN wallets_wallet w ON w.id = g.wallet_id
        WHERE a.kind <> 'grant' OR a.wallet_id IS DISTINCT FROM g.wallet_id
           OR a.currency <> g.currency OR g.currency <> w.currency
        UNION ALL
        SELECT 'wallet ' || w.id,
               'receivable account ' || a.id || ' (' || a.kind || ', wallet '
               || COALESCE(a.wallet_id::text, 'none') || ', ' || a.currency || ')',
               'a receivable account of wallet ' || w.id || ' in ' || w.currency
        FROM wallets_wallet w JOIN wallets_account a ON a.id = w.receivable_account_id
        WHERE a.kind <> 'receivable' OR a.wallet_id IS DISTINCT FROM w.id
           OR a.currency <> w.currency
        UNION ALL
        SELECT 'transaction ' || t.id, t.currency, 'wallet ' || w.id || ' in ' || w.currency
        FROM wallets_ledgertransaction t JOIN wallets_wallet w ON w.id = t.wallet_id
        WHERE t.currency <> w.currency
        UNION ALL
        SELECT 'account ' || s.account_id,
               'a ' || MIN(o.kind) || ' account moved by entries '
                   || string_agg(s.entry_id::text, ', ' ORDER BY s.entry_id),
               'no grant or wallet owns it'
        FROM ({SIDES}) s
        JOIN (SELECT a.id, a.kind FROM wallets_account a
              LEFT JOIN wallets_creditgrant g ON g.account_id = a.id
              LEFT JOIN wallets_wallet w ON w.receivable_account_id = a.id
              WHERE a.kind <> 'system' AND g.id IS NULL AND w.id IS NULL) o
          ON o.id = s.account_id
        GROUP BY s.account_id
        """,
    ),
    Check(
        "grant.remaining equals its account's entries",
        f"""
        SELECT 'grant ' || g.id, g.remaining::text, COALESCE(b.credit_minus_debit, 0)::text
        FROM wallets_creditgrant g
        LEFT JOIN ({ACCOUNT_BALANCES}) b ON b.account_id = g.account_id
        WHERE g.remaining <> COALESCE(b.credit_minus_debit, 0)
        """,
    ),
    Check(
        "a grant's status agrees with its history: expired by an expiry, voided by a void, a refund in full "
        "or the reversal of its issue, an active one still holds credit",
        # (A reversed issue whose credit had all gone to pay debt leaves the grant
        # exhausted, not voided: nothing was left to take back.)
        """
        WITH ended AS (
            SELECT (metadata ->> 'grant')::bigint AS grant_id, kind
            FROM wallets_ledgertransaction WHERE kind IN ('expiry', 'void')
            UNION ALL
            -- a refund of the whole payment voids its grant
            SELECT g.id, 'refund in full'
            FROM wallets_ledgertransaction t
            JOIN wallets_creditgrant g ON g.id = (t.metadata ->> 'grant')::bigint
            WHERE t.kind = 'refund' AND (t.metadata ->> 'refunded_total')::numeric = g.amount
            UNION ALL
            SELECT (r.metadata ->> 'grant')::bigint, 'reversal of its issue'
            FROM wallets_ledgertransaction t
            JOIN wallets_ledgertransaction r ON r.id = t.reverses_id
                 AND r.kind IN ('grant', 'activation')
            UNION ALL
            SELECT received.grant_id, 'reversal of its issue'
            FROM wallets_ledgertransaction t
            JOIN wallets_ledgertransaction r ON r.id = t.reverses_id AND r.kind = 'transfer'
            CROSS JOIN LATERAL (
                SELECT value::bigint AS grant_id
                FROM jsonb_array_elements_text(r.metadata -> 'received_grants')
                UNION ALL  -- transfers booked before wallets 0010 named one grant
                SELECT (r.metadata ->> 'received_grant')::bigint
                WHERE r.metadata ? 'received_grant'
            ) received
        ),
        history AS (
            SELECT grant_id, string_agg(kind, ', ' ORDER BY kind) AS kinds,
                   bool_or(kind = 'expiry') AS expired,
                   bool_or(kind IN ('void', 'reversal of its issue', 'refund in full')) AS voided,
                   bool_or(kind IN ('expiry', 'void')) AS ended
            FROM ended GROUP BY grant_id
        )
        SELECT 'grant ' || g.id, g.status || ' holding ' || g.remaining,
               COALESCE(h.kinds, 'no expiry, void or reversal of its issue')
        FROM wallets_creditgrant g LEFT JOIN history h ON h.grant_id = g.id
        WHERE (g.status = 'expired' AND h.expired IS NOT TRUE)
           OR (g.status = 'voided' AND h.voided IS NOT TRUE)
           OR (g.status IN ('pending', 'active', 'exhausted') AND h.ended)
           OR (g.status = 'active' AND g.remaining = 0)
        """,
    ),
    Check(
        "wallet.credit_balance / restricted_balance equal the remaining of its live grants",
        """
        SELECT 'wallet ' || w.id,
               w.credit_balance::text || ' / ' || w.restricted_balance::text,
               COALESCE(SUM(g.remaining), 0)::text || ' / ' ||
               COALESCE(SUM(g.remaining) FILTER (WHERE g.restricted), 0)::text
        FROM wallets_wallet w
        LEFT JOIN wallets_creditgrant g
          ON g.wallet_id = w.id AND g.status IN ('active', 'exhausted')
        GROUP BY w.id
        HAVING w.credit_balance <> COALESCE(SUM(g.remaining), 0)
            OR w.restricted_balance <> COALESCE(SUM(g.remaining) FILTER (WHERE g.restricted), 0)
        """,
    ),
    Check(
        "wallet.debt equals its receivable account (debits minus credits)",
        f"""
        SELECT 'wallet ' || w.id, w.debt::text, (-COALESCE(b.credit_minus_debit, 0))::text
        FROM wallets_wallet w
        LEFT JOIN ({ACCOUNT_BALANCES}) b ON b.account_id = w.receivable_account_id
        WHERE w.debt <> -COALESCE(b.credit_minus_debit, 0)
        """,
    ),
    Check(
        "each transaction's balance_after / restricted_after / debt_after equal the running "
        "sum of its wallet's entries up to it",
        # Per (transaction, wallet): what it moved in the wallet's grant accounts, its
        # restricted ones and its receivable; the running sums over the wallet's
        # transactions in id order (a wallet's transactions are booked under its
        # lock, so their ids run in booking order) against what each recorded. A
        # transfer also records the receiver's balance and debt after it.
        f"""
        WITH moves AS (
            SELECT s.transaction_id, a.wallet_id,
                   SUM(s.sign * s.amount) FILTER (WHERE a.kind = 'grant') AS credit,
                   SUM(s.sign * s.amount) FILTER (WHERE g.restricted) AS restricted,
                   -SUM(s.sign * s.amount) FILTER (WHERE a.kind = 'receivable') AS debt
            FROM ({SIDES}) s
            JOIN wallets_account a ON a.id = s.account_id AND a.kind <> 'system'
            LEFT JOIN wallets_creditgrant g ON g.account_id = a.id
            GROUP BY s.transaction_id, a.wallet_id
        ),
        recorded AS (
            SELECT id AS transaction_id, wallet_id, true AS full_record,
                   balance_after, restricted_after, debt_after
            FROM wallets_ledgertransaction WHERE wallet_id IS NOT NULL
            UNION ALL
            SELECT id, (metadata ->> 'target_wallet')::bigint, false,
                   (metadata ->> 'target_balance_after')::numeric, NULL,
                   (metadata ->> 'target_debt_after')::numeric
            FROM wallets_ledgertransaction
            WHERE kind = 'transfer' AND metadata ? 'target_balance_after'
        ),
        running AS (
            SELECT COALESCE(m.transaction_id, r.transaction_id) AS transaction_id,
                   COALESCE(m.wallet_id, r.wallet_id) AS wallet_id,
                   r.transaction_id IS NOT NULL AS has_record, r.full_record,
                   r.balance_after, r.restricted_after, r.debt_after,
                   SUM(COALESCE(m.credit, 0)) OVER wallet_history AS credit_sum,
                   SUM(COALESCE(m.restricted, 0)) OVER wallet_history AS restricted_sum,
                   SUM(COALESCE(m.debt, 0)) OVER wallet_history AS debt_sum
            FROM moves m
            FULL JOIN recorded r
              ON r.transaction_id = m.transaction_id AND r.wallet_id = m.wallet_id
            WINDOW wallet_history AS (
                PARTITION BY COALESCE(m.wallet_id, r.wallet_id)
                ORDER BY COALESCE(m.transaction_id, r.transaction_id)
                ROWS UNBOUNDED PRECEDING)
        )
        SELECT 'transaction ' || transaction_id || ' of wallet ' || wallet_id,
               COALESCE(balance_after::text, 'none') || ' / '
                   || COALESCE(restricted_after::text, CASE WHEN full_record THEN 'none'
                                                           ELSE '-' END)
                   || ' / ' || COALESCE(debt_after::text, 'none'),
               credit_sum || ' / ' || restricted_sum || ' / ' || debt_sum
        FROM running
        WHERE has_record
          AND (balance_after IS DISTINCT FROM credit_sum
               OR debt_after IS DISTINCT FROM debt_sum
               OR (full_record AND restricted_after IS DISTINCT FROM restricted_sum))
        """,
    ),
    Check(
        "a lot belongs to a transaction that moved its grant's money (drawn by usage, "
        "settlement or transfer; returned by a reversal), never more than was moved",
        f"""
        SELECT 'lot of transaction ' || l.transaction_id || ' on grant ' || l.grant_id,
               l.amount::text || ' (' || t.kind || ', wallet '
                   || COALESCE(t.wallet_id::text, 'none') || ')',
               'moved out ' || COALESCE(m.moved_out, 0) || ', in ' || COALESCE(m.moved_in, 0)
                   || ' (grant of wallet ' || g.wallet_id || ')'
        FROM ({LOTS}) l
        JOIN wallets_ledgertransaction t ON t.id = l.transaction_id
        JOIN wallets_creditgrant g ON g.id = l.grant_id
        LEFT JOIN ({LOT_TRANSACTION_MOVES}) m
          ON m.transaction_id = l.transaction_id AND m.grant_id = l.grant_id
        WHERE (t.wallet_id IS DISTINCT FROM g.wallet_id
               AND (t.kind <> 'void'
                    OR g.wallet_id::text IS DISTINCT FROM t.metadata ->> 'returned_to_wallet'))
           OR (l.amount > 0 AND (t.kind NOT IN ('usage', 'debt_settlement', 'transfer')
                                 OR COALESCE(m.moved_out, 0) < l.amount))
           OR (l.amount < 0 AND (t.kind NOT IN ('reversal', 'void')
                                 OR COALESCE(m.moved_in, 0) < -l.amount))
        """,
    ),
    Check(
        "what usage, debt settlement and transfers take from their wallet's grants is "
        "recorded as lots, exactly",
        f"""
        WITH taken AS (
            SELECT e.transaction_id, g.id AS grant_id, SUM(e.amount) AS amount
            FROM wallets_entry e
            JOIN wallets_ledgertransaction t ON t.id = e.transaction_id
                 AND t.kind IN ('usage', 'debt_settlement', 'transfer')
            JOIN wallets_creditgrant g
              ON g.account_id = e.debit_account_id AND g.wallet_id = t.wallet_id
            GROUP BY e.transaction_id, g.id
        ), lots AS (
            SELECT l.* FROM ({LOTS}) l
            JOIN wallets_ledgertransaction t ON t.id = l.transaction_id
                 AND t.kind IN ('usage', 'debt_settlement', 'transfer')
        )
        SELECT 'transaction ' || COALESCE(taken.transaction_id, lots.transaction_id)
                   || ' grant ' || COALESCE(taken.grant_id, lots.grant_id),
               'lots ' || COALESCE(lots.amount, 0), 'taken ' || COALESCE(taken.amount, 0)
        FROM taken FULL JOIN lots USING (transaction_id, grant_id)
        WHERE COALESCE(taken.amount, 0) <> COALESCE(lots.amount, 0)
        """,
    ),
    Check(
        "a reversal's lots give back exactly the lots of the transaction it reverses",
        f"""
        WITH reversals AS (
            SELECT id, reverses_id FROM wallets_ledgertransaction WHERE reverses_id IS NOT NULL
        ), mirrored AS (
            SELECT r.id AS reversal_id, l.grant_id, -l.amount AS amount
            FROM reversals r JOIN ({LOTS}) l ON l.transaction_id = r.reverses_id
        ), given AS (
            SELECT r.id AS reversal_id, l.grant_id, l.amount
            FROM reversals r JOIN ({LOTS}) l ON l.transaction_id = r.id
        )
        SELECT 'reversal ' || reversal_id || ' grant ' || grant_id,
               'lots ' || COALESCE(given.amount, 0),
               'the reversed transaction''s lots negated: ' || COALESCE(mirrored.amount, 0)
        FROM mirrored FULL JOIN given USING (reversal_id, grant_id)
        WHERE COALESCE(given.amount, 0) <> COALESCE(mirrored.amount, 0)
        """,
    ),
    Check(
        "grant.remaining = its amount (once issued) − its lots − what expiry, void, debt "
        "and reversals took from it",
        # Movements a lot explains are counted from the lots; all others from the
        # entries. The first transaction that credits the grant issues it: what it
        # credits there is the amount issued, not a movement.
        f"""
        WITH moves AS ({GRANT_MOVES}),
        lots AS ({LOTS}),
        other AS (
            SELECT m.grant_id,
                   SUM(CASE WHEN l.amount IS NULL THEN m.moved_out - m.moved_in
                            ELSE m.passed_on END) AS took
            FROM moves m
            LEFT JOIN lots l ON l.transaction_id = m.transaction_id AND l.grant_id = m.grant_id
            GROUP BY m.grant_id
        ),
        issue AS (
            SELECT DISTINCT ON (grant_id) grant_id, moved_in AS credited
            FROM moves WHERE moved_in > 0 ORDER BY grant_id, transaction_id
        ),
        lots_per_grant AS (
            SELECT grant_id, SUM(amount) AS amount FROM wallets_grantconsumption GROUP BY 1
        ),
        expected AS (
            SELECT g.id, g.remaining, g.amount, g.activated_at,
                   CASE WHEN g.activated_at IS NULL THEN 0 ELSE g.amount END
                   - COALESCE(lg.amount, 0)
                   - (COALESCE(o.took, 0) + COALESCE(i.credited, 0)) AS remaining_by_history,
                   COALESCE(lg.amount, 0) AS lots,
                   COALESCE(o.took, 0) + COALESCE(i.credited, 0) AS took
            FROM wallets_creditgrant g
            LEFT JOIN other o ON o.grant_id = g.id
            LEFT JOIN issue i ON i.grant_id = g.id
            LEFT JOIN lots_per_grant lg ON lg.grant_id = g.id
        )
        SELECT 'grant ' || id, remaining::text,
               remaining_by_history || ' (amount ' || amount
               || CASE WHEN activated_at IS NULL THEN ', never activated' ELSE '' END
               || ', lots ' || lots || ', other ' || took || ')'
        FROM expected WHERE remaining <> remaining_by_history
        """,
    ),
    Check(
        "usage never took debt above the credit limit in force when it was booked "
        "(created_at; CreditLimitChange history, temporary increase while valid)",
        # The limit history per wallet as periods: before the first change (its old
        # values), between changes (each change's new values), and since the last
        # change, or always if none, the wallet's own current values.
        """
        WITH changes AS (
            SELECT c.*, ROW_NUMBER() OVER (PARTITION BY wallet_id ORDER BY changed_at, id) AS n,
                   LEAD(changed_at) OVER (PARTITION BY wallet_id ORDER BY changed_at, id)
                       AS next_at
            FROM wallets_creditlimitchange c
        ),
        periods AS (
            SELECT wallet_id, '-infinity'::timestamptz AS since, changed_at AS until,
                   old_limit AS permanent, old_temporary_increase AS temporary, valid_until
            FROM changes WHERE n = 1
            UNION ALL
            SELECT wallet_id, changed_at, next_at, new_limit, new_temporary_increase,
                   valid_until
            FROM changes WHERE next_at IS NOT NULL
            UNION ALL
            SELECT w.id, COALESCE(last.changed_at, '-infinity'), 'infinity', w.credit_limit,
                   w.temporary_credit_increase, w.temporary_increase_valid_until
            FROM wallets_wallet w
            LEFT JOIN (SELECT wallet_id, MAX(changed_at) AS changed_at FROM changes
                       GROUP BY wallet_id) last ON last.wallet_id = w.id
        ),
        debt_taken AS (
            SELECT DISTINCT e.transaction_id
            FROM wallets_entry e
            JOIN wallets_account a ON a.id = e.debit_account_id AND a.kind = 'receivable'
        )
        SELECT 'transaction ' || t.id || ' of wallet ' || t.wallet_id
                   || ' at ' || to_char(t.created_at AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'debt after ' || t.debt_after,
               'limit then ' || wallets_effective_credit_limit(
                   p.permanent, p.temporary, p.valid_until, t.created_at)
        FROM wallets_ledgertransaction t
        JOIN debt_taken d ON d.transaction_id = t.id
        JOIN periods p ON p.wallet_id = t.wallet_id
             AND t.created_at >= p.since AND t.created_at < p.until
        WHERE t.kind = 'usage'
          AND t.debt_after > wallets_effective_credit_limit(
              p.permanent, p.temporary, p.valid_until, t.created_at)
        """,
    ),
]
