-- Available funds at p_at (Wallet.available_funds): the one definition.
CREATE OR REPLACE FUNCTION wallets_available_funds(p_wallet_id bigint, p_at timestamptz)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT wallets_spendable_credit(w.id, p_at)
           + wallets_effective_credit_limit(w.credit_limit, w.temporary_credit_increase,
                                            w.temporary_increase_valid_until, p_at)
           - w.debt
    FROM wallets_wallet w WHERE w.id = p_wallet_id
$$;
