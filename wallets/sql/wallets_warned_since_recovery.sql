-- Whether a warning of `warning_kind` for this wallet and threshold was queued after the
-- last "back above" notice for them (or ever, if there was none): the customer's own
-- rows, matched on the dedupe key `<kind>:<wallet>:<threshold>:<crossing>` (wallets 0014).
CREATE OR REPLACE FUNCTION wallets_warned_since_recovery(
    p_customer bigint, warning_kind text, p_wallet bigint, p_threshold numeric
) RETURNS boolean AS $$
    SELECT coalesce(
        (SELECT max(id) FROM wallets_notification
          WHERE customer_id = p_customer AND kind = warning_kind
            AND starts_with(dedupe_key, format('%s:%s:%s:', warning_kind, p_wallet, p_threshold))),
        0) > coalesce(
        (SELECT max(id) FROM wallets_notification
          WHERE customer_id = p_customer AND kind = warning_kind || '_recovered'
            AND starts_with(dedupe_key,
                            format('%s_recovered:%s:%s:', warning_kind, p_wallet, p_threshold))),
        0);
$$ LANGUAGE sql STABLE;
