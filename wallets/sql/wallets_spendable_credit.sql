-- Unrestricted credit the wallet can spend at p_at.
CREATE OR REPLACE FUNCTION wallets_spendable_credit(p_wallet_id bigint, p_at timestamptz)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT COALESCE(SUM(g.remaining), 0) FROM wallets_creditgrant g
    WHERE g.wallet_id = p_wallet_id AND g.status = 'active' AND NOT g.restricted
      AND wallets_grant_in_force(g.effective_at, g.expires_at, p_at)
$$;
