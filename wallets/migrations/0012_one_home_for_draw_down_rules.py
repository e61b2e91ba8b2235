"""One home for the draw-down order and eligibility in SQL (issue 13, layout).

The three draw-down statements (the batch's fast path and loop in
`wallets_draw_down`, and `wallets_draw_down_one`) each spelled out which grants an
event may draw from and in what order. Now they call one function:

- `wallets_grant_applies(condition item, condition dimensions, item, dimensions)`:
  a grant's condition lets the event draw from it;
- `wallets_usable_grants(wallet, item, dimensions, at, now)`: the grants an event
  at `at` draws from, in draw-down order, with the credit before each (a plain SQL
  query, inlined by PostgreSQL into the statements that call it).

The fast path's guards use the same two rules. Nothing else changes: the same
grants in the same order, the same answers (tests/wallets/test_draw_down.py and
test_rules_differential.py). The live versions are in wallets/sql/; these are
frozen copies. The reverse restores migration 0010's functions.
"""

import importlib

from django.db import migrations

V0010 = importlib.import_module("wallets.migrations.0010_money_in_time")

RULES = r"""
-- A grant's condition lets a usage event draw from it: no product item or the
-- event's, and every dimension it names with the event's value (eligibility by
-- what was used; `wallets_grant_in_force` is eligibility by time).
CREATE OR REPLACE FUNCTION wallets_grant_applies(
    p_condition_item_id bigint, p_condition_dimensions jsonb, p_item_id bigint, p_dimensions jsonb
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (p_condition_item_id IS NULL OR p_condition_item_id = p_item_id)
           AND p_condition_dimensions <@ p_dimensions
$$;

-- The grants a usage event for (p_item_id, p_dimensions) at p_at draws from, in
-- draw-down order, each with the credit of the grants before it: the one home of
-- the draw-down order (most specific condition first, then lower priority, then
-- earliest expiry with none last, then free before paid, then oldest) and of
-- eligibility (active with credit left, in force at p_at, condition applies).
-- `spendable_now`: the grant's credit counts in the available funds at p_now
-- (unrestricted and in force then). A plain SQL query, which PostgreSQL inlines
-- into the draw-down statements that call it. Python twin: `draw_order` in
-- wallets/services/drawdown.py (tests/wallets/test_rules_differential.py).
CREATE OR REPLACE FUNCTION wallets_usable_grants(
    p_wallet_id bigint, p_item_id bigint, p_dimensions jsonb, p_at timestamptz,
    p_now timestamptz
) RETURNS TABLE (
    id bigint, account_id bigint, remaining numeric, restricted boolean,
    spendable_now boolean, before numeric
) LANGUAGE sql STABLE AS $$
    SELECT g.id, g.account_id, g.remaining, g.restricted,
           NOT g.restricted AND wallets_grant_in_force(g.effective_at, g.expires_at, p_now),
           SUM(g.remaining) OVER draw_order - g.remaining
    FROM wallets_creditgrant g
    WHERE g.wallet_id = p_wallet_id AND g.status = 'active' AND g.remaining > 0
      AND wallets_grant_in_force(g.effective_at, g.expires_at, p_at)
      AND wallets_grant_applies(g.condition_item_id, g.condition_dimensions, p_item_id,
                                p_dimensions)
    WINDOW draw_order AS (
        ORDER BY g.specificity DESC, g.priority, g.expires_at NULLS LAST,
                 g.kind <> 'free', g.id
        ROWS UNBOUNDED PRECEDING)
$$;
"""

