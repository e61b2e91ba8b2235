"""Ledger speed: leaner ledger indexes, and a one-event draw-down function.

1. Leaner ledger indexes: every booking (one expiry transaction per grant, one usage
transaction per event) pays for each index on the transaction and entry tables,
so keep only the ones a real query uses (bench/README.md, expiry sweep).

Dropped, each used by no query:
- `wallets_ledgertransaction.wallet_id`: Django's automatic FK index, a duplicate
  of the leading column of `tx_wallet_recent` (wallet_id, id DESC), which serves
  every "transactions of this wallet" query (statements, portal, API, admin);
- the `varchar_pattern_ops` twin of the idempotency key's unique index: only for
  LIKE 'prefix%'; keys are looked up by equality (the unique index) and the
  admin's search is `icontains`, which no btree serves;
- `wallets_entry.debit_account_id` / `credit_account_id`: Django's automatic FK
  indexes, and their exact duplicates `entry_debit` / `entry_credit`. Nothing
  looks entries up by account: check_ledger aggregates the whole table (hash
  aggregates, no index), statements and the admin reach entries through their
  transaction (`wallets_entry_transaction_id_...`), reversals likewise. Deleting an
  account (nothing does; entries are immutable) would scan the table.

Made partial (the NULLs, i.e. almost every row, were indexed for nothing):
- `actor_user_id` → `tx_actor_user` WHERE actor_user_id IS NOT NULL (deleting a
  user sets it NULL: `actor_user_id IN (...)`);
- the unique `reverses_id` → unique `tx_reverses_once` WHERE reverses_id IS NOT
  NULL (a transaction is reversed at most once; NULLs never conflicted anyway).

Hand-written SQL (the state operations are Django's): Django's own AlterField
would drop and re-add, i.e. re-validate, four foreign keys over the whole ledger.
The foreign-key constraints themselves are untouched.

2. `wallets_draw_down_one`: the draw-down of ONE usage event, with plain arguments
(no JSON to build in Python and unpack in SQL, no loop), returning one row, the
revenue account found inside the booking statement: `wallets.services.draw_down`
calls it. It is `wallets_draw_down` (migration 0003, still used by
`draw_down_batch`) for a batch of one: the same lock, the same booking statement,
the same answer row. Keep the two in step (tests/wallets/test_draw_down.py checks
both paths give the same ledger).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

FORWARD = """
DROP INDEX IF EXISTS wallets_ledgertransaction_wallet_id_703c463c;
DROP INDEX IF EXISTS wallets_ledgertransaction_idempotency_key_060bf444_like;
DROP INDEX IF EXISTS wallets_entry_debit_account_id_05f6ad27;
DROP INDEX IF EXISTS wallets_entry_credit_account_id_9770f19f;
DROP INDEX IF EXISTS entry_debit;
DROP INDEX IF EXISTS entry_credit;
DROP INDEX IF EXISTS wallets_ledgertransaction_actor_user_id_5bd10d2d;
CREATE INDEX tx_actor_user ON wallets_ledgertransaction (actor_user_id)
    WHERE actor_user_id IS NOT NULL;
ALTER TABLE wallets_ledgertransaction DROP CONSTRAINT wallets_ledgertransaction_reverses_id_key;
CREATE UNIQUE INDEX tx_reverses_once ON wallets_ledgertransaction (reverses_id)
    WHERE reverses_id IS NOT NULL;
