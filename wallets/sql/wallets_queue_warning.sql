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
