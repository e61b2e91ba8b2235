-- The permanent limit plus the temporary increase while it is valid (Wallet.effective_credit_limit).
CREATE OR REPLACE FUNCTION wallets_effective_credit_limit(
    p_limit numeric, p_increase numeric, p_valid_until timestamptz, p_at timestamptz
) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_limit + CASE WHEN p_increase > 0 AND p_at < p_valid_until THEN p_increase ELSE 0 END
$$;
