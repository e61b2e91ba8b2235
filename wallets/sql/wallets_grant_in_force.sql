-- A grant's credit counts at p_at when it is effective and not yet expired then
-- (its status is checked beside this: only 'active' grants hold spendable credit).
CREATE OR REPLACE FUNCTION wallets_grant_in_force(
    p_effective_at timestamptz, p_expires_at timestamptz, p_at timestamptz
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_effective_at <= p_at AND (p_expires_at IS NULL OR p_expires_at > p_at)
$$;
