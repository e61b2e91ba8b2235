"""The draw-down as one PostgreSQL function, so a usage event costs one round trip.

`wallets.services.draw_down` and `draw_down_batch` are its only callers; the rules
are documented there. Why a function: the draw-down must read the grants *after*
the wallet row is locked (a statement that locks and reads at once would read the
grants from a snapshot taken before the lock was granted, and could spend credit
another transaction just spent). Inside a PL/pgSQL function each statement takes a
fresh snapshot, so "lock, then read and write" is safe in a single call, and
PL/pgSQL caches each statement's plan for the life of the connection.

A batch locks the wallet once and books each event in turn (each with its own
idempotency key, refused on its own if funds run out).

To change it: write a new migration with CREATE OR REPLACE FUNCTION.
"""

from django.db import migrations

FUNCTION = r"""
CREATE OR REPLACE FUNCTION wallets_draw_down(
    p_wallet_id bigint,
    p_events jsonb,          -- [{ord, amount, item_id, dimensions, at, key, request_hash, memo, reference, metadata}]
    p_actor text,
    p_actor_user_id integer,
    p_now timestamptz
) RETURNS TABLE (
    out_ord integer,
    out_outcome text,        -- ok | insufficient | replay | no_wallet
    out_tx_id bigint,
    out_covered numeric,
    out_balance_after numeric,
    out_debt_after numeric,
    out_lots json,           -- [[grant id, "amount"], ...]
    out_debt_room numeric,
    out_currency text,
    out_earlier_hash text
) LANGUAGE plpgsql AS $fn$
DECLARE
    w wallets_wallet%ROWTYPE;
    ev record;
    v_revenue bigint;
    v_room numeric;
    v_earlier_id bigint;
    v_earlier_hash text;
    v_restricted_after numeric;
BEGIN
    -- 1. Lock the wallet: every change to its balances happens under this lock.
    -- (A locked row is read in its latest version; `w` is then kept current below.)
    SELECT * INTO w FROM wallets_wallet WHERE id = p_wallet_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 'no_wallet'::text, NULL::bigint, NULL::numeric, NULL::numeric,
                            NULL::numeric, NULL::json, NULL::numeric, NULL::text, NULL::text;
        RETURN;
    END IF;

    FOR ev IN
        SELECT * FROM jsonb_to_recordset(p_events) AS e(
            ord integer, amount numeric, item_id bigint, dimensions jsonb, at timestamptz,
            key text, request_hash text, memo text, reference text, metadata jsonb)
        ORDER BY ord
    LOOP
        IF v_revenue IS NULL THEN
            SELECT a.id INTO v_revenue FROM wallets_account a
            WHERE a.kind = 'system' AND a.code = 'usage_revenue' AND a.currency = w.currency;
        END IF;
        -- 3. How much more debt the credit limit allows: the permanent limit plus a
        -- temporary increase while it is valid, less the debt (as Wallet.available_funds counts the limit).
        v_room := GREATEST(0, w.credit_limit
            + CASE WHEN w.temporary_credit_increase > 0 AND ev.at < w.temporary_increase_valid_until
                   THEN w.temporary_credit_increase ELSE 0 END
            - w.debt);

        -- 4. Pick the grants that apply, in draw-down order (keep in step with
        -- wallets.services.draw_order), take what the amount needs from each, and
        -- write the transaction, entries, lots, grants and wallet. What the grants
        -- cannot cover becomes debt if the limit allows; otherwise nothing is written.
        WITH usable AS (
            SELECT g.id, g.account_id, g.remaining, g.restricted,
                   SUM(g.remaining) OVER draw_order - g.remaining AS before
            FROM wallets_creditgrant g
            WHERE g.wallet_id = p_wallet_id AND g.status = 'active' AND g.remaining > 0
              AND g.effective_at <= ev.at AND (g.expires_at IS NULL OR g.expires_at > ev.at)
              AND (g.condition_item_id IS NULL OR g.condition_item_id = ev.item_id)
              AND g.condition_dimensions <@ ev.dimensions
            WINDOW draw_order AS (
                ORDER BY g.specificity DESC, g.priority, g.expires_at NULLS LAST,
                         g.kind <> 'free', g.id
                ROWS UNBOUNDED PRECEDING)
        ),
        takes AS (
            SELECT u.id, u.account_id, u.restricted, LEAST(u.remaining, ev.amount - u.before) AS take
            FROM usable u WHERE u.before < ev.amount
        ),
        decision AS (
            SELECT COALESCE(SUM(t.take), 0) AS covered,
                   COALESCE(SUM(t.take) FILTER (WHERE t.restricted), 0) AS covered_restricted
            FROM takes t
        ),
        tx AS (
            INSERT INTO wallets_ledgertransaction
                (kind, wallet_id, idempotency_key, request_hash, effective_at, created_at, actor,
                 actor_user_id, memo, reference, amount, currency, balance_after, restricted_after,
                 debt_after, metadata)
            SELECT 'usage', p_wallet_id, ev.key, ev.request_hash, ev.at, p_now, p_actor,
                   p_actor_user_id, ev.memo, ev.reference, ev.amount, w.currency,
                   w.credit_balance - d.covered, w.restricted_balance - d.covered_restricted,
                   w.debt + ev.amount - d.covered, ev.metadata
            FROM decision d
            WHERE ev.amount - d.covered <= v_room
            -- 2. A key seen before books nothing (the unique index decides, also
            -- against a concurrent call on another wallet); answered below.
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id, balance_after, restricted_after, debt_after
        ),
        entries AS (
            INSERT INTO wallets_entry (transaction_id, debit_account_id, credit_account_id, amount, currency)
            SELECT tx.id, t.account_id, v_revenue, t.take, w.currency FROM tx, takes t
            UNION ALL
            SELECT tx.id, w.receivable_account_id, v_revenue, ev.amount - d.covered, w.currency
            FROM tx, decision d WHERE d.covered < ev.amount
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
        SELECT ev.ord, CASE WHEN tx.id IS NULL THEN 'insufficient' ELSE 'ok' END,
               tx.id, d.covered, tx.balance_after, tx.debt_after,
               (SELECT json_agg(json_build_array(t.id, t.take::text)) FROM takes t),
               v_room, w.currency::text, NULL::text, tx.restricted_after
        INTO out_ord, out_outcome, out_tx_id, out_covered, out_balance_after, out_debt_after,
             out_lots, out_debt_room, out_currency, out_earlier_hash, v_restricted_after
        FROM decision d LEFT JOIN tx ON true;
        IF out_tx_id IS NULL THEN
            -- Nothing inserted: refused, or the key was used before (then replay it,
            -- even if the wallet could not afford the charge today).
            SELECT t.id, t.request_hash INTO v_earlier_id, v_earlier_hash
            FROM wallets_ledgertransaction t WHERE t.idempotency_key = ev.key;
            IF FOUND THEN
                out_outcome := 'replay';
                out_tx_id := v_earlier_id;
                out_earlier_hash := v_earlier_hash;
            END IF;
        END IF;
        IF out_outcome = 'ok' THEN  -- the next event of the batch sees this one
            w.credit_balance := out_balance_after;
            w.restricted_balance := v_restricted_after;
            w.debt := out_debt_after;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;
"""

DROP = "DROP FUNCTION IF EXISTS wallets_draw_down(bigint, jsonb, text, integer, timestamptz);"


class Migration(migrations.Migration):
    dependencies = [("wallets", "0002_immutable_entries")]

    operations = [migrations.RunSQL(FUNCTION, reverse_sql=DROP)]
