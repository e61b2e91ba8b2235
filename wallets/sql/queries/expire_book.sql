-- Under the wallet locks (a new statement sees every change committed before them):
-- re-check each grant, then book one expiry transaction per grant (the same key and
-- request fingerprint `expire_grant` uses, so the two paths never both book), one
-- `grant → breakage` entry per grant with credit left, expire the grants and move the
-- wallets' cached balances — five statements' work in one. `balance_after` is the
-- wallet's running balance: a wallet's grants are booked in id order, and the
-- transaction ids are drawn in that order, each transaction showing the balance
-- after it. Every row is found by its primary key or a unique index: no join
-- between the statement's parts, whatever the planner estimates.
WITH breakage AS (
    SELECT currency, id FROM wallets_account WHERE kind = 'system' AND code = 'breakage'
),
due AS (
    SELECT ordered.*, nextval(%(tx_sequence)s::regclass) AS tx_id
    FROM (
        SELECT g.id, g.wallet_id, g.account_id, g.remaining, g.name, g.expires_at, w.currency,
               w.credit_balance - SUM(g.remaining) OVER running AS balance_after,
               w.restricted_balance
                   - SUM(CASE WHEN g.restricted THEN g.remaining ELSE 0 END) OVER running
                   AS restricted_after,
               w.debt AS debt_after
        FROM unnest(%(ids)s::bigint[]) AS batch (id)
        JOIN wallets_creditgrant g ON g.id = batch.id
        -- the wallet by its primary key (OFFSET 0 keeps the planner from turning
        -- this into a hash join over a scan of every wallet, once per batch)
        CROSS JOIN LATERAL (
            SELECT w.currency, w.credit_balance, w.restricted_balance, w.debt
            FROM wallets_wallet w WHERE w.id = g.wallet_id OFFSET 0
        ) w
        -- an index probe per grant, whatever the planner thinks of the table's size
        LEFT JOIN LATERAL (
            SELECT 1 AS found FROM wallets_ledgertransaction t
            WHERE t.idempotency_key = 'expire:grant:' || g.id LIMIT 1
        ) booked ON true
        WHERE g.status IN ('active', 'exhausted', 'pending') AND g.expires_at <= %(at)s
          AND booked.found IS NULL
        WINDOW running AS (PARTITION BY g.wallet_id ORDER BY g.id ROWS UNBOUNDED PRECEDING)
        ORDER BY g.wallet_id, g.id
    ) ordered
),
tx AS (
    INSERT INTO wallets_ledgertransaction
        (id, kind, wallet_id, idempotency_key, request_hash, effective_at, created_at, actor,
         actor_user_id, memo, reference, amount, currency, balance_after, restricted_after,
         debt_after, metadata)
    SELECT d.tx_id, 'expiry', d.wallet_id, 'expire:grant:' || d.id,
           encode(sha256(convert_to('["expire", {"grant": ' || d.id || '}]', 'UTF8')), 'hex'),
           d.expires_at, %(now)s, %(actor)s, NULL, left(d.name || ' expired', 500), '',
           d.remaining, d.currency, d.balance_after, d.restricted_after, d.debt_after,
           jsonb_build_object('grant', d.id)
    FROM due d
),
entries AS (
    INSERT INTO wallets_entry (transaction_id, debit_account_id, credit_account_id, amount, currency)
    SELECT d.tx_id, d.account_id, b.id, d.remaining, d.currency
    FROM due d
    -- every currency has its breakage account (open_wallet makes it); were one
    -- missing, the NULL would fail the statement rather than lose an entry
    LEFT JOIN breakage b ON b.currency = d.currency
    WHERE d.remaining > 0
),
expired AS (
    UPDATE wallets_creditgrant g
    SET status = 'expired', remaining = 0, ended_at = d.expires_at
    FROM due d WHERE g.id = d.id
),
balances AS (
    UPDATE wallets_wallet w
    SET credit_balance = last.balance_after, restricted_balance = last.restricted_after,
        updated_at = %(now)s
    FROM (SELECT DISTINCT ON (wallet_id) wallet_id, balance_after, restricted_after
          FROM due ORDER BY wallet_id, id DESC) last
    WHERE w.id = last.wallet_id
)
SELECT COUNT(*), COALESCE(SUM(remaining), 0), COALESCE(array_agg(id), '{}') FROM due
