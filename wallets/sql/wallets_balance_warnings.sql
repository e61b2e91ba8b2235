-- Version 2 (version 1: migration 0006). Available funds as everywhere else
-- (wallets_available_funds, at the movement's time): credit not yet effective, or expired but not
-- yet swept, does not count. A movement's effect on them is the change it made to
-- the cached balances and the limit; the funds after it are measured from the
-- grants, so "before" = after − that change. A movement that only touches credit
-- not in force now (an expiry sweep, a void of future credit) is measured by its
-- cached change too: the sweep is where a lapse by time alone is noticed.
--
-- "Now" is the moment the money moves as the application sees it: the draw-down
-- functions, the expiry sweep and every Python service set `wallets.now` for their
-- transaction (`SET LOCAL`-like, set_config(..., true)); anything else falls back
-- to the statement's start time.
CREATE OR REPLACE FUNCTION wallets_balance_warnings() RETURNS trigger AS $$
DECLARE
    at timestamptz := coalesce(nullif(current_setting('wallets.now', true), '')::timestamptz,
                               statement_timestamp());
    old_limit numeric := wallets_effective_credit_limit(
        OLD.credit_limit, OLD.temporary_credit_increase, OLD.temporary_increase_valid_until, at);
    new_limit numeric := wallets_effective_credit_limit(
        NEW.credit_limit, NEW.temporary_credit_increase, NEW.temporary_increase_valid_until, at);
    change numeric := (NEW.credit_balance - NEW.restricted_balance)
                      - (OLD.credit_balance - OLD.restricted_balance)
                      - (NEW.debt - OLD.debt) + (new_limit - old_limit);
    old_available numeric;
    new_available numeric;
    old_used numeric;
    new_used numeric;
    threshold numeric;
    customer record;
    -- names this crossing: the database transaction, plus a random part because
    -- one transaction may cross the same threshold twice (down, top-up, down)
    crossing text := pg_current_xact_id() || '.' || gen_random_uuid();
BEGIN
    IF change >= 0 THEN
        RETURN NULL;
    END IF;
    new_available := wallets_spendable_credit(NEW.id, at) + new_limit - NEW.debt;
    old_available := new_available - change;
    SELECT c.id, c.name, c.account_number INTO customer
      FROM billing_customer c WHERE c.id = NEW.customer_id;

    FOREACH threshold IN ARRAY coalesce(NEW.low_funds_thresholds, '{}') LOOP
        IF old_available >= threshold AND new_available < threshold THEN
            PERFORM wallets_queue_warning(
                customer.id, 'low_funds',
                format('Low funds: less than %s %s available', round(threshold, 2), NEW.currency),
                format(E'Hello %s,\n\nThe available funds on account %s fell below %s %s: ' ||
                       E'%s %s are available now.\n\nTop up to keep your services running.\n',
                       customer.name, customer.account_number, round(threshold, 2),
                       NEW.currency, round(new_available, 2), NEW.currency),
                format('low_funds:%s:%s:%s', NEW.id, threshold, crossing));
        END IF;
    END LOOP;

    IF NEW.credit_limit_warnings IS NOT NULL AND new_limit > 0 THEN
        new_used := greatest(new_limit - new_available, 0) * 100 / new_limit;
        old_used := CASE WHEN old_limit > 0
                         THEN greatest(old_limit - old_available, 0) * 100 / old_limit
                         ELSE 0 END;
        FOREACH threshold IN ARRAY NEW.credit_limit_warnings LOOP
            IF old_used < threshold AND new_used >= threshold THEN
                PERFORM wallets_queue_warning(
                    customer.id, 'credit_limit',
                    format('Credit limit warning: %s%% of your credit limit in use',
                           trim_scale(threshold)),
                    format(E'Hello %s,\n\n%s %s of the %s %s credit limit on account %s ' ||
                           E'are in use (%s%%).\n\nPay or top up to keep your services ' ||
                           E'running.\n',
                           customer.name, round(new_limit - new_available, 2), NEW.currency,
                           round(new_limit, 2), NEW.currency, customer.account_number,
                           round(new_used, 1)),
                    format('credit_limit:%s:%s:%s', NEW.id, threshold, crossing));
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
