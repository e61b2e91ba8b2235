-- One batch: the next due grants in (expires_at, id) order after the cursor, and
-- their wallets locked in id order (LockRows above the sort: the locks are taken in
-- that order, as everywhere else). Returns the ids in walking order and the cursor.
-- A sweep on several connections gives each its own wallets (`partition` in wallets/services/expiry.py replaces the /*partition*/ marker).
WITH due AS (
    SELECT id, wallet_id, expires_at FROM wallets_creditgrant
    WHERE status IN ('active', 'exhausted', 'pending') AND expires_at <= %(at)s
      AND (expires_at, id) > (%(after_at)s, %(after_id)s) /*partition*/
    ORDER BY expires_at, id
    LIMIT %(limit)s
),
locked AS (
    -- by primary key: `= ANY (ARRAY(...))`, not `IN (SELECT ...)`, which the planner
    -- turns into a hash join over a scan of every wallet (200,000 wallets: ~25 ms a batch)
    SELECT id FROM wallets_wallet WHERE id = ANY (ARRAY(SELECT DISTINCT wallet_id FROM due))
    ORDER BY id FOR UPDATE
)
SELECT array_agg(id ORDER BY expires_at, id), max(expires_at), (SELECT count(*) FROM locked)
FROM due