DRAW_DOWN = r"""
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
    out_earlier_hash text,
    out_restricted_after numeric,
    out_credit_limit numeric, -- effective at p_now (Wallet.effective_credit_limit)
    out_available numeric    -- Wallet.available_funds(p_now) right after the event
) LANGUAGE plpgsql AS $fn$
DECLARE
    w wallets_wallet%ROWTYPE;
    ev record;
    v_revenue bigint;
    v_room numeric;
    v_limit numeric;
    v_spendable numeric;     -- wallets_spendable_credit(wallet, p_now), kept current
    v_spent_now numeric;
    v_earlier_id bigint;
    v_earlier_hash text;
    v_restricted_after numeric;
    -- the batch at a glance (fast path)
    v_n integer;
    v_keys text[];
    v_distinct_keys integer;
    v_items integer;
    v_dimension_sets integer;
    v_item bigint;
    v_dims jsonb;
    v_total numeric;
    v_first timestamptz;
    v_last timestamptz;
BEGIN
    -- 1. Lock the wallet: every change to its balances happens under this lock.
    -- (A locked row is read in its latest version; `w` is then kept current below.)
    SELECT * INTO w FROM wallets_wallet WHERE id = p_wallet_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 'no_wallet'::text, NULL::bigint, NULL::numeric, NULL::numeric,
                            NULL::numeric, NULL::json, NULL::numeric, NULL::text, NULL::text,
                            NULL::numeric, NULL::numeric, NULL::numeric;
        RETURN;
    END IF;
    -- "now" for the warning trigger (wallets_balance_warnings)
    PERFORM set_config('wallets.now', p_now::text, true);
    -- 3. The limit that allows debt is the one in force now, whatever the events'
    -- timestamps (those only decide which grants were eligible).
    v_limit := wallets_effective_credit_limit(w.credit_limit, w.temporary_credit_increase,
                                              w.temporary_increase_valid_until, p_now);
    v_spendable := wallets_spendable_credit(p_wallet_id, p_now);
    SELECT a.id INTO v_revenue FROM wallets_account a
    WHERE a.kind = 'system' AND a.code = 'usage_revenue' AND a.currency = w.currency;

    -- 5. Fast path: a batch of alike events that the grants pay in full (see the
    -- module docstring of migration 0007). Each check is a statement of its own, so
    -- it sees everything committed before the wallet lock was granted.
    IF jsonb_array_length(p_events) > 1 THEN
        SELECT count(*), array_agg(e.key), count(DISTINCT e.key),
               count(DISTINCT coalesce(e.item_id, -1)), count(DISTINCT e.dimensions),
               min(e.item_id), (array_agg(e.dimensions))[1], sum(e.amount), min(e.at), max(e.at)
        INTO v_n, v_keys, v_distinct_keys, v_items, v_dimension_sets, v_item, v_dims, v_total,
             v_first, v_last
        FROM jsonb_to_recordset(p_events) AS e(key text, item_id bigint, dimensions jsonb,
                                               amount numeric, at timestamptz);
        IF v_distinct_keys = v_n AND v_items = 1 AND v_dimension_sets = 1
           AND v_total <= (
               -- credit of the grants that apply from the first event to the last
               SELECT coalesce(sum(g.remaining), 0) FROM wallets_creditgrant g
               WHERE g.wallet_id = p_wallet_id AND g.status = 'active' AND g.remaining > 0
                 AND wallets_grant_in_force(g.effective_at, g.expires_at, v_first)
                 AND wallets_grant_in_force(g.effective_at, g.expires_at, v_last)
                 AND wallets_grant_applies(g.condition_item_id, g.condition_dimensions, v_item,
                                           v_dims))
           AND NOT EXISTS (
               -- no grant that applies starts or ends between the first event and the last
               SELECT 1 FROM wallets_creditgrant g
               WHERE g.wallet_id = p_wallet_id AND g.status = 'active' AND g.remaining > 0
                 AND wallets_grant_applies(g.condition_item_id, g.condition_dimensions, v_item,
                                           v_dims)
                 AND ((g.effective_at > v_first AND g.effective_at <= v_last)
                      OR (g.expires_at > v_first AND g.expires_at <= v_last)))
           AND NOT EXISTS (
               -- no replays (a key used on another wallet meanwhile fails the insert below)
               SELECT 1 FROM wallets_ledgertransaction t WHERE t.idempotency_key = ANY(v_keys))
        THEN
            RETURN QUERY
            WITH usable AS (
                -- the grants, in draw-down order, each with the credit before it
                SELECT * FROM wallets_usable_grants(p_wallet_id, v_item, v_dims, v_first, p_now)
            ),
            evs AS (
                -- the events in order, each with the amount before it; transaction
                -- ids drawn in that order (balance_after runs with the ids)
                SELECT o.*, nextval(pg_get_serial_sequence('wallets_ledgertransaction', 'id'))
                           AS tx_id
                FROM (
                    SELECT e.*, SUM(e.amount) OVER (ORDER BY e.ord ROWS UNBOUNDED PRECEDING)
                                - e.amount AS before
                    FROM jsonb_to_recordset(p_events) AS e(
                        ord integer, amount numeric, item_id bigint, dimensions jsonb,
                        at timestamptz, key text, request_hash text, memo text,
                        reference text, metadata jsonb)
                    ORDER BY e.ord
                ) o
            ),
            takes AS (
                -- event e takes the part of each grant's stretch that overlaps its own
                SELECT e.ord, e.tx_id, u.id AS grant_id, u.account_id, u.restricted,
                       u.spendable_now, u.before AS grant_before,
                       LEAST(u.before + u.remaining, e.before + e.amount)
                           - GREATEST(u.before, e.before) AS take
                FROM evs e JOIN usable u
                  ON u.before < e.before + e.amount AND e.before < u.before + u.remaining
            ),
            running AS (
                -- the wallet right after each event (no debt: the grants pay it all)
                SELECT e.*, w.credit_balance - (e.before + e.amount) AS balance_after,
                       w.restricted_balance - SUM(coalesce(r.taken, 0))
                           OVER (ORDER BY e.ord ROWS UNBOUNDED PRECEDING) AS restricted_after,
                       v_spendable - SUM(coalesce(r.spent_now, 0))
                           OVER (ORDER BY e.ord ROWS UNBOUNDED PRECEDING) AS spendable_after
                FROM evs e
                LEFT JOIN (SELECT t.ord,
                                  SUM(t.take) FILTER (WHERE t.restricted) AS taken,
                                  SUM(t.take) FILTER (WHERE t.spendable_now) AS spent_now
                           FROM takes t GROUP BY t.ord) r ON r.ord = e.ord
            ),
            tx AS (
                INSERT INTO wallets_ledgertransaction
                    (id, kind, wallet_id, idempotency_key, request_hash, effective_at,
                     created_at, actor, actor_user_id, memo, reference, amount, currency,
                     balance_after, restricted_after, debt_after, metadata)
                SELECT r.tx_id, 'usage', p_wallet_id, r.key, r.request_hash, r.at, p_now,
                       p_actor, p_actor_user_id, r.memo, r.reference, r.amount, w.currency,
                       r.balance_after, r.restricted_after, w.debt, r.metadata
                FROM running r
            ),
            entries AS (
                INSERT INTO wallets_entry
                    (transaction_id, debit_account_id, credit_account_id, amount, currency)
                SELECT t.tx_id, t.account_id, v_revenue, t.take, w.currency FROM takes t
            ),
            lots AS (
                INSERT INTO wallets_grantconsumption (transaction_id, grant_id, amount)
                SELECT t.tx_id, t.grant_id, t.take FROM takes t
            ),
            grant_update AS (
                UPDATE wallets_creditgrant g
                SET remaining = g.remaining - s.taken,
                    status = CASE WHEN g.remaining = s.taken THEN 'exhausted' ELSE g.status END
                FROM (SELECT t.grant_id, SUM(t.take) AS taken FROM takes t GROUP BY t.grant_id) s
                WHERE g.id = s.grant_id
            ),
            wallet_update AS (
                UPDATE wallets_wallet uw
                SET credit_balance = w.credit_balance - v_total,
                    restricted_balance = w.restricted_balance
                        - (SELECT coalesce(SUM(t.take), 0) FROM takes t WHERE t.restricted),
                    updated_at = p_now
                WHERE uw.id = p_wallet_id
            )
            SELECT r.ord, 'ok'::text, r.tx_id, r.amount, r.balance_after, w.debt,
                   (SELECT json_agg(json_build_array(t.grant_id, t.take::text)
                                    ORDER BY t.grant_before)
                    FROM takes t WHERE t.ord = r.ord),
                   GREATEST(0, v_limit - w.debt),
                   w.currency::text, NULL::text, r.restricted_after, v_limit,
                   r.spendable_after + v_limit - w.debt
            FROM running r ORDER BY r.ord;
            RETURN;
        END IF;
    END IF;

    FOR ev IN
        SELECT * FROM jsonb_to_recordset(p_events) AS e(
            ord integer, amount numeric, item_id bigint, dimensions jsonb, at timestamptz,
            key text, request_hash text, memo text, reference text, metadata jsonb)
        ORDER BY ord
    LOOP
        -- 3. How much more debt the limit in force now allows.
        v_room := GREATEST(0, v_limit - w.debt);

        -- 4. Pick the grants that apply, in draw-down order (wallets_usable_grants),
        -- take what the amount needs from each, and write the transaction, entries, lots, grants and wallet. What the grants
        -- cannot cover becomes debt if the limit allows; otherwise nothing is written.
        WITH usable AS (
            SELECT * FROM wallets_usable_grants(p_wallet_id, ev.item_id, ev.dimensions, ev.at, p_now)
        ),
        takes AS (
            SELECT u.id, u.account_id, u.restricted, u.spendable_now,
                   LEAST(u.remaining, ev.amount - u.before) AS take
            FROM usable u WHERE u.before < ev.amount
        ),
        decision AS (
            SELECT COALESCE(SUM(t.take), 0) AS covered,
                   COALESCE(SUM(t.take) FILTER (WHERE t.restricted), 0) AS covered_restricted,
                   COALESCE(SUM(t.take) FILTER (WHERE t.spendable_now), 0) AS covered_spendable
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
               v_room, w.currency::text, NULL::text, tx.restricted_after, d.covered_spendable
        INTO out_ord, out_outcome, out_tx_id, out_covered, out_balance_after, out_debt_after,
             out_lots, out_debt_room, out_currency, out_earlier_hash, v_restricted_after,
             v_spent_now
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
            v_spendable := v_spendable - v_spent_now;
        END IF;
        out_restricted_after := w.restricted_balance;
        out_credit_limit := v_limit;
        out_available := v_spendable + v_limit - w.debt;
        RETURN NEXT;
    END LOOP;
END
$fn$;
"""

DRAW_DOWN_ONE = r"""
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
"""

DROP_RULES = """
DROP FUNCTION IF EXISTS wallets_usable_grants(bigint, bigint, jsonb, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS wallets_grant_applies(bigint, jsonb, bigint, jsonb);
"""


class Migration(migrations.Migration):
    dependencies = [("wallets", "0011_refund_kind")]

    operations = [
        migrations.RunSQL(
            RULES + DRAW_DOWN + DRAW_DOWN_ONE,
            reverse_sql=V0010.DRAW_DOWN + V0010.DRAW_DOWN_ONE + DROP_RULES,
        )
    ]