"""

DRAW_DOWN_ONE = r"""
CREATE OR REPLACE FUNCTION wallets_draw_down_one(
    p_wallet_id bigint, p_amount numeric, p_item_id bigint, p_dimensions jsonb,
    p_at timestamptz, p_key text, p_request_hash text, p_memo text, p_reference text,
    p_metadata jsonb, p_actor text, p_actor_user_id integer, p_now timestamptz,
    -- the same answer row as one row of wallets_draw_down
    OUT out_ord integer, OUT out_outcome text, OUT out_tx_id bigint, OUT out_covered numeric,
    OUT out_balance_after numeric, OUT out_debt_after numeric, OUT out_lots json,
    OUT out_debt_room numeric, OUT out_currency text, OUT out_earlier_hash text
) LANGUAGE plpgsql AS $fn$
DECLARE
    w wallets_wallet%ROWTYPE;
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
    -- 3. Room for debt under the credit limit (as in wallets_draw_down).
    out_debt_room := GREATEST(0, w.credit_limit
        + CASE WHEN w.temporary_credit_increase > 0 AND p_at < w.temporary_increase_valid_until
               THEN w.temporary_credit_increase ELSE 0 END
        - w.debt);

    -- 4. wallets_draw_down's booking statement for one event (keep in step).
    WITH usable AS (
        SELECT g.id, g.account_id, g.remaining, g.restricted,
               SUM(g.remaining) OVER draw_order - g.remaining AS before
        FROM wallets_creditgrant g
        WHERE g.wallet_id = p_wallet_id AND g.status = 'active' AND g.remaining > 0
          AND g.effective_at <= p_at AND (g.expires_at IS NULL OR g.expires_at > p_at)
          AND (g.condition_item_id IS NULL OR g.condition_item_id = p_item_id)
          AND g.condition_dimensions <@ p_dimensions
        WINDOW draw_order AS (
            ORDER BY g.specificity DESC, g.priority, g.expires_at NULLS LAST,
                     g.kind <> 'free', g.id
            ROWS UNBOUNDED PRECEDING)
    ),
    takes AS (
        SELECT u.id, u.account_id, u.restricted, LEAST(u.remaining, p_amount - u.before) AS take
        FROM usable u WHERE u.before < p_amount
    ),
    decision AS (
        SELECT COALESCE(SUM(t.take), 0) AS covered,
               COALESCE(SUM(t.take) FILTER (WHERE t.restricted), 0) AS covered_restricted
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
           (SELECT json_agg(json_build_array(t.id, t.take::text)) FROM takes t)
    INTO out_outcome, out_tx_id, out_covered, out_balance_after, out_debt_after, out_lots
    FROM decision d LEFT JOIN tx ON true;
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

DROP_DRAW_DOWN_ONE = """
DROP FUNCTION IF EXISTS wallets_draw_down_one(
    bigint, numeric, bigint, jsonb, timestamptz, text, text, text, text, jsonb, text, integer,
    timestamptz);
"""

REVERSE = """
DROP INDEX IF EXISTS tx_reverses_once;
ALTER TABLE wallets_ledgertransaction
    ADD CONSTRAINT wallets_ledgertransaction_reverses_id_key UNIQUE (reverses_id);
DROP INDEX IF EXISTS tx_actor_user;
CREATE INDEX wallets_ledgertransaction_actor_user_id_5bd10d2d
    ON wallets_ledgertransaction (actor_user_id);
CREATE INDEX entry_credit ON wallets_entry (credit_account_id);
CREATE INDEX entry_debit ON wallets_entry (debit_account_id);
CREATE INDEX wallets_entry_credit_account_id_9770f19f ON wallets_entry (credit_account_id);
CREATE INDEX wallets_entry_debit_account_id_05f6ad27 ON wallets_entry (debit_account_id);
CREATE INDEX wallets_ledgertransaction_idempotency_key_060bf444_like
    ON wallets_ledgertransaction (idempotency_key varchar_pattern_ops);
CREATE INDEX wallets_ledgertransaction_wallet_id_703c463c ON wallets_ledgertransaction (wallet_id);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0007_draw_down_batch_fast_path"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunSQL(DRAW_DOWN_ONE, reverse_sql=DROP_DRAW_DOWN_ONE),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, reverse_sql=REVERSE)],
            state_operations=[
                migrations.AlterField(
                    model_name="entry",
                    name="credit_account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="credits",
                        to="wallets.account",
                    ),
                ),
                migrations.AlterField(
                    model_name="entry",
                    name="debit_account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="debits",
                        to="wallets.account",
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgertransaction",
                    name="actor_user",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgertransaction",
                    name="reverses",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="reversed_by",
                        to="wallets.ledgertransaction",
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgertransaction",
                    name="wallet",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="transactions",
                        to="wallets.wallet",
                    ),
                ),
                migrations.RemoveIndex(model_name="entry", name="entry_debit"),
                migrations.RemoveIndex(model_name="entry", name="entry_credit"),
                migrations.AddIndex(
                    model_name="ledgertransaction",
                    index=models.Index(
                        condition=models.Q(("actor_user__isnull", False)),
                        fields=["actor_user"],
                        name="tx_actor_user",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="ledgertransaction",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("reverses__isnull", False)),
                        fields=("reverses",),
                        name="tx_reverses_once",
                    ),
                ),
            ],
        ),
    ]
