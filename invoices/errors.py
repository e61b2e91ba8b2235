"""Errors of the invoices app: nothing was changed, and the message says why."""

from __future__ import annotations


class InvoiceError(Exception):
    """Nothing was changed; the message says why."""

    status_code = 400


class InvoiceNotFound(InvoiceError):
    status_code = 404


class InvoiceStateError(InvoiceError):
    """The document is not in a state that allows the action (409)."""

    status_code = 409


class CreditSpent(InvoiceStateError):
    """Credit a payment provisioned has been used; it can no longer be taken back."""
