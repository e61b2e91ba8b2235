"""Stripe: a flow above the ledger and the invoices. `gateway` is the only code that
talks to Stripe; `services` keeps our records of payment methods and charges;
`webhooks` is the inbox of Stripe's events; `effects` turns a charge's outcome into
money through the wallets and invoices services."""
