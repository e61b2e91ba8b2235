"""Writes to invoices: numbering, usage invoices, voiding. Money moves only
through `wallets.services` (here: the rounding of billed debt)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from django.db import transaction
from django.utils import timezone

from billing.models import Customer, ProductItem
from billing.periods import BillingPeriod
from invoices.errors import InvoiceError
from invoices.models import CENT, Invoice, InvoiceLine, InvoiceSeries
from invoices.payments import (  # noqa: F401 - the public payment services live here too
    allocate_payment,
    apply_unallocated,
    record_payment,
    remove_allocation,
    remove_payment,
)
from wallets import services as wallet_services
from wallets.actors import Actor

SERIES: dict[str, tuple[str, str]] = {
    Invoice.Kind.USAGE: ("usage", "USG-"),
    Invoice.Kind.TOP_UP: ("top-up", "TOP-"),
}


def series_for(kind: str) -> InvoiceSeries:
    code, prefix = SERIES[kind]
    series, _ = InvoiceSeries.objects.get_or_create(code=code, defaults={"prefix": prefix})
    return series


def take_number(invoice: Invoice) -> int:
    """The next number of the invoice's series, taken under the series row lock, so
    numbers are gapless and unique however many invoices are issued at once.
    Call inside the transaction that issues the invoice."""
    series = InvoiceSeries.objects.select_for_update().get(pk=invoice.series_id)
    number = series.next_number
    series.next_number = number + 1
    series.save(update_fields=["next_number"])
    return number


@dataclass(frozen=True)
class BilledUsage:
    """What one booked usage event contributes to an invoice."""

    event_id: int
    item: ProductItem
    unit_price: Decimal
    quantity: Decimal
    amount: Decimal  # exact, 6 places
    from_credits: Decimal  # exact part paid by prepaid credit
    to_debt: Decimal  # exact part that became debt


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def allocate_cents(exact: list[Decimal]) -> list[Decimal]:
    """Round each amount to the cent so that the rounded amounts add up to the
    rounded total (largest remainder): no cent appears or disappears on a page."""
    total = to_cents(sum(exact, Decimal("0")))
    floors = [value.quantize(CENT, rounding=ROUND_DOWN) for value in exact]
    left = int((total - sum(floors, Decimal("0"))) / CENT)
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - floors[i], reverse=True)
    for i in by_remainder[:left]:
        floors[i] += CENT
    return floors


@transaction.atomic
def issue_usage_invoice(
    *,
    customer: Customer,
    currency: str,
    period: BillingPeriod,
    charges: list[BilledUsage],
    wallet_id: int | None,
    actor: Actor,
    newer_debt: Decimal = Decimal("0"),
) -> Invoice:
    """One invoice for the customer's usage in the period: a line per product item
    and unit price, the subtotal, the prepaid credits applied and the amount due
    (the part of the usage that became debt). Rounded once; what is still owed of
    that debt is rounded the same way in the ledger (`round_debt`), so the customer
    owes whole cents; debt already paid is not rounded. `newer_debt` is the debt of
    later usage (not on this invoice), which payments reach after this one's."""
    groups: dict[tuple[int, Decimal], list[BilledUsage]] = defaultdict(list)
    for charge in charges:
        groups[(charge.item.pk, charge.unit_price)].append(charge)
    keys = sorted(groups, key=lambda k: (groups[k][0].item.code, k[1]))
    exact = [sum((c.amount for c in groups[k]), Decimal("0")) for k in keys]
    cents = allocate_cents(exact)
    subtotal = sum(cents, Decimal("0"))
    due_exact = sum((c.to_debt for c in charges), Decimal("0"))
    due = min(to_cents(due_exact), subtotal)
    invoice = Invoice.objects.create(
        kind=Invoice.Kind.USAGE, customer=customer, currency=currency, series=series_for(Invoice.Kind.USAGE),
        period_start=period.start, period_end=period.end, subtotal=subtotal, credits_applied=subtotal - due,
        amount_due=due, status=Invoice.Status.ISSUED, issued_at=timezone.now(), created_by=actor.label,
    )  # fmt: skip
    invoice.number = take_number(invoice)
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            product_item=groups[k][0].item,
            position=i,
            description=f"{groups[k][0].item.name} ({groups[k][0].item.unit})",
            quantity=sum((c.quantity for c in groups[k]), Decimal("0")),
            unit_price=k[1],
            amount=cents[i],
        )  # fmt: skip
        for i, k in enumerate(keys)
    )
    invoice.usage_events.set([c.event_id for c in charges])
    if wallet_id is not None and due_exact:
        tx = wallet_services.round_debt(
            wallet=wallet_id, exact=due_exact, quantum=CENT, newer=newer_debt, actor=actor,
            idempotency_key=f"invoice:{invoice.pk}:rounding", memo=f"Rounding on invoice {invoice.display_number}",
        )  # fmt: skip
        invoice.rounding_transaction_id = tx.pk if tx else None
    invoice.save(update_fields=["number", "rounding_transaction_id"])
    return invoice


def rounding_void_key(invoice: Invoice) -> str:
    return f"invoice:{invoice.pk}:rounding:void"


@transaction.atomic
def mark_void(*, invoice: Invoice, reason: str, actor: Actor) -> Invoice:
    """The document part of voiding (the caller has already undone its money)."""
    locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if locked.status == Invoice.Status.VOID:
        raise InvoiceError(f"invoice {locked.display_number} is already void.")
    if not reason.strip():
        raise InvoiceError("give a reason for voiding the invoice.")
    if locked.rounding_transaction_id:
        wallet_services.reverse(
            transaction_id=locked.rounding_transaction_id,
            actor=actor,
            idempotency_key=rounding_void_key(locked),
        )
    locked.status = Invoice.Status.VOID
    locked.voided_at = timezone.now()
    locked.void_reason = reason.strip()
    locked.save(update_fields=["status", "voided_at", "void_reason"])
    return locked
