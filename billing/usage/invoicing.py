"""Closing billing periods into usage invoices, and voiding them.

Sits above the ledger and the invoices app (ARCHITECTURE.md layer 5): it reads
booked usage events, asks the ledger what each drew from credits and what became
debt, and has `invoices.services` issue the document. Voiding reverses every event
on the invoice through `billing.usage.recording.reverse_usage`, so the credits go back to
the very grants they came from (with their original expiry)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError
from django.db.models import Sum
from django.utils import timezone

from billing.models import Customer, UsageEvent
from billing.periods import BillingPeriod, period_containing
from billing.usage.recording import reverse_usage
from invoices import services as invoice_services
from invoices.models import Invoice
from jobs.runner import Batch
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.errors import WalletError
from wallets.models import GrantConsumption

logger = logging.getLogger(__name__)

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
    drawn = _drawn_from_credits(events)
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
                    newer_debt=_debt_after(customer, currency, period.ends_at),
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


def _drawn_from_credits(events: list[UsageEvent]) -> dict[int, Decimal]:
    """Per event's ledger transaction: how much of it prepaid credit paid."""
    return dict(
        GrantConsumption.objects.filter(transaction_id__in=[e.transaction_id for e in events])
        .values_list("transaction_id")
        .annotate(total=Sum("amount"))
    )


def _debt_after(customer: Customer, currency: str, moment: datetime) -> Decimal:
    """The debt that booked usage stamped at or after `moment` created (later periods,
    not on this invoice)."""
    later = list(
        UsageEvent.objects.filter(
            customer=customer,
            currency=currency,
            status=UsageEvent.Status.BOOKED,
            timestamp__gte=moment,
            transaction_id__isnull=False,
        ).only("amount", "transaction_id")
    )
    drawn = _drawn_from_credits(later)
    owed = Decimal("0")
    for event in later:
        owed += event.amount - drawn.get(event.transaction_id or 0, Decimal("0"))
    return owed


def close_due_period_batches(
    *, actor: Actor, now: datetime | None = None, batch_size: int = 200
) -> Iterator[Batch]:
    """Invoice every complete billing period that has uninvoiced usage, oldest first
    (a missed run catches up period by period), `batch_size` customers at a time.
    Each invoice is its own transaction; rerunning issues nothing twice.

    One customer's failure stops nobody else: it is reported in the batch's
    `errors` (the job run shows it, by account number) and the run goes on with the
    next customer; that customer's later periods wait for the next run, which tries
    it again."""
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
        problems: list[str] = []
        for customer in customers:
            try:
                issued += _close_due_periods_of(customer, actor=actor, now=now)
            except Exception as exc:  # any: recorded for staff, the others still invoiced
                if not isinstance(exc, (WalletError, invoice_services.InvoiceError)):
                    logger.exception("closing the periods of customer %s failed", customer.pk)
                problems.append(
                    f"customer {customer.account_number} (#{customer.pk}) not invoiced: "
                    f"{type(exc).__name__}: {exc}".strip()
                )
        after = customers[-1].pk
        yield Batch(processed=issued, failed=len(problems), errors=tuple(problems))


def _close_due_periods_of(customer: Customer, *, actor: Actor, now: datetime) -> int:
    current = period_containing(now, customer.billing_anchor_day)
    oldest = uninvoiced_events(customer, current.starts_at).order_by("timestamp").first()
    if oldest is None:
        return 0
    issued = 0
    period = period_containing(oldest.timestamp, customer.billing_anchor_day)
    while period.start < current.start:
        issued += len(close_period(customer=customer, period=period, actor=actor))
        period = period.next(customer.billing_anchor_day)
    return issued


def close_due_periods(*, actor: Actor, now: datetime | None = None, batch_size: int = 200) -> int:
    """All of `close_due_period_batches`; returns the number of invoices issued."""
    return sum(
        b.processed for b in close_due_period_batches(actor=actor, now=now, batch_size=batch_size)
    )


def void_usage_invoice(*, invoice: Invoice, reason: str, actor: Actor) -> Invoice:
    """Void a usage invoice: every event on it is reversed (credits return to their
    grants, debt is cancelled), then the document is marked void. The rounding is
    undone first, so the debt it took off (or added) is back before the usage's debt
    is cancelled: a debt paid meanwhile then comes back as credit, exactly what was
    paid. Safe to run again after a crash: reversals are idempotent."""
    if invoice.kind != Invoice.Kind.USAGE:
        raise invoice_services.InvoiceError("only usage invoices are voided this way.")
    if invoice.status == Invoice.Status.VOID:
        raise invoice_services.InvoiceError(f"invoice {invoice.display_number} is already void.")
    if not reason.strip():
        raise invoice_services.InvoiceError("give a reason for voiding the invoice.")
    if invoice.rounding_transaction_id:
        wallet_services.reverse(
            transaction_id=invoice.rounding_transaction_id,
            actor=actor,
            idempotency_key=invoice_services.rounding_void_key(invoice),
        )
    for event in invoice.usage_events.all():
        reverse_usage(event=event, actor=actor)
    return invoice_services.mark_void(invoice=invoice, reason=reason, actor=actor)
