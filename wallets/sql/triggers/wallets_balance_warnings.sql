CREATE OR REPLACE TRIGGER wallets_balance_warnings
AFTER UPDATE OF credit_balance, restricted_balance, debt, credit_limit,
                temporary_credit_increase, temporary_increase_valid_until
ON wallets_wallet
FOR EACH ROW
WHEN (NEW.low_funds_thresholds IS NOT NULL OR NEW.credit_limit_warnings IS NOT NULL)
EXECUTE FUNCTION wallets_balance_warnings();
