"""Closing billing periods into usage invoices, and voiding them.

Sits above the ledger and the invoices app (ARCHITECTURE.md layer 5): it reads
booked usage events, asks the ledger what each drew from credits and what became
debt, and has `invoices.services` issue the document. Voiding reverses every event
on the invoice through `billing.usage.reverse_usage`, so the credits go back to
the very grants they came from (with their original expiry)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError
from django.db.models import Sum
from django.utils import timezone

from billing.models import Customer, UsageEvent
from billing.periods import BillingPeriod, period_containing
from billing.usage import reverse_usage
from invoices import services as invoice_services
from invoices.models import Invoice
from jobs.runner import Batch
from wallets.actors import Actor
from wallets.models import GrantConsumption

LIVE = [Invoice.Status.DRAFT, Invoice.Status.ISSUED]


def uninvoiced_events(customer: Customer, before: datetime):
    """Booked events up to `before` that no live invoice bills yet (late events of an
    already closed period land on the next invoice)."""
    return (
        UsageEvent.objects.filter(
            customer=customer, status=UsageEvent.Status.BOOKED, timestamp__lt=before
        )
        .exclude(invoices__status__in=LIVE)
        .select_related("product_item")
    )


def close_period(*, customer: Customer, period: BillingPeriod, actor: Actor) -> list[Invoice]:
    """Issue the usage invoice(s) of one period (one per currency with usage).
    Running it again returns the invoices already issued and books nothing."""
    issued = list(
        Invoice.objects.filter(
            customer=customer, kind=Invoice.Kind.USAGE, period_start=period.start, status__in=LIVE
        )
    )
    done = {invoice.currency for invoice in issued}
    events = [e for e in uninvoiced_events(customer, period.ends_at) if e.currency not in done]
    if not events:
        return issued
    drawn = dict(
        GrantConsumption.objects.filter(transaction_id__in=[e.transaction_id for e in events])
        .values_list("transaction_id")
        .annotate(total=Sum("amount"))
    )
    by_currency: dict[str, list[invoice_services.BilledUsage]] = {}
    wallets: dict[str, int | None] = {}
    for event in events:
        from_credits = drawn.get(event.transaction_id, Decimal("0"))
        by_currency.setdefault(event.currency, []).append(
            invoice_services.BilledUsage(
                event_id=event.pk,
                item=event.product_item,
                unit_price=event.unit_price,
                quantity=event.quantity,
                amount=event.amount,
                from_credits=from_credits,
                to_debt=event.amount - from_credits,
            )  # fmt: skip
        )
        wallets[event.currency] = event.wallet_id
    for currency, charges in sorted(by_currency.items()):
        try:
            issued.append(
                invoice_services.issue_usage_invoice(
                    customer=customer,
                    currency=currency,
                    period=period,
                    charges=charges,
                    wallet_id=wallets[currency],
                    actor=actor,
                )  # fmt: skip
            )
        except IntegrityError:
            # another run issued it a moment ago (one live invoice per period)
            issued.extend(
                Invoice.objects.filter(
                    customer=customer,
                    kind=Invoice.Kind.USAGE,
                    currency=currency,
                    period_start=period.start,
                    status__in=LIVE,
                )  # fmt: skip
            )
    return issued


def close_due_period_batches(
    *, actor: Actor, now: datetime | None = None, batch_size: int = 200
) -> Iterator[Batch]:
    """Invoice every complete billing period that has uninvoiced usage, oldest first
    (a missed run catches up period by period), `batch_size` customers at a time.
    Each invoice is its own transaction; rerunning issues nothing twice."""
    now = now or timezone.now()
    after = 0
    while True:
        customers = list(
            Customer.objects.filter(pk__gt=after, usage_events__status=UsageEvent.Status.BOOKED)
            .distinct()
            .order_by("pk")[:batch_size]
        )
        if not customers:
            return
        issued = 0
        for customer in customers:
            current = period_containing(now, customer.billing_anchor_day)
            oldest = uninvoiced_events(customer, current.starts_at).order_by("timestamp").first()
            if oldest is None:
                continue
            period = period_containing(oldest.timestamp, customer.billing_anchor_day)
            while period.start < current.start:
                issued += len(close_period(customer=customer, period=period, actor=actor))
                period = period.next(customer.billing_anchor_day)
        after = customers[-1].pk
        yield Batch(processed=issued)


def close_due_periods(*, actor: Actor, now: datetime | None = None, batch_size: int = 200) -> int:
    """All of `close_due_period_batches`; returns the number of invoices issued."""
    return sum(
        b.processed for b in close_due_period_batches(actor=actor, now=now, batch_size=batch_size)
    )


def void_usage_invoice(*, invoice: Invoice, reason: str, actor: Actor) -> Invoice:
    """Void a usage invoice: every event on it is reversed (credits return to their
    grants, debt is cancelled), then the document is marked void. Safe to run
    again after a crash: reversals are idempotent."""
    if invoice.kind != Invoice.Kind.USAGE:
        raise invoice_services.InvoiceError("only usage invoices are voided this way.")
    if invoice.status == Invoice.Status.VOID:
        raise invoice_services.InvoiceError(f"invoice {invoice.display_number} is already void.")
    if not reason.strip():
        raise invoice_services.InvoiceError("give a reason for voiding the invoice.")
    for event in invoice.usage_events.all():
        reverse_usage(event=event, actor=actor)
    return invoice_services.mark_void(invoice=invoice, reason=reason, actor=actor)
