"""Usage: a flow above the ledger. Rating finds the price in force for an event
(`rating`), recording books events and their reversals through the wallets
services (`recording`), invoicing closes billing periods into usage invoices
(`invoicing`)."""
