"""Payments and their allocations to top-up invoices (B3Networks' Finance app,
PortaBilling's unallocated payments). Money moves only through `wallets.services`.

How a payment's money sits in the ledger (one rule, so nothing is counted twice):
- Recorded, it is on the customer's balance at once (PortaBilling: "the amount is
  immediately applied to the customer's balance"), as a payment-on-account grant
  (`cash|psp_clearing → grant`, which pays debt first). A refill card's payment
  brings its own grant (the card's), booked by the card flow.
- Allocated to a sent top-up invoice, that part of the unallocated credit becomes
  the invoice's top-up grant (named after the invoice, with the default expiry):
  the on-account grant is voided and booked again without that part. The balance
  does not move twice for the same money; the invoice is provisioned.
- An allocation removed (while its top-up credit is unspent) turns the credit back
  into unallocated, on-account credit; a payment removed takes its unspent credit
  off the balance.

For every payment: Σ live allocations (`allocated`) + unallocated = amount."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Customer
from invoices.errors import CreditSpent, InvoiceError, InvoiceNotFound, InvoiceStateError
from invoices.models import CENT, Invoice, Payment, PaymentAllocation
from wallets import services as wallet_services
from wallets.actors import Actor
from wallets.models import Account, CreditGrant, Wallet

MAX_DOCUMENT_AMOUNT = Decimal("1e13")
OPEN_TOP_UP = (Invoice.Status.SENT, Invoice.Status.PARTIALLY_PAID)
LIVE_GRANT = (CreditGrant.Status.ACTIVE, CreditGrant.Status.EXHAUSTED)
FUNDING_BY_METHOD = {
    Payment.Method.CARD: Account.Code.PSP_CLEARING,
    Payment.Method.REFILL_CARD: Account.Code.REFILL_CARDS,
}


# --- input checks ----------------------------------------------------------------


def document_amount(value: Any, *, what: str = "amount") -> Decimal:
    """A positive amount in the currency's minor unit (2 places), or a clear error."""
    if isinstance(value, float):
        raise InvoiceError(f"{what} must be a decimal string such as '100.00', not a float.")
    try:
        amount = Decimal(str(value).strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvoiceError(f"{what} must be a number such as '100.00', got {value!r}.") from None
    if not amount.is_finite():
        raise InvoiceError(f"{what} must be a finite number, got {value!r}.")
    if amount <= 0:
        raise InvoiceError(f"{what} must be greater than zero, got {amount}.")
    if amount >= MAX_DOCUMENT_AMOUNT:
        raise InvoiceError(f"{what} is too large ({amount}); at most 9999999999999.99.")
    if amount != amount.quantize(CENT):
        raise InvoiceError(f"{what} has more than 2 decimal places ({amount}); round it to cents.")
    return amount.quantize(CENT)


def document_text(value: Any, *, what: str, max_length: int, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvoiceError(f"{what} must be text.")
    if "\x00" in value:
        raise InvoiceError(f"{what} contains a NUL character; remove it.")
    value = value.strip()
    if len(value) > max_length:
        raise InvoiceError(f"{what} is too long ({len(value)} characters; at most {max_length}).")
    if required and not value:
        raise InvoiceError(f"{what} is required.")
    return value


def customer_wallet(customer: Customer, currency: str, *, what: str = "currency") -> Wallet:
    """The customer's wallet in `currency`: the customer's own currency (opened if
    need be) or one the customer already holds; any other currency is refused."""
    currency = (currency or "").strip().upper()
    wallet = Wallet.objects.filter(customer=customer, currency=currency).first()
    if wallet is not None:
        return wallet
    if currency == customer.currency:
        return wallet_services.open_wallet(customer=customer, currency=currency)
    held = sorted({customer.currency, *customer.wallets.values_list("currency", flat=True)})
    raise InvoiceError(
        f"{what} {currency or '(empty)'!r} is not one of {customer}'s currencies ({', '.join(held)})."
    )


def _key(value: Any) -> str:
    key = document_text(value, what="idempotency_key", max_length=150, required=True)
    return key


# --- grants behind a payment --------------------------------------------------------


def _spent_message(grant: CreditGrant, what: str) -> str:
    spent = grant.amount - grant.remaining
    if grant.status == CreditGrant.Status.EXPIRED:
        return (
            f"{what} cannot be taken back: its credit ({grant.name}, grant #{grant.pk}) "
            f"expired on {grant.expires_at:%Y-%m-%d}."
        )
    return (
        f"{what} cannot be taken back: {spent:.2f} {grant.currency} of the "
        f"{grant.amount:.2f} {grant.currency} credit it provisioned ({grant.name}, grant "
        f"#{grant.pk}) has been spent."
    )


def _refuse_if_spent(grant: CreditGrant | None, what: str) -> None:
    if grant is None:
        return
    grant.refresh_from_db()
    if grant.status == CreditGrant.Status.VOIDED:
        return
    if grant.status not in LIVE_GRANT or grant.remaining != grant.amount:
        raise CreditSpent(_spent_message(grant, what))


def _book_on_account(
    *, payment: Payment, amount: Decimal, funding: str, expires_at: datetime | None,
    actor: Actor, key: str,
) -> CreditGrant:  # fmt: skip
    wallet = customer_wallet(payment.customer, payment.currency)
    return wallet_services.grant_credit(
        wallet=wallet, amount=amount, kind=CreditGrant.Kind.PAYMENT_ON_ACCOUNT,
        name=f"Payment #{payment.pk} (unallocated)", actor=actor, idempotency_key=key,
        funding=funding, expires_at=expires_at, source_type="payment", source_id=str(payment.pk),
        external_transaction_id=payment.reference[:200],
        memo=f"Payment #{payment.pk} on account ({payment.get_method_display()})",
    )  # fmt: skip


def _release_on_account(payment: Payment, *, actor: Actor, key: str) -> CreditGrant | None:
    """Void the grant holding the payment's unallocated credit; returns it (refreshed),
    or None when there is none left to release (never booked, or already ended)."""
    grant = payment.credit_grant
    if grant is None:
        return None
    grant.refresh_from_db()
    if grant.status not in (*LIVE_GRANT, CreditGrant.Status.PENDING):
        return None
    wallet_services.void_grant(
        grant=grant, actor=actor, idempotency_key=key,
        reason=f"Payment #{payment.pk}: unallocated credit re-booked",
    )  # fmt: skip
    return grant


def _funding_of(payment: Payment) -> str:
    if payment.credit_grant is not None:
        return payment.credit_grant.funding_code
    return FUNDING_BY_METHOD.get(payment.method, Account.Code.CASH)  # type: ignore[call-overload]


# --- record ----------------------------------------------------------------------


def record_payment(
    *,
    customer: Customer,
    amount: Decimal | str | int,
    currency: str,
    method: str,
    received_on: date | None = None,
    reference: str = "",
    comment: str = "",
    actor: Actor,
    idempotency_key: str,
    credit_grant: CreditGrant | None = None,
) -> Payment:
    """Record money received from a customer. It is on the balance at once: as a
    payment-on-account grant booked here, or, for flows that booked the credit
    themselves (a redeemed refill card), the `credit_grant` they pass (the customer's,
    same currency and amount). Nestable: a card redemption records its payment in
    its own transaction. The same `idempotency_key` returns the same payment; with
    different details it is refused."""
    amount = document_amount(amount)
    key = _key(idempotency_key)
    if method not in Payment.Method.values:
        raise InvoiceError(f"method must be one of {', '.join(Payment.Method.values)}.")
    reference = document_text(reference, what="reference", max_length=200)
    comment = document_text(comment, what="comment", max_length=1000)
    received_on = received_on or timezone.localdate()
    if not isinstance(received_on, date) or isinstance(received_on, datetime):
        raise InvoiceError("received_on must be a date (YYYY-MM-DD).")
    if received_on > timezone.localdate():
        raise InvoiceError(f"received_on ({received_on}) is in the future; use the day it arrived.")
    wallet = customer_wallet(customer, currency)
    if credit_grant is not None and (
        credit_grant.wallet_id != wallet.pk or credit_grant.amount != amount
    ):
        raise InvoiceError(
            "credit_grant must be the customer's grant in the payment's currency, for the "
            "payment's amount."
        )
    wanted = {
        "customer_id": customer.pk, "amount": amount, "currency": wallet.currency,
        "method": method,
    }  # fmt: skip
    with transaction.atomic():
        earlier = _same_payment(key, wanted)
        if earlier is not None:
            return earlier
        try:
            with transaction.atomic():
                payment = Payment.objects.create(
                    **wanted, received_on=received_on, reference=reference, comment=comment,
                    idempotency_key=key, created_by=actor.label, credit_grant=credit_grant,
                )  # fmt: skip
        except IntegrityError:
            earlier = _same_payment(key, wanted)
            if earlier is None:
                raise
            return earlier
        if credit_grant is None:
            payment.credit_grant = _book_on_account(
                payment=payment, amount=amount, funding=_funding_of(payment), expires_at=None,
                actor=actor, key=f"payment:{payment.pk}:on-account",
            )  # fmt: skip
            payment.save(update_fields=["credit_grant"])
        return payment


def _same_payment(key: str, wanted: dict[str, Any]) -> Payment | None:
    earlier = Payment.objects.filter(idempotency_key=key).first()
    if earlier is None:
        return None
    if any(getattr(earlier, field) != value for field, value in wanted.items()):
        raise InvoiceError(
            f"idempotency_key {key!r} was already used for another payment (#{earlier.pk}); "
            "use a new key for a new payment."
        )
    return earlier


# --- allocate ----------------------------------------------------------------------


def _lock_payment(payment: Payment | int) -> Payment:
    pk = payment.pk if isinstance(payment, Payment) else payment
    try:
        return (
            Payment.objects.select_for_update(of=("self",))
            .select_related("customer", "credit_grant")
            .get(pk=pk)
        )
    except Payment.DoesNotExist:
        raise InvoiceNotFound(f"payment {pk} does not exist.") from None


def _lock_invoice(invoice: Invoice | int) -> Invoice:
    pk = invoice.pk if isinstance(invoice, Invoice) else invoice
    try:
        return Invoice.objects.select_for_update(of=("self",)).select_related("series").get(pk=pk)
    except Invoice.DoesNotExist:
        raise InvoiceNotFound(f"invoice {pk} does not exist.") from None


def _paid_status(invoice: Invoice) -> str:
    if invoice.amount_paid == 0:
        return Invoice.Status.SENT
    if invoice.amount_paid == invoice.amount_due:
        return Invoice.Status.PAID
    return Invoice.Status.PARTIALLY_PAID


def _allocate(
    *, payment: Payment | int, invoice: Invoice | int, amount: Any, actor: Actor, key: str
) -> PaymentAllocation:
    """The body of `allocate_payment`, inside the caller's transaction. Locks the
    payment row, then the invoice row (always in that order)."""
    earlier = PaymentAllocation.objects.filter(idempotency_key=key).first()
    if earlier is not None:
        return _same_allocation(earlier, payment, invoice)
    locked_payment = _lock_payment(payment)
    locked_invoice = _lock_invoice(invoice)
    earlier = PaymentAllocation.objects.filter(idempotency_key=key).first()
    if earlier is not None:  # a twin call won the locks first
        return _same_allocation(earlier, locked_payment, locked_invoice)
    label = locked_invoice.display_number
    if locked_payment.customer_id != locked_invoice.customer_id:
        raise InvoiceError(
            f"payment #{locked_payment.pk} is {locked_payment.customer}'s and invoice {label} is "
            f"{locked_invoice.customer}'s; a payment is allocated to its own customer's invoices."
        )
    if locked_invoice.kind != Invoice.Kind.TOP_UP:
        raise InvoiceError(
            f"invoice {label} is a usage invoice; payments are allocated to top-up invoices "
            "(usage is paid from the balance, which every payment raises)."
        )
    if locked_invoice.status == Invoice.Status.DRAFT:
        raise InvoiceStateError(
            f"invoice {label} is a draft; send it (or mark it sent) before allocating a payment."
        )
    if locked_invoice.status not in OPEN_TOP_UP:
        raise InvoiceStateError(
            f"invoice {label} is {locked_invoice.get_status_display().lower()}; only a sent or "
            "partially paid invoice takes a payment."
        )
    if locked_payment.status != Payment.Status.RECORDED:
        raise InvoiceStateError(f"payment #{locked_payment.pk} was removed.")
    if locked_payment.currency != locked_invoice.currency:
        raise InvoiceError(
            f"payment #{locked_payment.pk} is in {locked_payment.currency} and invoice {label} in "
            f"{locked_invoice.currency}; allocate a payment in the invoice's currency."
        )
    unallocated = locked_payment.unallocated
    open_amount = locked_invoice.open_amount
    amount = document_amount(amount) if amount is not None else min(unallocated, open_amount)
    if unallocated <= 0:
        raise InvoiceStateError(f"payment #{locked_payment.pk} is fully allocated; nothing left.")
    if amount > unallocated:
        raise InvoiceError(
            f"amount {amount} is more than payment #{locked_payment.pk}'s unallocated "
            f"{unallocated}; allocate at most {unallocated}."
        )
    if amount > open_amount:
        raise InvoiceError(
            f"amount {amount} is more than invoice {label}'s open amount {open_amount}; "
            f"allocate at most {open_amount}."
        )
    allocation = PaymentAllocation.objects.create(
        payment=locked_payment, invoice=locked_invoice, customer_id=locked_payment.customer_id,
        amount=amount, idempotency_key=key, created_by=actor.label,
    )  # fmt: skip
    allocation.grant = _provision(locked_payment, allocation, locked_invoice, actor=actor)
    allocation.save(update_fields=["grant"])
    locked_payment.allocated += amount
    locked_payment.save(update_fields=["allocated", "credit_grant"])
    locked_invoice.amount_paid += amount
    locked_invoice.status = _paid_status(locked_invoice)
    locked_invoice.save(update_fields=["amount_paid", "status"])
    return allocation


def _same_allocation(
    earlier: PaymentAllocation, payment: Payment | int, invoice: Invoice | int
) -> PaymentAllocation:
    payment_id = payment.pk if isinstance(payment, Payment) else payment
    invoice_id = invoice.pk if isinstance(invoice, Invoice) else invoice
    if (earlier.payment_id, earlier.invoice_id) != (payment_id, invoice_id):
        raise InvoiceError(
            f"idempotency_key {earlier.idempotency_key!r} was already used for another "
            "allocation; use a new key."
        )
    return earlier


def _provision(
    payment: Payment, allocation: PaymentAllocation, invoice: Invoice, *, actor: Actor
) -> CreditGrant | None:
    """Turn `allocation.amount` of the payment's unallocated credit into the
    invoice's top-up grant: void the on-account grant and book it again without that
    part. Credit already spent (or expired) cannot become top-up credit: the invoice
    is paid by the payment all the same, and the grant covers what is left."""
    funding = _funding_of(payment)
    held = _release_on_account(payment, actor=actor, key=f"allocation:{allocation.pk}:release")
    unspent = held.remaining if held is not None else Decimal(0)
    provisioned = min(allocation.amount, unspent)
    grant = None
    if provisioned > 0:
        grant = wallet_services.grant_credit(
            wallet=customer_wallet(payment.customer, payment.currency), amount=provisioned,
            kind=CreditGrant.Kind.TOP_UP, name=f"Top-up {invoice.display_number}"[:200],
            actor=actor, idempotency_key=f"allocation:{allocation.pk}:top-up", funding=funding,
            source_type="invoice", source_id=str(invoice.pk),
            external_transaction_id=f"payment:{payment.pk}",
            memo=f"Top-up invoice {invoice.display_number} paid by payment #{payment.pk}",
        )  # fmt: skip
    rest = unspent - provisioned
    payment.credit_grant = None
    if rest > 0 and held is not None:
        expires = held.expires_at if held.expires_at and held.expires_at > timezone.now() else None
        payment.credit_grant = _book_on_account(
            payment=payment, amount=rest, funding=funding, expires_at=expires, actor=actor,
            key=f"allocation:{allocation.pk}:on-account",
        )  # fmt: skip
    return grant


def allocate_payment(
    *,
    payment: Payment | int,
    invoice: Invoice | int,
    amount: Decimal | str | None = None,
    actor: Actor,
    idempotency_key: str,
) -> PaymentAllocation:
    """Allocate (part of) a payment to a sent top-up invoice of the same customer
    and currency: never more than the payment's unallocated amount nor the invoice's
    open amount (default: as much as both allow); a draft is refused. The allocated
    part becomes the invoice's top-up grant; fully allocated → paid and provisioned."""
    key = _key(idempotency_key)
    with transaction.atomic(durable=True):
        return _allocate(payment=payment, invoice=invoice, amount=amount, actor=actor, key=key)


def apply_unallocated(
    *, customer: Customer, currency: str, actor: Actor
) -> list[PaymentAllocation]:
    """PortaBilling: unallocated payments mark later invoices paid, oldest payment to
    oldest open invoice first. Idempotent: keys derive from payment, invoice and the
    invoice's paid amount at the time."""
    made: list[PaymentAllocation] = []
    with transaction.atomic(durable=True):
        # every payment first (in id order), then invoices: the order all allocations use
        payments = list(_unallocated_payments(customer, currency).select_for_update())
        payments.sort(key=lambda p: (p.received_on, p.pk))
        invoices = list(
            Invoice.objects.filter(
                customer=customer, currency=currency, kind=Invoice.Kind.TOP_UP,
                status__in=OPEN_TOP_UP,
            ).order_by("issued_at", "pk")
        )  # fmt: skip
        for payment in payments:
            for invoice in invoices:
                payment.refresh_from_db()
                invoice.refresh_from_db()
                if payment.unallocated <= 0:
                    break
                if invoice.open_amount <= 0:
                    continue
                made.append(
                    _allocate(
                        payment=payment,
                        invoice=invoice,
                        amount=None,
                        actor=actor,
                        key=f"auto:{payment.pk}:{invoice.pk}:{invoice.amount_paid}",
                    )  # fmt: skip
                )
    return made


def _unallocated_payments(customer: Customer | int, currency: str) -> QuerySet[Payment]:
    return (
        Payment.objects.unallocated()
        .filter(customer=customer, currency=currency)
        .order_by("received_on", "pk")
    )


# --- remove ------------------------------------------------------------------------


def _remove_allocation(allocation: PaymentAllocation, *, actor: Actor) -> PaymentAllocation:
    payment = _lock_payment(allocation.payment_id)
    invoice = _lock_invoice(allocation.invoice_id)
    allocation.refresh_from_db()
    if allocation.removed_at is not None:
        return allocation  # a retry
    _refuse_if_spent(
        allocation.grant,
        f"the allocation of {allocation.amount} from payment #{payment.pk} to invoice "
        f"{invoice.display_number}",
    )
    grant = allocation.grant
    if grant is not None and grant.status != CreditGrant.Status.VOIDED:
        wallet_services.void_grant(
            grant=grant, actor=actor, idempotency_key=f"allocation:{allocation.pk}:remove",
            reason=f"Payment #{payment.pk} removed from invoice {invoice.display_number}",
        )  # fmt: skip
        # the credit goes back to unallocated, on account: one grant holds it all
        funding = _funding_of(payment)
        held = _release_on_account(
            payment, actor=actor, key=f"allocation:{allocation.pk}:remove:release"
        )
        back = grant.amount + (held.remaining if held is not None else Decimal(0))
        expires = held.expires_at if held is not None else None
        payment.credit_grant = _book_on_account(
            payment=payment, amount=back, funding=funding,
            expires_at=expires if expires and expires > timezone.now() else None, actor=actor,
            key=f"allocation:{allocation.pk}:remove:on-account",
        )  # fmt: skip
    allocation.removed_at = timezone.now()
    allocation.removed_by = actor.label
    allocation.save(update_fields=["removed_at", "removed_by"])
    payment.allocated -= allocation.amount
    payment.save(update_fields=["allocated", "credit_grant"])
    invoice.amount_paid -= allocation.amount
    invoice.status = _paid_status(invoice)
    invoice.save(update_fields=["amount_paid", "status"])
    return allocation


def remove_allocation(*, allocation: PaymentAllocation | int, actor: Actor) -> PaymentAllocation:
    """B3: a top-up payment can be removed from its invoice while the credit it
    provisioned is unspent: the top-up grant is voided, the invoice goes back to
    awaiting payment (or partially paid), and the payment's part back to
    unallocated (on the balance as on-account credit). Refused, naming what was
    spent, once any of that credit was used. A retry does nothing more."""
    pk = allocation.pk if isinstance(allocation, PaymentAllocation) else allocation
    with transaction.atomic(durable=True):
        found = PaymentAllocation.objects.select_related("grant").filter(pk=pk).first()
        if found is None:
            raise InvoiceNotFound(f"allocation {pk} does not exist.")
        return _remove_allocation(found, actor=actor)


def remove_payment(*, payment: Payment | int, actor: Actor) -> Payment:
    """Remove a payment recorded in error: each of its allocations is removed (as
    `remove_allocation`), then its unallocated credit is taken off the balance.
    Refused, naming what was spent, when any of its credit was used; the payment
    stays (status removed) for the audit trail. A retry does nothing more."""
    pk = payment.pk if isinstance(payment, Payment) else payment
    with transaction.atomic(durable=True):
        locked = _lock_payment(pk)
        if locked.status == Payment.Status.REMOVED:
            return locked
        if locked.method == Payment.Method.REFILL_CARD:
            raise InvoiceStateError(
                f"payment #{locked.pk} is a refill card's; it stays as long as the card is used "
                "(remove its allocations instead)."
            )
        for allocation in locked.allocations.filter(removed_at__isnull=True).select_related(
            "grant"
        ):
            _remove_allocation(allocation, actor=actor)
        locked.refresh_from_db()
        _refuse_if_spent(locked.credit_grant, f"payment #{locked.pk}")
        if locked.credit_grant is not None:
            wallet_services.void_grant(
                grant=locked.credit_grant, actor=actor,
                idempotency_key=f"payment:{locked.pk}:remove", reason=f"Payment #{locked.pk} removed",
            )  # fmt: skip
        locked.status = Payment.Status.REMOVED
        locked.removed_at = timezone.now()
        locked.removed_by = actor.label
        locked.credit_grant = None
        locked.save(update_fields=["status", "removed_at", "removed_by", "credit_grant"])
        return locked
