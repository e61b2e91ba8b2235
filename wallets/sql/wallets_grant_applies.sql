-- A grant's condition lets a usage event draw from it: no product item or the
-- event's, and every dimension it names with the event's value (eligibility by
-- what was used; `wallets_grant_in_force` is eligibility by time).
CREATE OR REPLACE FUNCTION wallets_grant_applies(
    p_condition_item_id bigint, p_condition_dimensions jsonb, p_item_id bigint, p_dimensions jsonb
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (p_condition_item_id IS NULL OR p_condition_item_id = p_item_id)
           AND p_condition_dimensions <@ p_dimensions
$$;
