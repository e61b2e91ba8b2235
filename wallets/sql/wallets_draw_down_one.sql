CREATE OR REPLACE FUNCTION wallets_draw_down_one(
    p_wallet_id bigint, p_amount numeric, p_item_id bigint, p_dimensions jsonb,
    p_at timestamptz, p_key text, p_request_hash text, p_memo text, p_reference text,
    p_metadata jsonb, p_actor text, p_actor_user_id integer, p_now timestamptz,
    -- the same answer row as one row of wallets_draw_down
    OUT out_ord integer, OUT out_outcome text, OUT out_tx_id bigint, OUT out_covered numeric,
    OUT out_balance_after numeric, OUT out_debt_after numeric, OUT out_lots json,
    OUT out_debt_room numeric, OUT out_currency text, OUT out_earlier_hash text,
    OUT out_restricted_after numeric, OUT out_credit_limit numeric, OUT out_available numeric
) LANGUAGE plpgsql AS $fn$
DECLARE
    w wallets_wallet%ROWTYPE;
    v_spent_now numeric;
BEGIN
    out_ord := 0;
    -- 1. Lock the wallet; the statement below runs after the lock is granted, with
    -- a fresh snapshot (why this is a function: migration 0003).
    SELECT * INTO w FROM wallets_wallet WHERE id = p_wallet_id FOR UPDATE;
    IF NOT FOUND THEN
        out_outcome := 'no_wallet';
        RETURN;
    END IF;
    out_currency := w.currency;
    out_restricted_after := w.restricted_balance;
    -- "now" for the warning trigger (wallets_balance_warnings)
    PERFORM set_config('wallets.now', p_now::text, true);
    -- 3. Room for debt under the limit in force now (as in wallets_draw_down): the
    -- event's timestamp p_at only decides which grants were eligible.
    out_credit_limit := wallets_effective_credit_limit(
        w.credit_limit, w.temporary_credit_increase, w.temporary_increase_valid_until, p_now);
    out_debt_room := GREATEST(0, out_credit_limit - w.debt);
    out_available := wallets_spendable_credit(p_wallet_id, p_now) + out_credit_limit - w.debt;

    -- 4. wallets_draw_down's booking statement for one event (keep in step).
    WITH usable AS (
        SELECT * FROM wallets_usable_grants(p_wallet_id, p_item_id, p_dimensions, p_at, p_now)
    ),
    takes AS (
        SELECT u.id, u.account_id, u.restricted, u.spendable_now,
               LEAST(u.remaining, p_amount - u.before) AS take
        FROM usable u WHERE u.before < p_amount
    ),
    decision AS (
        SELECT COALESCE(SUM(t.take), 0) AS covered,
               COALESCE(SUM(t.take) FILTER (WHERE t.restricted), 0) AS covered_restricted,
               COALESCE(SUM(t.take) FILTER (WHERE t.spendable_now), 0) AS covered_spendable
        FROM takes t
    ),
    revenue AS (
        SELECT a.id FROM wallets_account a
        WHERE a.kind = 'system' AND a.code = 'usage_revenue' AND a.currency = w.currency
    ),
    tx AS (
        INSERT INTO wallets_ledgertransaction
            (kind, wallet_id, idempotency_key, request_hash, effective_at, created_at, actor,
             actor_user_id, memo, reference, amount, currency, balance_after, restricted_after,
             debt_after, metadata)
        SELECT 'usage', p_wallet_id, p_key, p_request_hash, p_at, p_now, p_actor,
               p_actor_user_id, p_memo, p_reference, p_amount, w.currency,
               w.credit_balance - d.covered, w.restricted_balance - d.covered_restricted,
               w.debt + p_amount - d.covered, p_metadata
        FROM decision d
        WHERE p_amount - d.covered <= out_debt_room
        -- 2. A key seen before books nothing (answered below).
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, balance_after, restricted_after, debt_after
    ),
    entries AS (
        INSERT INTO wallets_entry (transaction_id, debit_account_id, credit_account_id, amount, currency)
        SELECT tx.id, t.account_id, r.id, t.take, w.currency FROM tx, takes t, revenue r
        UNION ALL
        SELECT tx.id, w.receivable_account_id, r.id, p_amount - d.covered, w.currency
        FROM tx, decision d, revenue r WHERE d.covered < p_amount
    ),
    lots AS (
        INSERT INTO wallets_grantconsumption (transaction_id, grant_id, amount)
        SELECT tx.id, t.id, t.take FROM tx, takes t
    ),
    grant_update AS (
        UPDATE wallets_creditgrant g
        SET remaining = g.remaining - t.take,
            status = CASE WHEN g.remaining = t.take THEN 'exhausted' ELSE g.status END
        FROM tx, takes t WHERE g.id = t.id
    ),
    wallet_update AS (
        UPDATE wallets_wallet uw
        SET credit_balance = tx.balance_after, restricted_balance = tx.restricted_after,
            debt = tx.debt_after, updated_at = p_now
        FROM tx WHERE uw.id = p_wallet_id
    )
    SELECT CASE WHEN tx.id IS NULL THEN 'insufficient' ELSE 'ok' END,
           tx.id, d.covered, tx.balance_after, tx.debt_after,
           (SELECT json_agg(json_build_array(t.id, t.take::text)) FROM takes t),
           COALESCE(tx.restricted_after, w.restricted_balance),
           CASE WHEN tx.id IS NULL THEN 0 ELSE d.covered_spendable + p_amount - d.covered END
    INTO out_outcome, out_tx_id, out_covered, out_balance_after, out_debt_after, out_lots,
         out_restricted_after, v_spent_now
    FROM decision d LEFT JOIN tx ON true;
    out_available := out_available - v_spent_now;
    IF out_tx_id IS NULL THEN
        -- Refused, or the key was used before: then replay it.
        SELECT t.id, t.request_hash INTO out_tx_id, out_earlier_hash
        FROM wallets_ledgertransaction t WHERE t.idempotency_key = p_key;
        IF FOUND THEN
            out_outcome := 'replay';
        END IF;
    END IF;
END
$fn$;
