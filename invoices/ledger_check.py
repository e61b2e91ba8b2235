"""Invariants of payments and allocations, run by `manage.py check_ledger`
(registered from `InvoicesConfig.ready`). Rows: (subject, recorded, expected)."""

from __future__ import annotations

from wallets.ledger_check import Check, register_check

CHECKS = [
    Check(
        "a payment's allocated amount is the sum of its live allocations "
        "(allocations + unallocated = amount)",
        """
        SELECT 'payment ' || p.id, p.allocated,
               COALESCE(SUM(a.amount) FILTER (WHERE a.removed_at IS NULL), 0)
        FROM invoices_payment p LEFT JOIN invoices_paymentallocation a ON a.payment_id = p.id
        GROUP BY p.id
        HAVING p.allocated <> COALESCE(SUM(a.amount) FILTER (WHERE a.removed_at IS NULL), 0)
            OR p.allocated > p.amount
        """,
    ),
    Check(
        "an invoice's paid amount is the sum of its live allocations, at most its amount due",
        """
        SELECT 'invoice ' || i.id, i.amount_paid,
               COALESCE(SUM(a.amount) FILTER (WHERE a.removed_at IS NULL), 0)
        FROM invoices_invoice i LEFT JOIN invoices_paymentallocation a ON a.invoice_id = i.id
        GROUP BY i.id
        HAVING i.amount_paid <> COALESCE(SUM(a.amount) FILTER (WHERE a.removed_at IS NULL), 0)
            OR i.amount_paid > i.amount_due
        """,
    ),
    Check(
        "an allocation's payment and invoice are its customer's, in one currency",
        """
        SELECT 'allocation ' || a.id, p.customer_id || ' ' || p.currency,
               i.customer_id || ' ' || i.currency
        FROM invoices_paymentallocation a
        JOIN invoices_payment p ON p.id = a.payment_id
        JOIN invoices_invoice i ON i.id = a.invoice_id
        WHERE p.customer_id <> i.customer_id OR p.currency <> i.currency
           OR a.customer_id <> p.customer_id
        """,
    ),
    Check(
        "a live allocation's top-up grant is a top-up of at most the allocated amount, "
        "in the customer's wallet",
        """
        SELECT 'allocation ' || a.id, g.amount || ' ' || g.kind, a.amount || ' top_up'
        FROM invoices_paymentallocation a
        JOIN wallets_creditgrant g ON g.id = a.grant_id
        JOIN wallets_wallet w ON w.id = g.wallet_id
        WHERE a.removed_at IS NULL AND (g.amount > a.amount OR g.kind <> 'top_up'
                          OR w.customer_id <> a.customer_id)
        """,
    ),
    Check(
        "a paid top-up invoice is paid in full; a sent one has nothing paid",
        """
        SELECT 'invoice ' || i.id, i.status, i.amount_paid || ' of ' || i.amount_due
        FROM invoices_invoice i
        WHERE i.kind = 'top_up' AND (
            (i.status = 'paid' AND i.amount_paid <> i.amount_due)
         OR (i.status = 'sent' AND i.amount_paid <> 0)
         OR (i.status = 'partially_paid' AND NOT (0 < i.amount_paid AND i.amount_paid < i.amount_due))
         OR (i.status IN ('draft', 'void') AND i.amount_paid <> 0))
        """,
    ),
]


def register() -> None:
    for check in CHECKS:
        register_check(check)
