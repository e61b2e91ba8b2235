"""Staff views of the ledger, one module per concept. Ledger rows are read-only
here: every change goes through `wallets.services`, behind a form or a
confirmation page. Importing the modules registers their ModelAdmins."""

from django.contrib import admin

from wallets.admin import grants, ledger, limits, outbox, settings, wallet

# Balance & Credits: the credit limit settings, and the richer limit history admin
limits.register(admin.site)

__all__ = ["grants", "ledger", "limits", "outbox", "settings", "wallet"]
