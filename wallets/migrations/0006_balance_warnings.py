"""Low-funds and credit-limit warnings, queued by the database itself.

Every money movement ends in an UPDATE of the wallet's cached balances (draw-down,
batch draw-down, grant, expiry, void, transfer, credit-limit change…), whichever
service made it. An AFTER UPDATE trigger on those columns compares the available
funds before and after and, when a threshold was crossed downwards, inserts a row
into the notifications outbox in the same transaction: the warning commits with
the movement or not at all, costs no extra round trip, and cannot be forgotten by a
new code path. The `send_notifications` job emails it.

- low funds: a warning for each amount t with  before ≥ t > after  (available funds:
  unrestricted credit + effective credit limit − debt, as in Wallet.available_funds);
- credit limit: a warning for each percentage p with  before < p ≤ after, where the
  share in use is (debt − unrestricted credit) / effective credit limit × 100.

The WHEN clause keeps the trigger from even starting for wallets without thresholds
(NULL arrays), so the draw-down hot path pays nothing for them. The trigger runs
once per real change: a retried request that books nothing changes no wallet row,
so it queues nothing. Each crossing gets a key of its own (wallet, threshold,
transaction, random part); a later crossing after a top-up queues a new warning.
"""

import django.contrib.postgres.fields
from django.db import migrations, models

FUNCTION = r"""
-- one row in the notifications outbox (wallets.Notification), queued for now
CREATE OR REPLACE FUNCTION wallets_queue_warning(
    to_customer bigint, warning_kind text, warning_subject text, warning_body text,
    warning_key text
) RETURNS void AS $$
    INSERT INTO wallets_notification (
        customer_id, kind, recipient, subject, body, dedupe_key, status,
        attempts, last_error, next_attempt_at, created_at
    ) VALUES (
        to_customer, warning_kind, '', warning_subject, warning_body, warning_key,
        'queued', 0, '', now(), now()
    ) ON CONFLICT (dedupe_key) DO NOTHING;
$$ LANGUAGE sql;

CREATE OR REPLACE FUNCTION wallets_balance_warnings() RETURNS trigger AS $$
DECLARE
    old_limit numeric := OLD.credit_limit + CASE
        WHEN OLD.temporary_credit_increase > 0 AND now() < OLD.temporary_increase_valid_until
        THEN OLD.temporary_credit_increase ELSE 0 END;
    new_limit numeric := NEW.credit_limit + CASE
        WHEN NEW.temporary_credit_increase > 0 AND now() < NEW.temporary_increase_valid_until
        THEN NEW.temporary_credit_increase ELSE 0 END;
    old_available numeric := OLD.credit_balance - OLD.restricted_balance + old_limit - OLD.debt;
    new_available numeric := NEW.credit_balance - NEW.restricted_balance + new_limit - NEW.debt;
    old_used numeric;
    new_used numeric;
    threshold numeric;
    customer record;
    -- names this crossing: the database transaction, plus a random part because
    -- one transaction may cross the same threshold twice (down, top-up, down)
    crossing text := pg_current_xact_id() || '.' || gen_random_uuid();
BEGIN
    IF new_available >= old_available THEN
        RETURN NULL;
    END IF;
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

CREATE TRIGGER wallets_balance_warnings
AFTER UPDATE OF credit_balance, restricted_balance, debt, credit_limit,
                temporary_credit_increase, temporary_increase_valid_until
ON wallets_wallet
FOR EACH ROW
WHEN (NEW.low_funds_thresholds IS NOT NULL OR NEW.credit_limit_warnings IS NOT NULL)
EXECUTE FUNCTION wallets_balance_warnings();
"""

REVERSE = """
DROP TRIGGER IF EXISTS wallets_balance_warnings ON wallets_wallet;
DROP FUNCTION IF EXISTS wallets_balance_warnings();
DROP FUNCTION IF EXISTS wallets_queue_warning(bigint, text, text, text, text);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0005_scheduled_jobs"),
        ("billing", "0006_balance_warnings"),
    ]

    operations = [
        migrations.AddField(
            model_name="wallet",
            name="credit_limit_warnings",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.DecimalField(decimal_places=2, max_digits=5),
                blank=True,
                editable=False,
                null=True,
                size=None,
            ),
        ),
        migrations.AddField(
            model_name="wallet",
            name="low_funds_thresholds",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.DecimalField(decimal_places=6, max_digits=24),
                blank=True,
                editable=False,
                null=True,
                size=None,
            ),
        ),
        migrations.RunSQL(FUNCTION, REVERSE),
    ]
