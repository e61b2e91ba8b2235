"""Staff views of the ledger, one module per concept. Ledger rows are read-only
here: every change goes through `wallets.services`, behind a form or a
confirmation page. Importing the modules registers their ModelAdmins."""

from wallets.admin import grants, ledger, outbox, settings, wallet

__all__ = ["grants", "ledger", "outbox", "settings", "wallet"]
