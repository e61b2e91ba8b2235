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
