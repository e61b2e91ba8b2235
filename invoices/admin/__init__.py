"""Invoices and payments in the admin, one module per concept; `unallocated_panel` is
what the customer page shows (billing.admin.customers)."""

from invoices.admin import invoices, payments
from invoices.admin.payments import unallocated_panel

__all__ = ["invoices", "payments", "unallocated_panel"]
