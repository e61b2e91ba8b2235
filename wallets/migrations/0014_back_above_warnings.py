# Balance warnings, version 3 (issue 15): the "back above" notice. Version 2 is in
# migration 0010 (the reverse restores it). A threshold that warned and is crossed
# upwards again (funds back above a low-funds amount; the share of the limit in use
# back below a credit-limit percentage) queues one notice, and the threshold is armed
# again: the next descent warns again (as before). "Had warned" is read from the
# outbox: a warning for this wallet and threshold newer than the last notice of
# recovery for it (one customer's notifications: the customer_id index).

import importlib

from django.db import migrations

V0010 = importlib.import_module("wallets.migrations.0010_money_in_time")

WARNINGS = r"""
-- Version 3 (version 2: migration 0010). As version 2 for a movement that lowers the
-- available funds; a movement that raises them queues a "back above" notice for each
-- threshold it crosses upwards that had warned since its last such notice.
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
    IF change = 0 THEN
        RETURN NULL;
    END IF;
    new_available := wallets_spendable_credit(NEW.id, at) + new_limit - NEW.debt;
    old_available := new_available - change;
    SELECT c.id, c.name, c.account_number INTO customer
      FROM billing_customer c WHERE c.id = NEW.customer_id;

    IF change > 0 THEN
        FOREACH threshold IN ARRAY coalesce(NEW.low_funds_thresholds, '{}') LOOP
            IF old_available < threshold AND new_available >= threshold
               AND wallets_warned_since_recovery(customer.id, 'low_funds', NEW.id, threshold) THEN
                PERFORM wallets_queue_warning(
                    customer.id, 'low_funds_recovered',
                    format('Funds back above %s %s', round(threshold, 2), NEW.currency),
                    format(E'Hello %s,\n\nThe available funds on account %s are back above ' ||
                           E'%s %s: %s %s are available now.\n',
                           customer.name, customer.account_number, round(threshold, 2),
                           NEW.currency, round(new_available, 2), NEW.currency),
                    format('low_funds_recovered:%s:%s:%s', NEW.id, threshold, crossing));
            END IF;
        END LOOP;
        IF NEW.credit_limit_warnings IS NOT NULL AND new_limit > 0 THEN
            new_used := greatest(new_limit - new_available, 0) * 100 / new_limit;
            old_used := CASE WHEN old_limit > 0
                             THEN greatest(old_limit - old_available, 0) * 100 / old_limit
                             ELSE 100 END;
            FOREACH threshold IN ARRAY NEW.credit_limit_warnings LOOP
                IF old_used >= threshold AND new_used < threshold
                   AND wallets_warned_since_recovery(customer.id, 'credit_limit', NEW.id,
                                                     threshold) THEN
                    PERFORM wallets_queue_warning(
                        customer.id, 'credit_limit_recovered',
                        format('Credit limit: back below %s%% in use', trim_scale(threshold)),
                        format(E'Hello %s,\n\nLess than %s%% of the %s %s credit limit on ' ||
                               E'account %s is in use again (%s%%).\n',
                               customer.name, trim_scale(threshold), round(new_limit, 2),
                               NEW.currency, customer.account_number, round(new_used, 1)),
                        format('credit_limit_recovered:%s:%s:%s', NEW.id, threshold, crossing));
                END IF;
            END LOOP;
        END IF;
        RETURN NULL;
    END IF;

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
"""

# Whether a warning of `warning_kind` for this wallet and threshold was queued after the
# last "back above" notice for them (or ever, if there was none): the customer's own
# rows, matched on the dedupe key `<kind>:<wallet>:<threshold>:<crossing>`.
WARNED = r"""
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
"""

REVERSE = (
    V0010._function_only(V0010.WARNINGS, "wallets_balance_warnings")
    + "\nDROP FUNCTION wallets_warned_since_recovery(bigint, text, bigint, numeric);\n"
)


class Migration(migrations.Migration):
    dependencies = [("wallets", "0013_limit_history_kinds")]

    operations = [migrations.RunSQL(WARNED + WARNINGS, reverse_sql=REVERSE)]
